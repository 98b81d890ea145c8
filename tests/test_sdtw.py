"""The subsequence DTW kernels: worked by hand, against librosa, offline == incremental."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from kwsstream.matcher import MatcherState, Templates, cosine_distances
from kwsstream.sdtw import accumulate_offline, band, best_match


def free(m: int) -> tuple[np.ndarray, np.ndarray]:
    """No warping band: the plain recurrence (what librosa computes)."""
    return np.ones(m, np.int32), np.full(m, 2**30, np.int32)


def test_hand_worked_matrix():
    # template of 3 frames against 5 stream frames; local distances chosen by hand
    d = np.array([[1, 0, 2, 2, 0],
                  [2, 2, 0, 1, 2],
                  [2, 2, 2, 0, 1]], np.float32)
    # D row 0 = d row 0 (free start): [1, 0, 2, 2, 0]
    # row 1: j0: 2+1=3; j1: 2+min(1,0,3)=2; j2: 0+min(0,2,2)=0; j3: 1+min(2,2,0)=1; j4: 2+min(2,0,1)=2
    # row 2: j0: 2+3=5; j1: 2+min(3,2,5)=4; j2: 2+min(2,0,4)=2; j3: 0+min(0,1,2)=0; j4: 1+min(1,2,0)=1
    cost, start = accumulate_offline(d, *free(3))
    np.testing.assert_array_equal(cost, [5, 4, 2, 0, 1])
    # the zero-cost path 0->(0,1) (1,2) (2,3) starts at stream frame 1
    assert start[3] == 1
    assert start[4] == 1  # (2,4) extends it horizontally
    score, s, e = best_match(d, *free(3))
    assert (s, e) == (1, 3) and score == 0.0


def test_ramp_hidden_in_noise_is_recovered_exactly():
    rng = np.random.default_rng(0)
    query = rng.standard_normal((12, 8)).astype(np.float32)
    sentence = rng.standard_normal((80, 8)).astype(np.float32)
    sentence[40:52] = query  # the very frames at 40..51
    score, s, e = best_match(cosine_distances(query, sentence), *band(12))
    assert (s, e) == (40, 51)
    assert score == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("m,n", [(1, 7), (5, 5), (9, 40), (30, 17)])
def test_offline_last_row_equals_librosa_subsequence_dtw(m, n):
    rng = np.random.default_rng(m * 100 + n)
    d = rng.random((m, n)).astype(np.float32)
    ref = librosa.sequence.dtw(C=d.astype(np.float64), subseq=True, backtrack=False)[-1]
    cost, _ = accumulate_offline(d, *free(m))
    np.testing.assert_allclose(cost, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_offline_start_frames_equal_librosa_backtracking(seed):
    rng = np.random.default_rng(seed)
    d = rng.random((6, 30)).astype(np.float32)
    cost, start = accumulate_offline(d, *free(6))
    _, wp = librosa.sequence.dtw(C=d.astype(np.float64), subseq=True)  # path from the best end back
    end = int(wp[0, 1])
    assert end == int(np.argmin(cost))
    assert start[end] == wp[-1, 1]


@pytest.mark.parametrize("block", [1, 3, 64])
def test_incremental_equals_offline_for_many_templates(block):
    rng = np.random.default_rng(block)
    lengths = [7, 3, 12, 12, 1, 5]
    templates = [rng.standard_normal((m, 6)).astype(np.float32) for m in lengths]
    stream = rng.standard_normal((50, 6)).astype(np.float32)
    tpl = Templates(templates, keyword_of=[0, 0, 1, 2, 2, 3])
    state = MatcherState(tpl, block)
    parts = [state.push(stream[a:b]) for a, b in [(0, 1), (1, 20), (20, 21), (21, 50)]] + [state.flush()]
    score = np.concatenate([p[0] for p in parts])
    start = np.concatenate([p[1] for p in parts])
    assert [p[2] for p in parts if len(p[0])][0] == 0 and len(score) == 50
    for pos, t in enumerate(tpl.order):
        cost, s = accumulate_offline(cosine_distances(templates[t], stream), tpl.row_lo[:lengths[t]],
                                     tpl.row_hi[:lengths[t]])
        expected = 2 * cost / (lengths[t] + np.arange(50) - s + 1)
        np.testing.assert_array_equal(start[:, pos], s)
        np.testing.assert_allclose(score[:, pos], expected, rtol=1e-6)


def test_column_memory_does_not_grow_with_the_stream():
    rng = np.random.default_rng(1)
    tpl = Templates([rng.standard_normal((20, 4)).astype(np.float32)], [0])
    state = MatcherState(tpl, 10)
    sizes = set()
    for _ in range(20):
        state.push(rng.standard_normal((100, 4)).astype(np.float32))
        sizes.add(state._col.nbytes + state._col_start.nbytes + state._pending.nbytes)
    assert len(sizes) == 1 and state.frames_done == 2000


def test_start_frames_stay_true_when_the_int32_base_moves_inside_one_push():
    """After ~2**31 frames the kernel's int32 start frames are re-counted from a new base; a push
    that spans several blocks across that point must still give true stream start frames."""
    from kwsstream.matcher import INT32_LIMIT

    rng = np.random.default_rng(7)
    templates = [rng.standard_normal((m, 5)).astype(np.float32) for m in (4, 9)]
    stream = rng.standard_normal((40, 5)).astype(np.float32)
    tpl = Templates(templates, keyword_of=[0, 1])
    fresh = MatcherState(tpl, 10)
    score, start, _ = fresh.push(stream)
    late = MatcherState(tpl, 10)
    offset = INT32_LIMIT - 24  # the third block of the push crosses the limit
    late.frames_done = offset
    late_score, late_start, frame0 = late.push(stream)
    assert frame0 == offset and late._base > 0  # the base did move during this push
    live = np.isfinite(score)  # a frame no path reaches (the band) has no start to compare
    assert live.mean() > 0.8
    np.testing.assert_array_equal(late_start[live], (start + offset)[live])
    np.testing.assert_array_equal(late_score, score)


def test_band_by_hand():
    # warp 2, slack 1: after r rows a path spans ceil(r/2)-1 (at least 1) .. 2r+1 frames
    lo, hi = band(4)
    np.testing.assert_array_equal(lo, [1, 1, 1, 1])
    np.testing.assert_array_equal(hi, [3, 5, 7, 9])
    lo, hi = band(10, warp=2.0, slack=0)
    np.testing.assert_array_equal(lo, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    np.testing.assert_array_equal(hi, [2, 4, 6, 8, 10, 12, 14, 16, 18, 20])


def test_a_stretched_match_cannot_fire():
    """A template of 10 frames against a stream where the same frames are each held 3 times
    (a 3x stretch): without the band it matches perfectly; with a 2x band no path fits it."""
    rng = np.random.default_rng(3)
    query = rng.standard_normal((10, 6)).astype(np.float32)
    stream = np.concatenate([rng.standard_normal((20, 6)), np.repeat(query, 3, axis=0),
                             rng.standard_normal((20, 6))]).astype(np.float32)
    d = cosine_distances(query, stream)
    free_score, s, e = best_match(d, *free(10))
    assert free_score < 1e-5 and e - s + 1 > 21
    score, s, e = best_match(d, *band(10))
    assert e - s + 1 <= 21 and score > 0.2


def test_a_squeezed_match_cannot_fire():
    """A template of 6 steady sounds held 4 frames each, and a stream that passes through the
    same 6 sounds in 6 frames (4x faster): without the band that is a perfect match; with it no
    path shorter than half the template (less slack) is allowed."""
    rng = np.random.default_rng(4)
    sounds = rng.standard_normal((6, 6)).astype(np.float32)
    query = np.repeat(sounds, 4, axis=0)
    stream = np.concatenate([rng.standard_normal((15, 6)), sounds, rng.standard_normal((15, 6))]).astype(np.float32)
    d = cosine_distances(query, stream)
    free_score, s, e = best_match(d, *free(24))
    assert free_score < 1e-5 and (s, e) == (15, 20)
    score, s, e = best_match(d, *band(24))
    assert e - s + 1 >= 11 and score > 0.2


def test_gated_frames_break_every_path():
    """A perfect match interrupted by one gated frame does not score; gated frames score +inf."""
    rng = np.random.default_rng(5)
    query = rng.standard_normal((8, 4)).astype(np.float32)
    stream = np.concatenate([rng.standard_normal((5, 4)), query, rng.standard_normal((5, 4))]).astype(np.float32)
    tpl = Templates([query], [0])
    open_ = MatcherState(tpl, 4).push(stream)[0][:, 0]
    gate = np.ones(len(stream), bool)
    gate[8] = False  # inside the word
    cut = MatcherState(tpl, 4).push(stream, gate)[0][:, 0]
    assert open_[12] < 1e-5 and np.isinf(cut[8]) and cut[12] > 0.1
    np.testing.assert_array_equal(cut[:8], open_[:8])
