"""A private PulseAudio server whose null sink's monitor is the default input: a virtual microphone.

Used by the live tests (``tests/test_live.py``) and the live benchmark
(``eval/bench/live_latency.py``); it lives in eval so that no code outside the tests depends on them.

What plays into the sink (``paplay --device=SINK``) is what a program recording from the default
input hears, through the real stack: PortAudio -> ALSA's ``pulse`` plugin -> PulseAudio. Known to
work as root without ``--system``, with ``PULSE_RUNTIME_PATH``/``PULSE_STATE_PATH``/``HOME`` in a
private folder. With ``norewinds=1`` and a 16 kHz mono sink the monitor gives back exactly what was
played (without it the first ~9 ms come back as zeros). PortAudio enumerates devices when it
starts, so programs that record must start after the server is up (here: child processes with
:attr:`PulseServer.env`).
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kwsstream.encoders.base import SAMPLE_RATE

SINK = "kwsmic"
SINK_RATE = SAMPLE_RATE
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
PULSE_PLUGIN_GLOBS = ("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so",
                      "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so", "/usr/lib64/alsa-lib/libasound_module_pcm_pulse.so")
PACKAGES = "pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins"


def missing() -> str | None:
    """Why a virtual microphone cannot be made here (the packages to install), or ``None``."""
    lacking = [f"{tool} ({package})" for tool, package in (("pulseaudio", "pulseaudio"), ("paplay", "pulseaudio-utils"),
                                                          ("pactl", "pulseaudio-utils")) if shutil.which(tool) is None]
    if ctypes.util.find_library("portaudio") is None:
        lacking.append("libportaudio (libportaudio2)")
    if not any(glob.glob(pattern) for pattern in PULSE_PLUGIN_GLOBS):
        lacking.append("ALSA's pulse plugin (libasound2-plugins)")
    if not lacking:
        return None
    return f"no virtual microphone: missing {', '.join(lacking)}; apt-get install {PACKAGES}"


def client_env(socket: str | Path, home: Path) -> dict[str, str]:
    """Environment for a client of the server at ``socket`` (no autospawn of another server)."""
    home.mkdir(parents=True, exist_ok=True)
    conf = home / "client.conf"
    conf.write_text("autospawn = no\n")
    env = dict(os.environ)
    env.update(PULSE_SERVER=f"unix:{socket}", PULSE_CLIENTCONFIG=str(conf), PULSE_RUNTIME_PATH=str(home / "client-run"))
    env.pop("PULSE_SINK", None)
    env.pop("PULSE_SOURCE", None)
    return env


class PulseServer:
    """``pulseaudio -n`` with a native-protocol socket and a null sink :data:`SINK` in ``folder``;
    :meth:`stop` ends it by its pid."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.socket = self.folder / "native"
        self.log = self.folder / "pulseaudio.log"
        script = self.folder / "default.pa"
        for sub in ("run", "state", "home"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={SINK} rate={SINK_RATE} channels=1 norewinds=1\n"
            f"set-default-sink {SINK}\nset-default-source {SINK}.monitor\n"
        )
        server_env = dict(os.environ)
        server_env.update(PULSE_RUNTIME_PATH=str(self.folder / "run"), PULSE_STATE_PATH=str(self.folder / "state"),
                          HOME=str(self.folder / "home"))
        self.env = client_env(self.socket, self.folder / "client")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "-F", str(script)],
                env=server_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pulseaudio exited {self.process.returncode}: {self.log.read_text(errors='replace')}")
            if self.socket.exists():
                info = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, text=True, timeout=10)
                if info.returncode == 0 and f"Default Source: {SINK}.monitor" in info.stdout:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not start in {START_TIMEOUT} s: {self.log.read_text(errors='replace')}")

    def play(self, path: str | Path) -> subprocess.Popen:
        """Start playing a file into the sink (the virtual microphone); returns the paplay process."""
        return subprocess.Popen(["paplay", f"--device={SINK}", str(path)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        """End the server by its pid (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
