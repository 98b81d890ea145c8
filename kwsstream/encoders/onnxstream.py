"""The windowed stream of an :class:`~kwsstream.encoders.onnx.OnnxEncoder` (stateless graphs).

A contextual model without streaming state runs on overlapping windows of ``window`` seconds
every ``hop`` seconds, keeping the frames that have ``lookahead`` seconds of right context (and the
rest of the window as left context; ``kwsstream/stitch.py`` plans the steps). For a two-stage
model each step feeds only the new audio; the front end turns it into features, which are joined
to the cached features of the window's earlier frames (the ``context`` input), so the conv front
end runs once per stream, not once per window. A local model (``context = local``) runs on
back-to-back blocks: exact.
"""

from __future__ import annotations

import numpy as np

from ..errors import EncoderError, UsageError
from ..stitch import Step, Stitcher


def as_frames(value: np.ndarray, dim: int, name: str) -> np.ndarray:
    """One batch item of an output as ``(frames, dim)``, extra singleton axes squeezed."""
    item = np.asarray(value[0], dtype=np.float32)
    if item.size % dim or (item.ndim and item.shape[-1] != dim):
        raise EncoderError(f"{name}: output of shape {tuple(value.shape)} does not end in hidden_size {dim}")
    return item.reshape(-1, dim)


class OnnxStream:
    """One stream's state for an :class:`OnnxEncoder`: pending audio, cached front-end features
    and the stitcher. ``flush()`` ends the stream: pushing or flushing again raises
    :class:`UsageError` until ``reset()`` (the contract of every encoder state, see base.py)."""

    def __init__(self, encoder):  # an OnnxEncoder (onnx.py imports this module)
        self.encoder = encoder
        self._stitcher = Stitcher(encoder.plan)
        self.reset()

    def reset(self) -> None:
        """Forget everything: ready for a new stream."""
        grid = self.encoder.grid
        self._stitcher.reset()
        self._audio = np.zeros(grid.pad, np.float32)  # padded stream samples from _audio_start on
        self._audio_start = 0
        self._feats = np.zeros((0, self.encoder.info.feature_size), np.float32)  # frames _feat_start..
        self._feat_start = 0
        self._finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise UsageError("the encoder stream was flushed: reset() it before feeding a new stream")

    @property
    def _received(self) -> int:
        return self._audio_start + len(self._audio)

    def _available(self) -> int:
        grid = self.encoder.grid
        return max(0, (self._received - grid.length) // grid.hop + 1)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Take 16 kHz float32 samples; return the frames now final, ``(n, dim)``."""
        self._check_open()
        chunk = self.encoder._check_audio(samples)
        if len(chunk):
            self._audio = np.concatenate([self._audio, chunk])
        return self._run(self._stitcher.steps(self._available()))

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining frames, ``(n, dim)``; the stream is then finished."""
        self._check_open()
        self._audio = np.concatenate([self._audio, np.zeros(self.encoder.grid.pad, np.float32)])
        frames = self._run(self._stitcher.steps(self._available(), final=True))
        self._finished = True
        self._audio, self._feats = self._audio[:0], self._feats[:0]  # nothing of it is needed again
        return frames

    def _segment(self, first: int, end: int) -> np.ndarray:
        """Padded samples from frame ``first``'s start to frame ``end - 1``'s end."""
        grid = self.encoder.grid
        lo = first * grid.hop - self._audio_start
        return self._audio[lo:lo + (end - 1 - first) * grid.hop + grid.length]

    def _run(self, steps: list[Step]) -> np.ndarray:
        out = [np.zeros((0, self.encoder.dim), np.float32)]
        for step in steps:
            frames = self._step_two_stage(step) if self.encoder.info.two_stage else self._step_single(step)
            out.append(frames[step.emit_from - step.start:step.emit_to - step.start])
        return np.ascontiguousarray(np.concatenate(out))

    def _step_single(self, step: Step) -> np.ndarray:
        enc = self.encoder
        audio = self._segment(step.start, step.end)
        (value,) = enc.session.run([enc._output], enc._feed(audio, None))
        frames = enc._check_count(as_frames(value, enc.dim, str(enc.path)), step.end - step.start, len(audio))
        self._drop_audio_before(step.start)  # later windows never start earlier
        return frames

    def _step_two_stage(self, step: Step) -> np.ndarray:
        enc = self.encoder
        # new front-end features: from the first frame not yet computed (at least one frame, so
        # the front end always has input; a recomputed frame replaces the cached one)
        first_new = min(self._feat_start + len(self._feats), step.end - 1)
        context = self._feats[step.start - self._feat_start:first_new - self._feat_start]
        audio = self._segment(first_new, step.end)
        value, new = enc.session.run([enc._output, enc.info.output_features],
                                     enc._feed(audio, np.ascontiguousarray(context)))
        frames = enc._check_count(as_frames(value, enc.dim, str(enc.path)), step.end - step.start, len(audio))
        self._feats = np.concatenate([context, np.asarray(new[0], np.float32)])
        self._feat_start = step.start
        self._drop_audio_before(step.end - 1)  # the next step recomputes at most frame end - 1
        return frames

    def _drop_audio_before(self, frame: int) -> None:
        cut = frame * self.encoder.grid.hop - self._audio_start
        if cut > 0:
            self._audio = self._audio[cut:]
            self._audio_start += cut
