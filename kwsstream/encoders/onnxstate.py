"""The stateful stream of an :class:`~kwsstream.encoders.onnx.OnnxEncoder` (``stream_mode = stateful``).

The graph (``export/stateful.py`` writes one for wav2vec2) takes its streaming state as inputs
and returns what the next call needs; this class keeps that state for one stream. All sizes in
frames of the encoder's grid. With ``chunk = C``, ``lookahead = R`` and ``left = K``:

* call ``k`` covers frames ``[k*C, k*C + C + R)`` and runs as soon as all of them are complete;
  it emits (commits) the first ``C``; the ``R`` lookahead frames are provisional and come again
  as the next call's own frames. At the end of the stream (``flush``) one last call covers every
  frame not yet emitted and emits them all.
* Per call, the graph gets the audio of the frames whose front-end features are not known yet
  (with a local front end the features of the others, known from earlier calls, go in as
  ``context``: the front end runs once per stream), the projected features of up to
  ``pos_cache_frames`` committed frames before the call (``pos_cache``) and the keys/values of up
  to ``K`` committed frames (``kv_cache``); it returns the call's frames, their keys/values and
  the new features, of which the committed frames' are cached.

The calls depend only on how many frames are complete, never on how the audio was cut into
pushed blocks, so the output does not either. A frame comes out ``R`` to ``R + C - 1`` frames after
its own audio is complete (plus the block and the compute); the transformer's work per audio
second is ``(C + R) / C`` times one pass, plus attention over ``K`` cached frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .onnxstream import as_frames

DEFAULT_CHUNK_S = 0.4
"""Frames committed per call when neither the caller nor the model choose (seconds). Chosen by
measurement on XLSR-53-size models (models/README.md, "Streaming"): with ``lookahead`` 0.2 s the
cheapest geometry whose frames keep a mean cosine >= 0.98 to the whole utterance's and whose
latency bound (chunk + lookahead, 0.6 s) leaves room for the block and the compute under 0.8 s."""
DEFAULT_STATE_LOOKAHEAD_S = 0.2
"""Right context of the last frame of a chunk (seconds): it, not the left context, sets fidelity."""
DEFAULT_LEFT_S = 2.0
"""Committed frames whose keys/values stay cached (seconds); 1 s and 4 s measured the same."""


@dataclass(frozen=True)
class StatePlan:
    """Stateful streaming geometry in frames (see the module docstring)."""

    chunk: int
    lookahead: int
    left: int

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.lookahead < 0 or self.left < 0:
            raise UsageError(f"stream chunk {self.chunk} frames must be >= 1, lookahead {self.lookahead} "
                             f"and left {self.left} >= 0")


class OnnxStateStream:
    """One stream's state for a stateful :class:`OnnxEncoder`: pending audio, cached features
    and keys/values. ``flush()`` ends the stream: pushing or flushing again raises
    :class:`UsageError` until ``reset()`` (the contract of every encoder state, see base.py)."""

    def __init__(self, encoder):  # an OnnxEncoder (onnx.py imports this module)
        self.encoder = encoder
        self.plan: StatePlan = encoder.plan  # type: ignore[assignment]
        self.reset()

    def reset(self) -> None:
        """Forget everything: ready for a new stream."""
        enc = self.encoder
        info = enc.info
        self._audio = np.zeros(enc.grid.pad, np.float32)  # padded stream samples from _audio_start on
        self._audio_start = 0
        self._feats = np.zeros((0, info.feature_size), np.float32)  # projected features, frames _feat_start..
        self._feat_start = 0
        self._kv = np.zeros((info.kv_layers, 2, 0, info.kv_size), np.float32)  # cached keys/values
        self._committed = 0  # frames emitted so far
        self._finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise UsageError("the encoder stream was flushed: reset() it before feeding a new stream")

    def _available(self) -> int:
        grid = self.encoder.grid
        received = self._audio_start + len(self._audio)
        return max(0, (received - grid.length) // grid.hop + 1)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Take 16 kHz float32 samples; return the frames now final, ``(n, dim)``."""
        self._check_open()
        chunk = self.encoder._check_audio(samples)
        if len(chunk):
            self._audio = np.concatenate([self._audio, chunk])
        plan, out = self.plan, []
        available = self._available()
        while self._committed + plan.chunk + plan.lookahead <= available:
            out.append(self._call(self._committed + plan.chunk + plan.lookahead, plan.chunk, final=False))
        return self._joined(out)

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining frames, ``(n, dim)``; the stream is then finished."""
        self._check_open()
        self._audio = np.concatenate([self._audio, np.zeros(self.encoder.grid.pad, np.float32)])
        out = []
        available = self._available()
        if self._committed < available:
            out.append(self._call(available, available - self._committed, final=True))
        self._finished = True
        self._audio, self._feats, self._kv = self._audio[:0], self._feats[:0], self._kv[:, :, :0]
        return self._joined(out)

    def _joined(self, parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.ascontiguousarray(np.concatenate(parts))

    def _segment(self, first: int, end: int, final: bool) -> np.ndarray:
        """Padded samples from frame ``first``'s start to frame ``end - 1``'s end (to the stream's
        last sample for the final call)."""
        grid = self.encoder.grid
        lo = first * grid.hop - self._audio_start
        return self._audio[lo:] if final else self._audio[lo:lo + (end - 1 - first) * grid.hop + grid.length]

    def _call(self, end: int, commit: int, final: bool) -> np.ndarray:
        """Run the graph on frames ``[committed, end)``; cache and return the first ``commit``."""
        enc, info = self.encoder, self.encoder.info
        start, base = self._committed, self._feat_start
        past = self._feats[max(0, start - info.pos_cache_frames - base):start - base]
        feed = {info.input_pos_cache: np.ascontiguousarray(past[None]), info.input_kv_cache: self._kv}
        if info.two_stage:
            # features of frames not known yet: at least one frame, so the front end has input
            first_new = min(base + len(self._feats), end - 1)
            feed[info.input_context] = np.ascontiguousarray(self._feats[None, start - base:first_new - base])
        else:  # group-norm front end: it normalises over its input, which covers the whole call
            first_new = start
        audio = self._segment(first_new, end, final and not info.two_stage)
        feed[info.input_audio] = np.ascontiguousarray(audio[None])
        value, kv, new = enc.session.run([enc._output, info.output_kv, info.output_features], feed)
        frames = enc._check_count(as_frames(value, enc.dim, str(enc.path)), end - start, len(audio))
        kept = self._feats[:first_new - base]
        new = np.asarray(new[0], np.float32)
        self._feats = np.concatenate([kept, new if info.two_stage else new[:commit]])
        # one copy: the cached frames still in the left context, then the committed ones
        cached, left = self._kv.shape[2], self.plan.left
        old = min(cached, max(0, cached + commit - left))  # cached frames that leave the left context
        self._kv = np.concatenate([self._kv[:, :, old:], kv[:, :, max(0, commit - left):commit]], axis=2)
        self._committed = start + commit
        drop = max(0, self._committed - info.pos_cache_frames - base)  # features no call needs again
        self._feats, self._feat_start = self._feats[drop:], base + drop
        self._drop_audio_before(end - 1 if info.two_stage else self._committed)
        return frames[:commit]

    def _drop_audio_before(self, frame: int) -> None:
        cut = min(frame * self.encoder.grid.hop - self._audio_start, len(self._audio))
        if cut > 0:
            self._audio = self._audio[cut:]
            self._audio_start += cut
