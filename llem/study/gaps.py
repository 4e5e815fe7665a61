"""Thermal gaps between jobs: how long to wait before each job (pure; the launcher waits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

GPU_CONFIG_GAP_S = 60.0  # let the GPU cool between configs (default on GPU hosts)
GPU_CYCLE_GAP_S = 300.0  # longer pause between cycles (default on GPU hosts)


@dataclass(frozen=True)
class Gaps:
    config_gap_s: float
    cycle_gap_s: float
    adaptive: bool = False  # wait until the job's GPUs are back near idle (llem.gpu.cool), not fixed seconds
    cool: Any = field(default=None, compare=False)  # study.cool (temp_c, power_w, max_s, poll_s) when adaptive

    def before(self, prev_cycle: Optional[int], cycle: int) -> float:
        """llem.launch.contract.Pacing: seconds to wait before a job (gap_before)."""
        return gap_before(prev_cycle, cycle, self)

    def starts_cycle(self, prev_cycle: Optional[int], cycle: int) -> bool:
        return starts_cycle(prev_cycle, cycle)


def resolve_gaps(study: Any, gpu_host: bool) -> Gaps:
    """Study settings → gaps. `study.gaps`: true = adaptive on GPU hosts unless a fixed gap is set, 0 on CPU
    hosts; adaptive; fixed (unset gaps: GPU-suited seconds on GPU hosts, 0 on CPU hosts); false = none."""
    if study.gaps is False or study.gaps is None:
        return Gaps(0.0, 0.0)
    fixed_set = study.config_gap_seconds is not None or study.cycle_gap_seconds is not None
    if study.gaps == "adaptive" or (study.gaps is True and not fixed_set):
        return Gaps(0.0, 0.0, adaptive=bool(gpu_host), cool=getattr(study, "cool", None) if gpu_host else None)
    cfg_gap = study.config_gap_seconds
    cyc_gap = study.cycle_gap_seconds
    return Gaps(
        float(cfg_gap) if cfg_gap is not None else (GPU_CONFIG_GAP_S if gpu_host else 0.0),
        float(cyc_gap) if cyc_gap is not None else (GPU_CYCLE_GAP_S if gpu_host else 0.0),
    )


def starts_cycle(prev_cycle: Optional[int], cycle: int) -> bool:
    """A job begins a new repetition when its cycle number is above the previous job's: between the
    rounds of interleaved/shuffled orders (AB|AB), between the repeats of one config in sequential
    order (A|A|A B|B|B); not where sequential order moves on to the next config (A2 → B0)."""
    return prev_cycle is not None and cycle > prev_cycle


def gap_before(prev_cycle: Optional[int], cycle: int, gaps: Gaps) -> float:
    """Seconds to wait before a job: none before the first, the cycle gap before a new repetition,
    else the config gap."""
    if prev_cycle is None:
        return 0.0
    return gaps.cycle_gap_s if starts_cycle(prev_cycle, cycle) else gaps.config_gap_s


def gpu_host() -> bool:
    """True when NVML sees at least one GPU (cheap; no torch import)."""
    from llem.device import gpu_host as _gpu_host

    return _gpu_host()
