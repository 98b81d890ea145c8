"""MFCC-13, the built-in encoder: 25 ms Hann windows every 10 ms, 40 mel bands, DCT-II.

The spectral part matches ``librosa.feature.mfcc(n_fft=400, hop_length=160, center=False,
n_mels=40, fmin=20, fmax=7600, htk=False)`` on ``power_to_db(top_db=None)`` (tested). Frame ``j``
covers samples ``[160 j, 160 j + 400)``.

Normalisation, chosen by measurement (``python -m eval.bench.mfcc_normalisation``, README): a causal
cepstral mean normalisation (``MfccOptions.cmn_seconds``) and c0 at half weight
(``c0_weight``). The mean is the running average of all frames so far (the current one
included) for the first ``cmn_seconds``, then an exponential average with that time constant, so
it works the same in a stream and on a whole file, and enrollment (which encodes the whole
example recording through it) sees what a stream sees. Without it, cosine distances between raw
MFCCs are dominated by the large constant offsets of c0 and c1 (every frame looks alike: the
anisotropy of MFCC space); c0 after normalisation is the frame's loudness relative to the last
second, useful but too strong at full weight.

Frames are computed in fixed groups of ``GROUP`` windows aligned to the stream, so that the
numerical result does not depend on how the audio was chunked (bit for bit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import EncoderError, UsageError
from ..framing import WindowFramer
from .base import SAMPLE_RATE, EncoderBase, FrameGrid

WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
GROUP = 10  # windows computed together (0.1 s); fixed so results don't depend on chunking
LOG_FLOOR = 1e-10  # power floor before the log, as librosa.power_to_db's amin
MAX_MELS = 256
"""Most mel bands (the 400-point FFT has 201 bins)."""
MAX_CMN_SECONDS = 3600.0
MAX_C0_WEIGHT = 100.0


@dataclass(frozen=True)
class MfccOptions:
    """MFCC parameters (all part of the encoder's identity).

    Attributes:
        n_mfcc: cepstral coefficients kept (c0..c12 for 13).
        n_mels: mel bands.
        fmin, fmax: band edges in Hz.
        cmn_seconds: time constant of the causal cepstral mean normalisation; ``None`` turns it off.
        c0_weight: factor applied to c0 after normalisation (its weight in the cosine distance).
    """

    n_mfcc: int = 13
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 7600.0
    cmn_seconds: float | None = 1.0
    c0_weight: float = 0.5

    def __post_init__(self) -> None:
        problem = _options_problem(self)
        if problem:
            raise UsageError(problem)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return bool(np.isfinite(value))
    except (TypeError, OverflowError):  # an int past float64 (2**1100)
        return False


def _options_problem(o: MfccOptions) -> str | None:
    """What is wrong with ``o`` (types and ranges), or None."""
    if not _is_int(o.n_mels) or not 1 <= o.n_mels <= MAX_MELS:
        return f"n_mels={o.n_mels!r} must be a whole number from 1 to {MAX_MELS}"
    if not _is_int(o.n_mfcc) or not 1 <= o.n_mfcc <= o.n_mels:
        return f"n_mfcc={o.n_mfcc!r} must be a whole number between 1 and n_mels={o.n_mels}"
    if not _is_number(o.fmin) or not _is_number(o.fmax) or not 0 <= o.fmin < o.fmax <= SAMPLE_RATE / 2:
        return f"mel band edges {o.fmin!r}-{o.fmax!r} Hz are out of range (0 <= fmin < fmax <= {SAMPLE_RATE // 2})"
    if o.cmn_seconds is not None and (not _is_number(o.cmn_seconds) or not 0 < o.cmn_seconds <= MAX_CMN_SECONDS):
        return f"cmn_seconds={o.cmn_seconds!r} must be a positive number of seconds up to {MAX_CMN_SECONDS:g} (or None)"
    if not _is_number(o.c0_weight) or not 0 <= o.c0_weight <= MAX_C0_WEIGHT:
        return f"c0_weight={o.c0_weight!r} must be a number from 0 to {MAX_C0_WEIGHT:g}"
    return None


def options_from_identity(identity: dict[str, Any]) -> MfccOptions:
    """The options of a stored MFCC identity (``{"kind": "mfcc", "window", "hop", ...options}``),
    every field type- and range-checked. Raises :class:`EncoderError` (no file named: the caller
    adds it)."""
    fields = MfccOptions.__dataclass_fields__
    unknown = sorted(str(k) for k in identity if k not in fields and k not in ("kind", "window", "hop"))
    if unknown:
        raise EncoderError(f"unknown MFCC setting {unknown[0]!r}")
    missing = [k for k in ("window", "hop", *fields) if k not in identity]
    if missing:
        raise EncoderError(f"MFCC setting {missing[0]!r} is missing")
    for key, fixed in (("window", WINDOW), ("hop", HOP)):
        value = identity[key]
        if not _is_int(value) or value != fixed:
            raise EncoderError(f"MFCC {key} {value!r} is not supported (this kwsstream uses {fixed} samples)")
    values = {k: identity[k] for k in fields}
    candidate = object.__new__(MfccOptions)
    for k, v in values.items():
        object.__setattr__(candidate, k, v)
    problem = _options_problem(candidate)
    if problem:
        raise EncoderError(f"MFCC {problem}")
    return MfccOptions(**values)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa with htk=False."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(n_fft: int, n_mels: int, fmin: float, fmax: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular, area-normalised ("slaney") mel filters, shape ``(n_mels, n_fft // 2 + 1)``."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II basis, shape ``(n_in, n_out)``, so that ``x @ B`` is the transform."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    basis = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    basis[:, 0] /= np.sqrt(2.0)
    return basis


def _causal_cmn_kernel(feats, mean, count, horizon):  # pragma: no cover - compiled
    """In place: subtract from each frame the running mean including it.

    feats: (n, d) float64; mean: (d,) float64 state; count: frames seen so far (state, returned);
    horizon: frames after which the cumulative average becomes exponential with 1/horizon.
    """
    n, d = feats.shape
    for j in range(n):
        count += 1
        alpha = 1.0 / min(count, horizon)
        for c in range(d):
            mean[c] += alpha * (feats[j, c] - mean[c])
            feats[j, c] -= mean[c]
    return count


_compiled = None


def _causal_cmn(feats, mean, count, horizon):
    """:func:`_causal_cmn_kernel` compiled by numba (cached on disk) at its first use, not at
    import: checking a stored MFCC identity (loading a keyword set) must not load numba."""
    global _compiled
    if _compiled is None:
        import numba

        _compiled = numba.njit("int64(float64[:, ::1], float64[::1], int64, int64)", cache=True)(_causal_cmn_kernel)
    return _compiled(feats, mean, count, horizon)


class _MfccState:
    """One stream's MFCC state: the window framer, the pending group, the CMN mean."""

    def __init__(self, encoder: MfccEncoder):
        self._enc = encoder
        self._framer = WindowFramer(WINDOW, HOP)
        self.reset()

    def reset(self) -> None:
        self._framer.reset()
        self._pending = np.zeros((0, WINDOW), np.float32)
        self._mean = np.zeros(self._enc.dim, np.float64)
        self._count = 0
        self._finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise UsageError("the encoder stream was flushed: reset() it before feeding a new stream")

    def _compute(self, windows: np.ndarray) -> np.ndarray:
        feats = self._enc.cepstra(windows)
        opts = self._enc.options
        if opts.cmn_seconds is not None:
            horizon = max(1, int(round(opts.cmn_seconds * SAMPLE_RATE / HOP)))
            self._count = _causal_cmn(feats, self._mean, self._count, horizon)
        if opts.c0_weight != 1.0:
            feats[:, 0] *= opts.c0_weight
        return feats.astype(np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._check_open()
        windows = self._framer.push(samples)
        if len(self._pending):
            windows = np.concatenate([self._pending, windows])
        n_full = (len(windows) // GROUP) * GROUP
        self._pending = windows[n_full:]
        if n_full == 0:
            return np.zeros((0, self._enc.dim), np.float32)
        return np.concatenate([self._compute(windows[g : g + GROUP]) for g in range(0, n_full, GROUP)])

    def flush(self) -> np.ndarray:
        """End of stream: the frames of the last partial group; the stream is then finished."""
        self._check_open()
        self._finished = True
        rest, self._pending = self._pending, np.zeros((0, WINDOW), np.float32)
        if len(rest) == 0:
            return np.zeros((0, self._enc.dim), np.float32)
        return self._compute(rest)


class MfccEncoder(EncoderBase):
    """MFCC-13 at 100 frames/s; needs no model. ``--encoder mfcc``."""

    kind = "mfcc"
    spec_help = "'mfcc'"

    def __init__(self, options: MfccOptions | None = None):
        self.options = options or MfccOptions()
        self.dim = self.options.n_mfcc
        self.grid = FrameGrid(hop=HOP, length=WINDOW)
        self._window = np.hanning(WINDOW + 1)[:-1]  # periodic Hann, as scipy/librosa "hann"
        self._mel = mel_filterbank(WINDOW, self.options.n_mels, self.options.fmin, self.options.fmax).T
        self._dct = dct_matrix(self.options.n_mfcc, self.options.n_mels)

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "window": WINDOW, "hop": HOP, **asdict(self.options)}

    @property
    def context_seconds(self) -> float:
        """The causal mean normalisation's time constant: a keyword at the very start of an
        example is normalised against mirrored audio of its own recording (measured on real
        speech, README "Enrollment and thresholds")."""
        return float(self.options.cmn_seconds or 0.0)

    @property
    def name(self) -> str:
        return "mfcc"

    @classmethod
    def check_identity(cls, identity: dict[str, Any]) -> int:
        return options_from_identity(identity).n_mfcc

    @classmethod
    def from_identity(cls, identity: dict[str, Any], *, threads: int | None = None) -> MfccEncoder:
        return cls(options_from_identity(identity))

    @classmethod
    def describe(cls, identity: dict[str, Any]) -> str:
        """``MFCC-13``, with the settings that differ from the defaults, e.g. ``MFCC-13 (n_mels=30)``."""
        defaults = asdict(MfccOptions())
        changed = [f"{k}={identity[k]}" for k in defaults if k != "n_mfcc" and k in identity and identity[k] != defaults[k]]
        return f"MFCC-{identity.get('n_mfcc', '?')}" + (f" ({', '.join(changed)})" if changed else "")

    def cepstra(self, windows: np.ndarray) -> np.ndarray:
        """Un-normalised MFCCs of ``(n, 400)`` windows, float64 ``(n, n_mfcc)``."""
        spec = np.fft.rfft(windows * self._window, n=WINDOW, axis=1)
        power = spec.real**2 + spec.imag**2
        logmel = 10.0 * np.log10(np.maximum(power @ self._mel, LOG_FLOOR))
        return logmel @ self._dct

    def create_state(self) -> _MfccState:
        return _MfccState(self)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        state = self.create_state()
        head = state.push(np.asarray(audio, np.float32))
        return np.concatenate([head, state.flush()])
