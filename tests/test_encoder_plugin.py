"""The encoder plug-in point: a new kind of encoder, written here and nowhere else, registered
with ``kwsstream.encoders.register_encoder``, goes through enrollment (calibration included), the
keyword set file, ``Spotter.load`` and detection, and the eval's encode stage, with no change to
any other file. If this needs a special case somewhere, the protocol leaks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import soundfile as sf

from kwsstream.encoders import (EncoderBase, FrameGrid, describe_identity, encoder_from_identity, load_encoder,
                                register_encoder, unregister_encoder)
from kwsstream.errors import EncoderError, UsageError
from kwsstream.framing import WindowFramer

WINDOW, HOP = 400, 160
EDGES_HZ = (0, 500, 1500, 3500, 8000)
"""Four bands: one log energy each."""


class _LogEnergyState:
    def __init__(self, encoder: LogEnergyEncoder):
        self.encoder, self.framer = encoder, WindowFramer(WINDOW, HOP)
        self.reset()

    def reset(self) -> None:
        self.framer.reset()
        self.finished = False

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.finished:
            raise UsageError("flushed: reset() first")
        return self.encoder.features(self.framer.push(np.asarray(samples, np.float32)))

    def flush(self) -> np.ndarray:
        if self.finished:
            raise UsageError("flushed: reset() first")
        self.finished = True
        return np.zeros((0, 4), np.float32)


class LogEnergyEncoder(EncoderBase):
    """Log energy in four bands, centred over the bands (the spectral tilt), every 10 ms."""

    kind = "log-energy-test"
    spec_help = "'log-energy-test'"

    def __init__(self):
        self.dim, self.grid = 4, FrameGrid(hop=HOP, length=WINDOW)
        freqs = np.fft.rfftfreq(WINDOW, 1 / 16_000)
        self.bands = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(EDGES_HZ, EDGES_HZ[1:])], axis=1)

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "edges": list(EDGES_HZ)}

    @property
    def name(self) -> str:
        return "log-energy"

    @classmethod
    def check_identity(cls, identity: dict[str, Any]) -> int:
        if identity.get("edges") != list(EDGES_HZ):
            raise EncoderError(f"log-energy bands {identity.get('edges')!r} are not {list(EDGES_HZ)}")
        return 4

    @classmethod
    def from_identity(cls, identity: dict[str, Any], *, threads: int | None = None) -> LogEnergyEncoder:
        return cls()

    @classmethod
    def describe(cls, identity: dict[str, Any]) -> str:
        return "log-energy (4 bands)"

    def features(self, windows: np.ndarray) -> np.ndarray:
        power = np.abs(np.fft.rfft(windows * np.hanning(WINDOW), axis=1)) ** 2
        logs = np.log10(power @ self.bands + 1e-8)
        return (logs - logs.mean(axis=1, keepdims=True)).astype(np.float32)

    def create_state(self) -> _LogEnergyState:
        return _LogEnergyState(self)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        state = self.create_state()
        return np.concatenate([state.push(audio), state.flush()])


@pytest.fixture
def registered():
    register_encoder(LogEnergyEncoder)
    yield LogEnergyEncoder
    unregister_encoder(LogEnergyEncoder.kind)


def test_a_registered_toy_encoder_enrolls_and_detects(registered, speech, tmp_path):
    from kwsstream import Spotter
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import load_keyset, save_keyset

    encoder = load_encoder("log-energy-test")  # the user's --encoder text, through the registry
    assert isinstance(encoder, LogEnergyEncoder) and encoder.layers == (0,) and encoder.description == "log-energy (4 bands)"
    word, files = next(iter(speech.examples.items()))
    path = tmp_path / "toy.kws"
    save_keyset(enroll_examples(encoder, {word: files}), path)  # calibrated on the built-in background
    keyset = load_keyset(path)  # the stored identity is checked by the toy class
    assert keyset.encoder["kind"] == "log-energy-test" and keyset.dim == 4
    assert describe_identity(keyset.encoder) == "log-energy (4 bands)"
    assert isinstance(encoder_from_identity(keyset.encoder), LogEnergyEncoder)

    example, _ = sf.read(files[0], dtype="float32")
    pause = np.zeros(16_000, np.float32)
    stream = tmp_path / "stream.wav"
    sf.write(stream, np.concatenate([pause, example, pause]), 16_000)
    spotter = Spotter.load(path)  # the encoder made from the stored identity
    assert isinstance(spotter.encoder, LogEnergyEncoder)
    events = list(spotter.detect_file(stream))
    assert [e.keyword for e in events] == [word], events  # its own example: found once
    assert 0.8 < events[0].start < 1.3 and events[0].cost < events[0].threshold

    from eval.representations import describe_encoder  # the eval takes it as it is too

    info = describe_encoder("log-energy-test")
    assert (info.key, info.layers, info.dim, info.baseline) == (encoder.key, (0,), 4, False)
    frames = encoder.encode_layers(example)
    assert list(frames) == [0] and np.array_equal(frames[0], encoder.encode(example))


def test_registry_refuses_what_it_cannot_use(registered):
    with pytest.raises(EncoderError, match="already registered"):
        register_encoder(type("Other", (LogEnergyEncoder,), {}))
    with pytest.raises(EncoderError, match="'log-energy-test'"):
        load_encoder("nothing-of-the-kind")  # the message lists every kind's spec
    with pytest.raises(EncoderError, match="bands"):
        encoder_from_identity({"kind": "log-energy-test", "edges": [0, 1]})
    unregister_encoder(LogEnergyEncoder.kind)
    with pytest.raises(EncoderError, match="unknown encoder kind 'log-energy-test'"):
        encoder_from_identity({"kind": "log-energy-test", "edges": list(EDGES_HZ)})
