"""GPU settings inside one job (`llem.job.run_job`): what the launcher applied for it (LLEM_GPU_SETTINGS),
or — for a single run or another Hydra launcher — apply here before the model loads and restore in the
job's `finally`. Fills the result's `gpu_settings` block: requested/enforced/previous per GPU, the clocks
seen in the window's timeseries, the adaptive gap's wait and start temperature."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from llem.gpu.apply import APPLIED_ENV, Applied, apply, request_of, restore_applied

COOL_ENV = "LLEM_GPU_COOL"  # set by the launcher: the adaptive gap before this job (JSON)


class JobSettings:
    def __init__(self) -> None:
        self.applied: Applied | None = None  # applied by this process (restored by end())
        self.block: dict[str, Any] = {}

    def begin(self, cfg: Any, owner: str) -> list[str]:
        """Before the model loads; raises GpuSettingsError (exit 2). Returns warnings for the result."""
        req = request_of(getattr(cfg, "gpu", None))
        cool = os.environ.get(COOL_ENV)
        if cool:
            self.block["cool"] = json.loads(cool)
        given = os.environ.get(APPLIED_ENV)
        if given:  # the launcher applied them (and restores them, whatever happens to this process)
            self.block.update(json.loads(given), applied_by="launcher")
        elif not req.empty:
            self.applied = apply(req, None, owner)
            self.block.update(self.applied.as_dict(), applied_by="job")
        return list(self.block.get("warnings", []))

    def seen(self, readings: list[Any]) -> None:
        rows = [r for reading in readings for r in (reading.timeseries or [])]
        if rows:
            self.block["seen"] = clocks_seen(rows)

    def end(self) -> list[str]:
        """Restore what this process applied; returns warnings (a failed restore keeps its record)."""
        applied, self.applied = self.applied, None
        if applied is None:
            return []
        failed = restore_applied(applied)
        self.block["restored"] = not failed
        if failed:
            line = (f"GPU settings could not be put back: {'; '.join(failed)}; the next llem run retries "
                    "(or `python -m llem.gpu restore`)")
            print(f"llem: warning: {line}", file=sys.stderr, flush=True)
            return [line]
        return []


def clocks_seen(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per device: mean SM / memory clock and power in the window, and every clock event (throttle) reason
    seen, from the meter's timeseries rows."""
    from llem.device.nvidia import reason_names

    out: dict[str, dict[str, Any]] = {}
    for dev in sorted({str(r.get("device")) for r in rows}):
        mine = [r for r in rows if str(r.get("device")) == dev]

        def mean(key: str, mine: list[dict[str, Any]] = mine) -> float | None:
            vals = [float(r[key]) for r in mine if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else None

        mask = 0
        for r in mine:
            mask |= int(r.get("clock_event_reasons") or 0)
        out[dev] = {"sm_clock_mhz_mean": mean("sm_clock_mhz"), "mem_clock_mhz_mean": mean("mem_clock_mhz"),
                    "power_w_mean": mean("power_w"), "temperature_c_mean": mean("temperature_c"),
                    "throttle_reasons": reason_names(mask), "samples": len(mine)}
    return out
