"""Self-calibrating thresholds replayed on recorded score traces (rows ``adaptive`` and ``two-pass``).

* ``adaptive``: the runtime's own :class:`kwsstream.adapt.Adapter` and detector run over the trace
  block by block, exactly as a :class:`kwsstream.spotter.Stream` with adaptation on runs them: the
  thresholds start at the enrollment values and move as the stream's evidence accumulates; every
  event of the whole stream counts (the learning period included). At a common offset the
  adapted thresholds are shifted (the sweep of the other rows).
* ``two-pass``: the evidence of the whole recording first (one pass with the enrollment
  thresholds), then the detector once at the thresholds it gives — what ``detect --two-pass``
  does on a file.

Events come out as the runtime emits them (:class:`eval.streamscore.Events`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eval.streamscore import Events, SweepResult, Trace, Truth, score_events
from eval.streamtiming import Timing
from kwsstream.adapt import AdaptOptions, Adapter, Evidence
from kwsstream.detector import EVENT_FIELDS, DetectorOptions, DetectorState
from kwsstream.encoders.base import FrameGrid


def replay_adaptive(trace: Trace, base: np.ndarray, targets: np.ndarray, grid: FrameGrid, block: int,
                    options: DetectorOptions = DetectorOptions(), adapt: AdaptOptions = AdaptOptions(),
                    offset: float = 0.0, evidence: Evidence | None = None,
                    timing: Timing | None = None) -> tuple[Events, Adapter]:
    """The events a stream with adaptation on emits over ``trace`` (in blocks of ``block``
    frames, the spotter's matcher block), thresholds shifted by ``offset``; and its adapter."""
    adapter = Adapter(np.asarray(base, np.float64) + offset, targets, evidence, grid.frame_rate, adapt, options)
    detector = DetectorState(adapter.thresholds.astype(np.float32), grid.frame_rate, options)
    rows = []
    n = len(trace.score)
    for f0 in range(0, n, block):
        s, st, t = trace.score[f0:f0 + block], trace.start[f0:f0 + block], trace.template[f0:f0 + block]
        out = detector.push(s, st, t, f0)
        rows.append(out)
        if adapter.push(s, st, t, f0, out):
            detector.thresholds[:] = adapter.thresholds
    last = detector.flush()
    adapter.flush(last)
    rows.append(last)
    all_rows = np.concatenate(rows) if rows else np.zeros((0, EVENT_FIELDS))
    return Events.from_rows(all_rows, grid, timing, trace.seconds), adapter


def two_pass_thresholds(trace: Trace, base: np.ndarray, targets: np.ndarray, grid: FrameGrid, block: int,
                        options: DetectorOptions = DetectorOptions(),
                        adapt: AdaptOptions = AdaptOptions()) -> np.ndarray:
    """The thresholds the whole recording's evidence gives (first pass at the enrollment
    thresholds, no prior: the recording is all the evidence)."""
    _, adapter = replay_adaptive(trace, base, targets, grid, block, options,
                                 AdaptOptions(**{**vars(adapt), "update_seconds": 1e9}))
    return adapter.evidence.thresholds(np.asarray(base, np.float64), targets,
                                       AdaptOptions(**{**vars(adapt), "prior_hours": 0.0}))


def sweep_adaptive(trace: Trace, truth: Truth, base: np.ndarray, targets: np.ndarray, offsets: Sequence[float],
                   grid: FrameGrid, block: int, options: DetectorOptions = DetectorOptions(),
                   adapt: AdaptOptions = AdaptOptions(), *, timing: Timing | None = None) -> SweepResult:
    """:func:`eval.streamscore.sweep` for the ``adaptive`` row: at each offset the adapting
    stream is replayed anew (its thresholds start at the enrollment ones plus the offset)."""
    n_k = trace.score.shape[1]
    shape = (len(offsets), n_k)
    hits, fas, reps, ign = (np.zeros(shape, np.int64) for _ in range(4))
    thresholds = np.zeros(shape)
    latencies = [np.zeros(0)] * n_k
    occurrences = np.bincount(truth.keyword, minlength=n_k)[:n_k] if len(truth.keyword) else np.zeros(n_k, np.int64)
    for i, offset in enumerate(offsets):
        events, adapter = replay_adaptive(trace, base, targets, grid, block, options, adapt, float(offset),
                                          timing=timing)
        s = score_events(events, truth, n_k, options.lookahead)
        hits[i], fas[i], reps[i], ign[i] = s.hits, s.false_alarms, s.repeats, s.ignored
        thresholds[i] = adapter.thresholds
        if offset == 0:
            latencies = s.latencies
    return SweepResult(np.asarray(offsets, np.float64), hits, fas, reps, occurrences, trace.seconds / 3600,
                       latencies, thresholds, ign)
