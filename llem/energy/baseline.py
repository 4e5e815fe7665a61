"""Idle (baseline) power, measured before the model loads and cached per device with a time-to-live.

A job's energy includes what the device draws doing nothing; subtracting `baseline power × window
time` gives the energy the workload itself added. Both raw and adjusted figures are reported, with
the baseline's age, since an old or wrong baseline skews the adjusted ones (never the raw ones).

GPUs are measured twice: before any CUDA context exists (cached, below) and again after the model
loaded with the job's context idle (`context_baseline`); adjusted energy subtracts the latter.

Cache: `<llem cache>/energy/baseline/<meter>-<device identity>.json`, one file per device
(GPU UUID, or host + RAPL zone), reused while younger than `energy.baseline_ttl_s` and measured
over at least (about) `energy.baseline_s`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llem.energy.base import Meter
from llem.io import atomic_write_json

SKIP_METERS = {"codecarbon": "codecarbon reports estimates; no baseline is subtracted from them"}


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    base = Path(root or os.environ.get("LLEM_CACHE") or Path.home() / ".cache" / "llem")
    return base / "energy" / "baseline"


def cache_file(folder: Path, meter: str, identity: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity)[:80]
    digest = hashlib.sha1(identity.encode()).hexdigest()[:8]
    return folder / f"{meter}-{safe}-{digest}.json"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data.get("power_w"), (int, float)) else None
    except (OSError, ValueError, AttributeError):
        return None


def measure_baselines(meters: Sequence[Meter], duration_s: float, ttl_s: float,
                      folder: str | os.PathLike[str] | None = None, now: Callable[[], float] = time.time,
                      wait: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Idle power per device for every measuring meter: cached where fresh, else measured for `duration_s`.

    Returns the result's `baseline` block: {duration_s, ttl_s, devices: {device: {power_w, kind, meter,
    age_s, cached, measured_at_unix, duration_s}}, notes}.
    """
    folder = Path(folder) if folder is not None else cache_dir()
    wait = wait or (lambda s: threading.Event().wait(s))
    block: dict[str, Any] = {"duration_s": duration_s, "ttl_s": ttl_s, "devices": {}, "notes": []}
    for meter in meters:
        if not meter.measures:
            continue
        if meter.name in SKIP_METERS:
            block["notes"].append(f"{meter.name}: {SKIP_METERS[meter.name]}")
            continue
        ids = meter.identities()
        t = now()
        fresh = {}
        for device, identity in ids.items():
            entry = _load(cache_file(folder, meter.name, identity))
            # Reuse while fresh, and only if it idled at least (about) as long as asked for now.
            if entry and 0 <= t - entry["measured_at_unix"] < ttl_s and entry.get("duration_s", 0) >= 0.9 * duration_s:
                fresh[device] = entry
        if ids and len(fresh) == len(ids):
            for device, entry in fresh.items():
                block["devices"][device] = {**entry, "age_s": t - entry["measured_at_unix"], "cached": True}
            continue
        try:
            meter.start()
            wait(duration_s)
            reading = meter.stop()
        except Exception as e:  # a failed baseline leaves raw figures intact; say why adjusted ones are missing
            block["notes"].append(f"{meter.name}: baseline failed: {type(e).__name__}: {e}")
            continue
        if not reading.measured or reading.duration_s <= 0:
            block["notes"].append(f"{meter.name}: baseline not measured: {reading.reason}")
            continue
        t = now()
        for d in reading.devices:
            if d.estimate:
                continue
            entry = {"power_w": d.energy_j / reading.duration_s, "kind": d.kind, "meter": meter.name,
                     "measured_at_unix": t, "duration_s": reading.duration_s, "identity": ids.get(d.device)}
            if d.device in ids:
                try:
                    atomic_write_json(cache_file(folder, meter.name, ids[d.device]), entry)
                except OSError as e:
                    block["notes"].append(f"{d.device}: baseline not cached ({e})")
            else:
                block["notes"].append(f"{d.device}: baseline not cached (the meter gives no device identity)")
            block["devices"][d.device] = {**entry, "age_s": 0.0, "cached": False}
    return block


def adjusted_j(raw_j: float, power_w: float, window_s: float) -> float:
    """Energy above idle: raw − baseline power × window time (may be < 0 when the baseline is wrong)."""
    return raw_j - power_w * window_s


def baseline_for(meters: Sequence[Meter], cfg: Any, cache_root: str | None = None) -> dict[str, Any] | None:
    """The job's baseline step (before model load): None when `energy.baseline_s` is 0 or nothing measures."""
    if cfg.baseline_s <= 0 or not any(m.measures for m in meters):
        return None
    return measure_baselines(meters, cfg.baseline_s, cfg.baseline_ttl_s, cache_dir(cache_root))


CONTEXT_IDLE_MAX_S = 5.0  # the with-context idle measurement: min(energy.baseline_s, this)


def context_baseline(meters: Sequence[Meter], cfg: Any, baseline: dict[str, Any] | None,
                     wait: Callable[[float], None] | None = None) -> dict[str, Any] | None:
    """Idle GPU power with the job's CUDA context loaded (after model load, before warmup).

    A GPU holding a context idles higher than one without (clocks and memory stay up), so the power the
    job would draw doing nothing is this one, not the pre-load baseline. For every GPU the pre-load
    baseline measured, this adds `idle_w_no_context` and `idle_w_with_context` and makes the latter the
    `power_w` that adjusted energy subtracts. Never cached: the context is this job's. Skipped when
    `energy.baseline_s` is 0 or no GPU was baselined; a failure keeps the pre-load figure and says why.
    """
    if baseline is None or cfg.baseline_s <= 0:
        return baseline
    gpus = {d for d, e in baseline["devices"].items() if e.get("kind") == "gpu"}
    if not gpus:
        return baseline
    duration_s = min(cfg.baseline_s, CONTEXT_IDLE_MAX_S)
    wait = wait or (lambda s: threading.Event().wait(s))
    measured: dict[str, float] = {}
    for meter in meters:
        if not meter.measures or meter.name in SKIP_METERS:
            continue
        if not any(baseline["devices"][d].get("meter") == meter.name for d in gpus):
            continue
        try:
            meter.start()
            wait(duration_s)
            reading = meter.stop()
        except Exception as e:
            baseline["notes"].append(f"{meter.name}: idle with context failed ({type(e).__name__}: {e}); "
                                     "adjusted energy uses the idle power before load")
            continue
        if not reading.measured or reading.duration_s <= 0:
            baseline["notes"].append(f"{meter.name}: idle with context not measured: {reading.reason}")
            continue
        for d in reading.devices:
            if d.device in gpus and not d.estimate:
                measured[d.device] = d.energy_j / reading.duration_s
    for dev in gpus:
        entry = baseline["devices"][dev]
        entry["idle_w_no_context"] = entry.get("idle_w_no_context", entry["power_w"])
        entry["idle_w_with_context"] = measured.get(dev)
        if dev in measured:
            entry["power_w"] = measured[dev]
            entry["power_basis"] = "with_context"
            entry["context_duration_s"] = duration_s
        else:
            entry["power_basis"] = "no_context"
    return baseline
