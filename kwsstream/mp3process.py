"""MP3 files decoded in a child process, so that the decoder's complaints never touch this
process's stderr.

libsndfile decodes MP3 with libmpg123, which writes what it finds wrong with a damaged frame
(``[src/libmpg123/layer3.c:...] error: dequantization failed!``) straight to file descriptor 2.
Catching that by pointing descriptor 2 elsewhere would take it away from every thread of the
process for as long as a file is read (a paced file is read in a background thread while the main
thread prints detections). So an MP3 is decoded by a child Python - libsndfile through soundfile,
exactly as in this process - whose stderr is a temporary file: its lines become the one warning
of the audio boundary (:mod:`kwsstream.audio`), and this process's own stderr is never touched.
Other formats' decoders (libsndfile's WAV/AIFF readers, libFLAC, libvorbis, libopus) do not write
to stderr and are read in this process.

The child gets the already opened (and checked) file descriptor, never a path. Its stdout
carries one JSON line ``{"rate", "channels", "frames"}`` (or ``{"error"}``), then blocks: an int32
little-endian frame count ``n`` and ``n * channels`` float32 little-endian samples; ``n == 0``
ends the audio, ``n == -1`` is followed by a JSON line ``{"error"}``. The child decodes
:data:`DECODE_SECONDS` at a time and sends them in the blocks asked for; the pipe's buffer and
that one piece are the only read-ahead (the child waits while the reader is busy), so memory
stays flat.

This module imports nothing from kwsstream: the child runs it by path (:data:`BOOT`), without
importing the package.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile

BOOT = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
"""The child's ``-c`` program: this file run as a script (the current folder kept off sys.path)."""
MESSAGE_BYTES = 4096
"""Bytes of the child's stderr read for the decoder's messages."""
DECODE_SECONDS = 10.0
"""Audio decoded at a time, whatever the block size asked for: libmpg123 (through libsndfile)
decodes an MP3 slightly differently, and complains differently, when it is read in other
pieces, so a file paced in 0.05 s blocks and one read whole get the very same samples."""
EXIT_SECONDS = 30.0
"""How long the finished child may take to exit before it is killed."""
_COUNT = struct.Struct("<i")


def looks_like_mpeg(fd: int) -> bool:
    """Whether the open file ``fd`` starts (after an ID3v2 tag, if any) with an MPEG audio frame
    sync: what libsndfile, too, takes for MP3."""
    head = os.pread(fd, 10, 0)
    if head[:3] == b"ID3" and len(head) == 10:
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
        head = os.pread(fd, 2, 10 + size + (10 if head[5] & 0x10 else 0))
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


class DecoderProcess:
    """An MP3 file (the open descriptor ``fd``, which the child inherits; the caller keeps and
    closes its own) read by a child process, with the part of ``soundfile.SoundFile`` that the
    audio boundary uses: ``samplerate``, ``channels``, ``frames`` (``-1``: unknown), ``read``,
    ``extra_info``; :meth:`messages` says what the decoder complained about. Blocks are
    ``block_seconds`` long, at most ``max_values`` samples (all channels). ``show_messages``:
    the decoder writes to this process's stderr instead (a debugging aid).

    Raises ``RuntimeError`` (the decoder's own reason) for a file it cannot open or decode."""

    def __init__(self, fd: int, block_seconds: float, max_values: int, *, show_messages: bool = False):
        import numpy as np

        self._np = np
        self._errors = None if show_messages else tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, os.path.abspath(__file__), str(fd), repr(float(block_seconds)),
             str(int(max_values))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._errors, pass_fds=(fd,),
            start_new_session=True)  # a Ctrl-C at the terminal is this process's to handle, not the child's
        self.extra_info = ""
        try:
            header = self._json()
            if "error" in header:
                raise RuntimeError(header["error"])
            self.samplerate, self.channels = int(header["rate"]), int(header["channels"])
            self.frames = -1 if header["frames"] is None else int(header["frames"])
        except BaseException:
            self.close()
            raise

    def _json(self) -> dict:
        line = self._proc.stdout.readline()
        if not line.endswith(b"\n"):
            raise RuntimeError(self._died())
        return json.loads(line)

    def _died(self) -> str:
        code = self._proc.wait()
        last = self._error_lines()[-1:] or [f"exit status {code}"]
        return f"the MP3 decoder process ended unexpectedly ({last[0][:160]})"

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True):
        """The child's next block, ``(n, channels)`` float32 (``n == 0`` at the end); the size is
        the child's (``block_seconds``), the arguments are there for ``SoundFile``'s signature."""
        head = self._proc.stdout.read(_COUNT.size)
        if len(head) < _COUNT.size:
            raise RuntimeError(self._died())
        (n,) = _COUNT.unpack(head)
        if n < 0:
            raise RuntimeError(self._json().get("error", "the MP3 decoder failed"))
        buffer = bytearray(n * self.channels * 4)
        if n and self._proc.stdout.readinto(buffer) != len(buffer):
            raise RuntimeError(self._died())
        if n == 0:  # the end: the child exits, its messages are complete
            try:
                self._proc.wait(timeout=EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self._np.frombuffer(buffer, "<f4").reshape(n, self.channels).astype(self._np.float32, copy=False)

    def _error_lines(self) -> list[str]:
        if self._errors is None or self._errors.closed:
            return []
        self._errors.seek(0)
        text = self._errors.read(MESSAGE_BYTES).decode("utf-8", "replace")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def messages(self) -> tuple[int, str]:
        """How many lines the decoder wrote, and the first (``(0, "")``: none)."""
        lines = self._error_lines()
        return len(lines), (lines[0][:160] if lines else "")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc.stdout.close()
        if self._errors is not None:
            self._errors.close()

    def __enter__(self) -> DecoderProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- the child -------------------------------------------------------------------------------

def _send_json(out, data: dict) -> None:
    out.write(json.dumps(data).encode() + b"\n")
    out.flush()


def _reason(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else type(err).__name__


def child_main(argv: list[str]) -> int:
    """The child: decode the file descriptor ``argv[0]`` in blocks of ``argv[1]`` seconds (at
    most ``argv[2]`` samples) onto stdout (see the module docstring)."""
    import numpy as np
    import soundfile as sf

    fd, block_seconds, max_values = int(argv[0]), float(argv[1]), int(argv[2])
    out = sys.stdout.buffer
    try:
        handle = sf.SoundFile(fd, closefd=True)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which names the file
        _send_json(out, {"error": _reason(err)})
        return 0
    try:
        with handle:
            frames = handle.frames if 0 <= handle.frames < 2**62 else None
            rate, channels = handle.samplerate, max(1, handle.channels)
            _send_json(out, {"rate": rate, "channels": channels, "frames": frames})
            most = max(1, max_values // channels)
            blocksize = max(1, min(int(block_seconds * max(rate, 1)), most))
            readsize = max(blocksize, min(int(DECODE_SECONDS * max(rate, 1)), most))
            try:
                while True:
                    decoded = handle.read(readsize, dtype="float32", always_2d=True)
                    for at in range(0, len(decoded), blocksize):
                        block = decoded[at: at + blocksize]
                        out.write(_COUNT.pack(len(block)))
                        out.write(np.ascontiguousarray(block, "<f4").tobytes())
                    if not len(decoded):
                        out.write(_COUNT.pack(0))
                        break
            except BrokenPipeError:
                raise
            except Exception as err:  # noqa: BLE001 - a damaged stream: reported to the parent
                out.write(_COUNT.pack(-1))
                _send_json(out, {"error": _reason(err)})
            out.flush()
    except BrokenPipeError:  # the reader stopped early: nothing to say
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[2:]))
