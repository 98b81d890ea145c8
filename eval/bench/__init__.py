"""Speed and fidelity benchmarks (not tests): ``python -m eval.bench.encoder_speed`` and friends.

Encoder benchmarks run on random-weight checkpoints with real architectures
(``encoder_models.py``); their results and commands are recorded in models/README.md.
"""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def machine() -> str:
    """CPU model, cores, ISA extensions that matter for int8, load average."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    from kwsstream.onnxsession import physical_cores

    isa = [name for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if name in flags]
    load = os.getloadavg()
    return (f"{model}; {os.cpu_count()} logical CPUs, {physical_cores()} physical cores; ISA {'/'.join(isa) or '?'}; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` (Linux) starts afresh at exec; ``ru_maxrss``
    would carry the parent's peak into a child started by fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
