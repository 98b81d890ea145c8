"""Frame stitcher: which frames of which overlapping window a contextual encoder emits.

A contextual encoder (wav2vec2: attention over the whole input) gives different frames for the
same audio depending on how much audio surrounds it. Streaming therefore runs the encoder on
overlapping windows and keeps, from each window, only frames that have enough context on both
sides; every frame of the stream is emitted exactly once and in order.

All sizes here are in frames of the encoder's grid. With ``window = W``, ``hop = H`` and
``lookahead = R`` (right context), the left context is ``W - H - R`` and step ``k`` runs the
encoder on frames ``[max(0, e - W), e)`` with ``e = (k + 1) * H + R`` and emits frames
``[k * H, (k + 1) * H)``: the first window also keeps its left edge (nothing precedes the
stream) and at the end of the stream the last window keeps its right edge. A step happens as
soon as the frames it needs exist, so the steps (and hence the frames) depend only on the
audio, never on how it was cut into chunks.

A frame is emitted ``R`` to ``R + H - 1`` frames after its own audio is complete: the latency is
``(R + H) * frame_hop`` samples at most, ``(R + H / 2) * frame_hop`` on average (plus compute).
A local encoder (no context) uses ``W = H`` and ``R = 0``: blocks of ``H`` frames, exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class StitchPlan:
    """Window geometry in frames.

    Attributes:
        window: frames the encoder sees per step (left context + hop + lookahead).
        hop: frames emitted per step (the last step may emit more, see :class:`Stitcher`).
        lookahead: right context: frames after the emitted ones that the window includes.
    """

    window: int
    hop: int
    lookahead: int

    def __post_init__(self) -> None:
        if self.hop < 1 or self.lookahead < 0 or self.window < self.hop + self.lookahead:
            raise UsageError(
                f"stream window {self.window} frames must hold hop {self.hop} (>= 1) + lookahead "
                f"{self.lookahead} (>= 0) frames")

    @property
    def left(self) -> int:
        """Left context in frames."""
        return self.window - self.hop - self.lookahead


@dataclass(frozen=True)
class Step:
    """One encoder run: input frames ``[start, end)``, emitted frames ``[emit_from, emit_to)``."""

    start: int
    end: int
    emit_from: int
    emit_to: int


class Stitcher:
    """Plans the steps of one stream from the number of frames whose audio is complete."""

    def __init__(self, plan: StitchPlan):
        self.plan = plan
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self.emitted = 0

    def steps(self, available: int, final: bool = False) -> list[Step]:
        """The steps that ``available`` complete frames allow, in order; advances the stream.

        Args:
            available: frames whose audio is complete (never decreasing within a stream).
            final: the stream has ended and ``available`` is its total: emit everything left.
        """
        plan = self.plan
        out: list[Step] = []
        while self.emitted + plan.hop + plan.lookahead <= available:
            end = self.emitted + plan.hop + plan.lookahead
            out.append(Step(max(0, end - plan.window), end, self.emitted, self.emitted + plan.hop))
            self.emitted += plan.hop
        if final and self.emitted < available:
            # fewer than hop + lookahead frames are left: one window ending at the stream's end
            # keeps them all (its right edge included)
            out.append(Step(max(0, available - plan.window), available, self.emitted, available))
            self.emitted = available
        return out
