"""Where live audio comes from: input devices (what PortAudio sees, choosing one by id or name)
and :class:`MicSource`, a source of the one pipeline (see :mod:`kwsstream.pipeline` for the source
protocol; files and chunk iterators are sources there).

PortAudio's callback thread puts ``(first sample index, block)`` items of native-rate
``(frames, channels)`` float32 audio into a bounded queue (``pipeline.BlockQueue``).

``sounddevice`` (which starts PortAudio) is imported only when a function here needs it, never at
import time, so a machine without PortAudio can still enroll and detect; without it these functions
raise one clear :class:`AudioError`. PortAudio enumerates devices when it starts: a device
connected later is seen by the next run.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import AudioError

AUDIO_DEBUG_ENV = "KWSSTREAM_AUDIO_DEBUG"
"""Set (to anything) to keep PortAudio's and ALSA's own diagnostics on stderr."""


@dataclass(frozen=True)
class DeviceInfo:
    """An input device as PortAudio sees it."""

    index: int
    name: str
    hostapi: str
    channels: int
    rate: float
    default: bool


# --- listing and choosing ---------------------------------------------------------------

def _sounddevice():
    """Import sounddevice (which starts PortAudio) only when audio is needed."""
    try:
        import sounddevice
    except OSError as err:
        raise AudioError(f"PortAudio is not installed ({err}): apt-get install libportaudio2") from None
    return sounddevice


def list_devices() -> list[DeviceInfo]:
    """The input devices PortAudio sees now."""
    sd = _sounddevice()
    default_in = sd.default.device[0]
    apis = sd.query_hostapis()
    return [
        DeviceInfo(i, d["name"], apis[d["hostapi"]]["name"], d["max_input_channels"], d["default_samplerate"],
                   i == default_in)
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


def find_device(spec: int | str | None) -> DeviceInfo:
    """The input device for ``spec``: ``None`` (the default), an id, or a name (exact, else a
    unique case-insensitive part of one). Raises :class:`AudioError` naming what exists."""
    devices = list_devices()
    if not devices:
        raise AudioError("no input device: PortAudio sees no microphone (is one connected? with PulseAudio or "
                         "PipeWire: is the sound server running for this user?)")
    names = ", ".join(f"{d.index}: {d.name!r}" for d in devices)
    if spec is None:
        chosen = [d for d in devices if d.default] or devices[:1]
        return chosen[0]
    text = str(spec).strip()
    if text.isdigit():
        chosen = [d for d in devices if d.index == int(text)]
        if not chosen:
            raise AudioError(f"no input device with id {text} (input devices: {names})")
        return chosen[0]
    chosen = [d for d in devices if d.name == text] or [d for d in devices if text.lower() in d.name.lower()]
    if len(chosen) != 1:
        why = "no input device" if not chosen else f"{len(chosen)} input devices"
        raise AudioError(f"{why} named like {text!r} (input devices: {names}): give the id or a longer name")
    return chosen[0]


def format_devices(devices: list[DeviceInfo]) -> str:
    """The table ``kwsstream devices`` prints (``*`` marks the default input)."""
    lines = [f"  {'ID':>3}  {'IN':>3}  {'RATE':>6}  {'HOST API':<10}  NAME"]
    for d in devices:
        mark = "*" if d.default else " "
        lines.append(f"{mark} {d.index:>3}  {d.channels:>3}  {d.rate:>6.0f}  {d.hostapi:<10}  {d.name}")
    return "\n".join(lines)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what PortAudio and ALSA write straight to file descriptor 2 (pages of ``ALSA lib ...``
    lines on many systems, ``Expression ... failed`` when a device goes away), so people see only
    kwsstream's own lines: fd 2 goes to /dev/null and ``sys.stderr`` to a copy of the real one.
    Nothing is hidden when :data:`AUDIO_DEBUG_ENV` is set or stderr has no file descriptor."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fd = None
    if fd is None or os.environ.get(AUDIO_DEBUG_ENV):
        yield
        return
    original = sys.stderr
    original.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    copy = open(saved, "w", buffering=1, encoding=original.encoding, errors="backslashreplace", closefd=False)
    sys.stderr = copy
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        copy.flush()
        os.dup2(saved, fd)
        sys.stderr = original
        copy.close()
        os.close(saved)
        os.close(devnull)


# --- the microphone -----------------------------------------------------------------------

class MicSource:
    """A PortAudio input stream at ``rate`` (``None``: the device's own) whose callback only copies
    blocks of ``block_seconds`` into ``blocks`` (``put_newest(index, block)``, must not block),
    tagged with their first sample's index, and counts input overflows."""

    def __init__(self, device: DeviceInfo, rate: int | None, block_seconds: float, blocks):
        sd = _sounddevice()
        self.device, self.blocks, self.name = device, blocks, f"mic:{device.name}"
        self.label, self.hostapi = f"input device {device.index} {device.name!r}", device.hostapi
        self.rate = int(rate or device.rate)
        self.channels = 1
        try:
            sd.check_input_settings(device.index, channels=1, samplerate=self.rate, dtype="float32")
        except sd.PortAudioError as err:
            if "channel" not in str(err).lower():
                raise AudioError(f"input device {device.name!r} does not support {self.rate} Hz ({err}); "
                                 f"its own rate is {device.rate:.0f} Hz") from None
            self.channels = device.channels  # mixed down by the consumer
        self.captured = 0  # native samples delivered so far
        self.overflows = 0  # blocks PortAudio flagged input_overflow (input lost in the driver)
        self.finished = False
        self._started = False
        try:
            self._stream = sd.InputStream(
                device=device.index, channels=self.channels, samplerate=self.rate, dtype="float32",
                blocksize=max(1, round(self.rate * block_seconds)),
                callback=self._callback, finished_callback=self._finished,
            )
        except (sd.PortAudioError, ValueError) as err:
            raise AudioError(f"cannot open input device {device.name!r} at {self.rate} Hz: {err}") from None

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread
        if status.input_overflow:
            self.overflows += 1
        self.blocks.put_newest(self.captured, indata.copy())
        self.captured += frames

    def _finished(self) -> None:  # PortAudio's thread: the stream stopped (closed, or device lost)
        self.finished = True

    def start(self) -> None:
        """Start capturing (stream time zero); a no-op once started."""
        if not self._started:
            self._started = True
            self._stream.start()

    def get(self, timeout: float):
        return self.blocks.get(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a vanished device may fail to stop; nothing is left to save
            self._stream.close(ignore_errors=True)

    def lost(self, seconds: float) -> AudioError:
        return AudioError(f"input device {self.device.name!r} stopped delivering audio after {seconds:.1f} s "
                          "(unplugged, or its sound server stopped)")
