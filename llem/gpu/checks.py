"""Range checks of `gpu.*` and `study.gaps` / `study.cool.*` that need no device (pure): exit 2 before load.
Checks against the device (its limits, supported clocks, permission) are in llem.gpu.apply."""

from __future__ import annotations

from typing import Any

PERSISTENCE = ("leave", "on")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def clock_range(value: Any) -> tuple[int, int] | None | str:
    """gpu.sm_clock_mhz / mem_clock_mhz → (min, max) MHz, None (leave), or what is wrong with it."""
    if value is None:
        return None
    if _number(value):
        if value <= 0:
            return "a positive number of MHz"
        return int(value), int(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        items = list(value)
        if len(items) == 2 and all(_number(x) and x > 0 for x in items) and items[0] <= items[1]:
            return int(items[0]), int(items[1])
    return "null, a positive number of MHz, or [min, max] with 0 < min <= max"


def check_gpu_config(c: Any, cfg: Any) -> None:
    g = getattr(cfg, "gpu", None)
    if g is None:
        return
    if g.power_limit_w is not None and (not _number(g.power_limit_w) or g.power_limit_w <= 0):
        c.add("gpu.power_limit_w", g.power_limit_w, "null (leave as is) or a positive number of watts")
    sm = clock_range(g.sm_clock_mhz)
    if isinstance(sm, str):
        c.add("gpu.sm_clock_mhz", g.sm_clock_mhz, sm)
    mem = clock_range(g.mem_clock_mhz)
    if isinstance(mem, str):
        c.add("gpu.mem_clock_mhz", g.mem_clock_mhz, mem.replace(", or [min, max] with 0 < min <= max", ""))
    elif mem is not None and mem[0] != mem[1]:
        c.add("gpu.mem_clock_mhz", g.mem_clock_mhz, "null or one supported memory clock in MHz")
    c.one_of("gpu.persistence", g.persistence, PERSISTENCE)


def check_study_gaps(c: Any, cfg: Any) -> None:
    s = cfg.study
    if not (isinstance(s.gaps, bool) or s.gaps in ("adaptive", "fixed")):
        c.add("study.gaps", s.gaps, "true (adaptive on GPU hosts unless a gap is set), adaptive, fixed or false")
    cool = s.cool
    for key, lo in (("temp_c", 0.0), ("power_w", 0.0), ("max_s", 0.0)):
        v = getattr(cool, key)
        if not _number(v) or v < lo:
            c.add(f"study.cool.{key}", v, f"a number >= {lo:g}")
    if not _number(cool.poll_s) or cool.poll_s <= 0:
        c.add("study.cool.poll_s", cool.poll_s, "a number > 0")
