"""The one place where onnxruntime sessions are made (threads, providers, log level).

Every ONNX model the runtime runs goes through :func:`make_session`, so that thread counts and
logging are decided once.

Threads (measured, ``python -m eval.bench.startup``; see :func:`default_threads`): a small model
(speech_embedding, 2.4 MB) gets **one** intra-op thread: its operators are too small to split,
so a second thread only adds synchronisation (more CPU for the same wall time) and, spinning,
keeps a second core busy between calls. A large model (wav2vec2-size) gets the *physical* cores
the process may run on (its matrix products gain nothing from hyper-threads). Worker threads
busy-wait between operators only for large models. The choice is overridden by an explicit
``threads`` (``--threads``, :func:`set_default_threads`) or ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import EncoderError

LOG_ERROR = 3
"""onnxruntime severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. Warnings about unused
initialisers and the like are noise for users; errors still come through as exceptions."""
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
"""The runtime targets CPUs; a caller may pass others (they must be installed)."""
_CPUINFO = Path("/proc/cpuinfo")
SMALL_MODEL_BYTES = 32 << 20
"""Models up to this size run on one thread without spinning (speech_embedding: 2.4 MB; an
XLSR-53 layer-12 int8 export: ~170 MB)."""
THREADS_ENV = "OMP_NUM_THREADS"
_default_threads: int | None = None


def set_default_threads(threads: int | None) -> None:
    """The thread count every later session gets when none is given (the CLI's ``--threads``);
    ``None`` goes back to the choice by model size."""
    global _default_threads
    if threads is not None and int(threads) < 1:
        raise EncoderError(f"--threads must be at least 1 (got {threads})")
    _default_threads = None if threads is None else int(threads)


def default_threads(model_bytes: int) -> int:
    """Intra-op threads for a model of ``model_bytes`` bytes when the caller chose none:
    :func:`set_default_threads`'s value, else ``OMP_NUM_THREADS``, else 1 for a small model
    (:data:`SMALL_MODEL_BYTES`) and :func:`physical_cores` for a large one."""
    if _default_threads is not None:
        return _default_threads
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return 1 if model_bytes <= SMALL_MODEL_BYTES else physical_cores()


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads not counted; at least 1).

    Reads ``/proc/cpuinfo`` (Linux) for the (package, core) pairs of the CPUs in this process's
    affinity mask; elsewhere falls back to the logical CPU count.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return max(1, len(allowed))
    cores: set[tuple[str, str]] = set()
    for block in text.strip().split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
        cpu = fields.get("processor")
        if cpu is None or not cpu.isdigit() or int(cpu) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields.get("core id", cpu)))
    return max(1, len(cores) or len(allowed))


def make_session(
    model: str | Path | bytes,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    log_level: int = LOG_ERROR,
    spin: bool | None = None,
):
    """Open an onnxruntime inference session.

    Args:
        model: path of an ``.onnx`` file, or the serialised model bytes.
        threads: intra-op threads; ``None``: :func:`default_threads` (by the model's size).
            Inter-op parallelism is off (the graphs are a single chain of operators).
        providers: execution providers, default :data:`DEFAULT_PROVIDERS`.
        log_level: onnxruntime log severity (see :data:`LOG_ERROR`).
        spin: let worker threads busy-wait between operators (lower latency for large models,
            a busy core between calls); ``None``: only for a large model on several threads.

    Raises:
        EncoderError: ``threads`` below 1, or the file is missing or is not a model
            onnxruntime can run (one line naming the file).
    """
    import onnxruntime as ort  # deferred: importing onnxruntime costs ~0.3 s

    name = "<model bytes>" if isinstance(model, bytes) else str(model)
    if threads is not None and int(threads) < 1:
        raise EncoderError(f"{name}: threads must be at least 1 (got {threads})")
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise EncoderError(f"{name}: no such model file")
    size = len(model) if isinstance(model, bytes) else Path(model).stat().st_size
    if threads is None:
        threads = default_threads(size)
    if spin is None:
        spin = int(threads) > 1 and size > SMALL_MODEL_BYTES
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = int(log_level)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=list(providers or DEFAULT_PROVIDERS))
    except Exception as err:  # onnxruntime raises its own (unexported) exception classes
        reason = " ".join(str(err).split())[:300]
        raise EncoderError(f"{name}: not a model onnxruntime can load ({reason})") from err
