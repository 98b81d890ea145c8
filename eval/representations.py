"""The encode stage: every recording of a protocol through the runtime's own encoder, once, all
layers at a time, cached on disk per layer.

Representations (the ``representation`` column of ``results.csv``):

================  ========================================================================
``word``          the query segment's audio encoded alone (word-level), any layer
``contextual``    the query's whole sentence encoded, the segment's frames kept, any layer
``mfcc``          MFCC-13 (the runtime's cepstra), query segment encoded alone
``mfcc-contextual``  MFCC-13, query frames cut from the whole sentence's encoding
================  ========================================================================

**The eval's MFCC normalisation** (``--mfcc-cmn``, :data:`MFCC_CMN`): the runtime's MFCC removes
the cepstral mean causally over about 1 s, which is right for live audio; offline, the whole
recording is at hand and the study removes each utterance's mean. The benchmark's default,
``utterance``, is the runtime's MFCC-13 with its causal normalisation off (an identity of the
encoder registry, ``cmn_seconds: None``, so its cache is its own) and each recording's mean
removed when its frames are loaded (:meth:`FeatureCache.load`: the sentence's mean for sentences
and contextual queries, the segment's own for word-level queries); ``causal`` is the runtime's
encoder as it is. Measured on the 1000-sentence synthetic corpus (30 x 10, 700 negatives, own
sentence excluded, no normalisation): word-level P@10 0.318 per-utterance vs 0.251 causal,
contextual 0.350 vs 0.334 (README, "Benchmark (the study)").

Searched sentences are always encoded whole. A contextual query's frames are those of its
sentence whose centres lie in the aligned segment (:func:`segment_frames`, the rule of
``kwsstream enroll --segment``), so the contextual queries need no encoding of their own.

Cache layout (``CACHE`` is ``RESULTS_DIR/cache`` unless ``--cache`` says otherwise)::

    CACHE/encodings/<encoder key>/L<layer:02d>/<item key>.npy    (frames, dim) float16

one file per recording and layer, so a layer is read without touching the others. Values beyond
float16's range (rogue dimensions can grow large) are stored as float32 for that file. The
encoder key names the encoder's identity (ONNX: model name and sha256), the item key the
recording (``<utt>`` for a whole clip, ``<utt>@<start ms>-<end ms>`` for a segment). An item is
done when its last layer's file exists (files are written layer by layer, each atomically), so
an interrupted run resumes where it stopped. Encoding runs in ``workers`` spawned processes fed
one recording at a time: memory is bounded by one recording per worker whatever the corpus size.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kwsstream.encoders import encoder_from_identity, load_encoder, same_identity
from kwsstream.encoders.base import SAMPLE_RATE, FrameGrid, safe_name
from kwsstream.enroll import keyword_frames
from kwsstream.errors import EncoderError, KwsError, UsageError

if TYPE_CHECKING:
    from eval.protocol import Protocol

log = logging.getLogger(__name__)

WORD, CONTEXTUAL = "word", "contextual"
MFCC, MFCC_CONTEXTUAL = "mfcc", "mfcc-contextual"
BASELINE_SPEC = "mfcc"
"""The study's baseline encoder (``--encoder`` spec): the runtime's MFCC-13."""
MFCC_CMN = ("utterance", "causal")
"""The eval's MFCC normalisations (``--mfcc-cmn``), the default first (see the module docstring)."""
ENCODINGS_DIR = "encodings"
FLOAT16_MAX = float(np.finfo(np.float16).max)


class CacheError(KwsError):
    """A cached encoding that cannot be read or is missing (the message names the file)."""


@dataclass(frozen=True)
class EncodeOptions:
    """How the encode stage runs.

    Attributes:
        workers: encoding processes (0: 1 for the MFCC baseline, else one per physical core).
        threads: onnxruntime threads per worker (``None``: physical cores / workers).
    """

    workers: int = 0
    threads: int | None = None


@dataclass(frozen=True)
class Item:
    """One recording to encode: the whole clip (``start`` is ``None``) or a segment of it."""

    key: str
    path: str
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class EncoderInfo:
    """What the stages need to know about an encoder without holding it.

    Attributes:
        spec: how to open it again (``--encoder``).
        key: its :attr:`~kwsstream.encoders.base.Encoder.key` (cache folder).
        name: its model name (all layers).
        layers, dim, grid: as the encoder says.
        baseline: whether it is the study's baseline encoder (:data:`BASELINE_SPEC`), whose
            representations are labelled ``mfcc`` / ``mfcc-contextual``.
        identity: the identity to open it from in the workers (``None``: ``spec``).
        utterance_mean: each recording's mean frame is removed when it is loaded.
        label: how tables and plots name it, e.g. ``mfcc (per-utterance CMN)``.
    """

    spec: str
    key: str
    name: str
    layers: tuple[int, ...]
    dim: int
    grid: FrameGrid
    baseline: bool
    identity: dict | None = None
    utterance_mean: bool = False
    label: str = ""

    def open(self, threads: int | None = None):
        """The encoder itself (only through the registry)."""
        return load_encoder(self.spec, threads=threads) if self.identity is None else \
            encoder_from_identity(self.identity, threads=threads)


def describe_encoder(spec: str, mfcc_cmn: str = MFCC_CMN[0]) -> EncoderInfo:
    """Open the encoder once to read its key, layers, width and frame grid (only through the
    encoder protocol, ``kwsstream/encoders/base.py``). The baseline MFCC gets the eval's
    normalisation ``mfcc_cmn`` (see the module docstring); other encoders are taken as they are.

    Raises:
        EncoderError: an unknown spec or an unusable model (from the runtime's loader).
        UsageError: an unknown ``mfcc_cmn``.
    """
    if mfcc_cmn not in MFCC_CMN:
        raise UsageError(f"--mfcc-cmn must be one of {', '.join(MFCC_CMN)}, not {mfcc_cmn!r}")
    encoder = load_encoder(spec, threads=1)
    baseline = same_identity(encoder.identity, load_encoder(BASELINE_SPEC).identity)
    identity, label = None, encoder.model_name
    if baseline and mfcc_cmn == "utterance":
        identity = {**encoder.identity, "cmn_seconds": None}
        encoder = encoder_from_identity(identity, threads=1)
        label = f"MFCC-{encoder.dim} (per-utterance CMN)"
    elif baseline:
        label = f"MFCC-{encoder.dim} (causal 1 s CMN)"
    return EncoderInfo(str(spec), encoder.key, encoder.model_name, tuple(encoder.layers), int(encoder.dim),
                       encoder.grid, baseline, identity, baseline and mfcc_cmn == "utterance", label)


def sentence_item(utt_id: str, path: str) -> Item:
    """The item of a whole clip."""
    return Item(safe_name(utt_id), str(path))


def segment_item(utt_id: str, path: str, start: float, end: float) -> Item:
    """The item of a segment (seconds) of a clip."""
    return Item(f"{safe_name(utt_id)}@{round(start * 1000)}-{round(end * 1000)}", str(path), start, end)


def protocol_items(protocol: Protocol) -> tuple[list[Item], list[Item]]:
    """The items of a protocol: its searched sentences (whole clips) and its queries' segments,
    each in the protocol's order."""
    sentences = [sentence_item(s.utt_id, s.path) for s in protocol.sentences]
    segments = [segment_item(protocol.sentences[q.sentence].utt_id, protocol.sentences[q.sentence].path,
                             q.start, q.end) for q in protocol.queries]
    return sentences, segments


def segment_frames(grid: FrameGrid, n_frames: int, start: float, end: float) -> tuple[int, int]:
    """``(first, stop)`` frames of an utterance whose centres lie in ``[start, end]`` seconds (the
    rule of ``kwsstream.enroll.make_template``: :func:`kwsstream.enroll.keyword_frames`); the frame
    nearest the segment's middle if none.
    """
    keep = keyword_frames(grid, n_frames, start, end)
    if len(keep) == 0:
        middle = min(max(grid.frame_at((start + end) / 2), 0), max(n_frames - 1, 0))
        return middle, middle + 1
    return int(keep[0]), int(keep[-1]) + 1


class FeatureCache:
    """Per-layer encodings of one encoder under ``root/encodings/<encoder key>/``."""

    def __init__(self, root: Path, encoder: EncoderInfo):
        self.folder = Path(root) / ENCODINGS_DIR / encoder.key
        self.encoder = encoder

    def path(self, layer: int, key: str) -> Path:
        return self.folder / f"L{layer:02d}" / f"{key}.npy"

    def done(self, key: str) -> bool:
        """Whether every layer of item ``key`` is on disk (the last is written last)."""
        return self.path(self.encoder.layers[-1], key).is_file()

    def write(self, key: str, layers: dict[int, np.ndarray]) -> None:
        """Store one item's frames, layer by layer, each file atomically."""
        for layer in self.encoder.layers:
            frames = np.asarray(layers[layer])
            peak = float(np.abs(frames).max()) if frames.size else 0.0
            data = frames.astype(np.float16 if peak <= FLOAT16_MAX else np.float32)
            path = self.path(layer, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, data)
            tmp.replace(path)

    def load(self, layer: int, keys: Sequence[str], progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All frames of ``keys`` at ``layer`` as one float32 array ``(total, dim)`` and the
        ``(len(keys) + 1,)`` offsets of each item's rows; with the encoder's ``utterance_mean``
        each item's mean frame removed.

        ``progress``: a progress bar's title (``None``: no bar).

        Raises:
            CacheError: a missing or unreadable file.
        """
        from tqdm import tqdm

        counts = np.zeros(len(keys), np.int64)
        for i, key in enumerate(keys):
            counts[i] = self._open(layer, key, mmap=True).shape[0]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        out = np.empty((int(offsets[-1]), self.encoder.dim), np.float32)
        for i, key in enumerate(tqdm(keys, desc=progress, unit="rec", disable=progress is None or None,
                                     leave=False)):
            rows = out[offsets[i]:offsets[i + 1]]
            rows[:] = self._open(layer, key, mmap=False)
            if self.encoder.utterance_mean and len(rows):
                rows -= rows.mean(axis=0, dtype=np.float64).astype(np.float32)
        return out, offsets

    def _open(self, layer: int, key: str, mmap: bool) -> np.ndarray:
        path = self.path(layer, key)
        try:
            data = np.load(path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as error:
            raise CacheError(f"{path}: cannot read cached encoding ({error}); delete it to re-encode") from error
        if data.ndim != 2 or data.shape[1] != self.encoder.dim:
            raise CacheError(f"{path}: cached shape {data.shape} is not (frames, {self.encoder.dim})")
        return data


# -- the encode stage ------------------------------------------------------------------------------

_WORKER: dict = {}
"""Per-process state of an encoding worker (its encoder and cache), set by :func:`_init_worker`."""


def _init_worker(spec: str, threads: int, cache_root: str, info: EncoderInfo) -> None:
    _WORKER["encoder"] = info.open(threads)
    _WORKER["cache"] = FeatureCache(Path(cache_root), info)


def encode_one(item: Item, info: EncoderInfo, cache_root: str, threads: int) -> tuple[str, float]:
    """Encode one item and cache it in a long-lived process (a Dask worker): the encoder is opened
    on the first call and kept for the next ones with the same encoder and threads."""
    state = (info, str(cache_root), threads)
    if _WORKER.get("state") != state:
        _WORKER.clear()
        _init_worker(info.spec, threads, str(cache_root), info)
        _WORKER["state"] = state
    return _encode_item(item)


def _encode_item(item: Item) -> tuple[str, float]:
    """Encode one item at every layer and cache it; returns its key and audio seconds."""
    from kwsstream.audio import load_audio

    encoder, cache = _WORKER["encoder"], _WORKER["cache"]
    audio = load_audio(item.path)
    if item.start is not None:
        lo, hi = round(item.start * SAMPLE_RATE), round(item.end * SAMPLE_RATE)
        audio = audio[max(lo, 0):hi]
        if encoder.grid.n_frames(hi - lo) == 0 or len(audio) < hi - lo:
            raise EncoderError(f"{item.path}: segment {item.start:.3f}-{item.end:.3f} s is too short or "
                               f"beyond the clip ({len(audio) / SAMPLE_RATE:.3f} s)")
    layers = cache.encoder.layers
    frames = encoder.encode_layers(audio, layers)
    if len(frames[layers[0]]) == 0:
        raise EncoderError(f"{item.path}: no frames ({len(audio) / SAMPLE_RATE:.3f} s of audio)")
    cache.write(item.key, frames)
    return item.key, len(audio) / SAMPLE_RATE


def encode_items(items: Iterable[Item], info: EncoderInfo, cache_root: Path,
                 options: EncodeOptions = EncodeOptions(), progress: bool = True) -> dict[str, float]:
    """Encode the items not cached yet; returns ``{"items", "encoded", "audio_seconds"}``.

    Workers are spawned processes, each with its own encoder session, fed one item at a time
    (``imap_unordered``): the parent holds only keys, so memory does not grow with the corpus.
    """
    from tqdm import tqdm

    from kwsstream.onnxsession import physical_cores

    cache = FeatureCache(cache_root, info)
    unique = {item.key: item for item in items}
    todo = [item for item in unique.values() if not cache.done(item.key)]
    stats = {"items": float(len(unique)), "encoded": float(len(todo)), "audio_seconds": 0.0}
    if not todo:
        return stats
    cores = physical_cores()
    workers = options.workers or (1 if info.baseline else cores)  # MFCC: processes cost more than they save
    workers = max(1, min(workers, len(todo)))
    threads = options.threads or max(1, cores // workers)
    bar = tqdm(total=len(todo), desc=f"encode {info.label or info.name}", unit="rec", disable=not progress or None)
    if workers == 1:
        _init_worker(info.spec, threads, str(cache_root), info)
        try:
            for item in todo:
                stats["audio_seconds"] += _encode_item(item)[1]
                bar.update()
        finally:
            _WORKER.clear()
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, _init_worker, (info.spec, threads, str(cache_root), info)) as pool:
            for _, seconds in pool.imap_unordered(_encode_item, todo, chunksize=1):
                stats["audio_seconds"] += seconds
                bar.update()
    bar.close()
    return stats
