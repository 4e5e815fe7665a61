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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem.energy.base import Meter
from llem.io import atomic_write_json

SKIP_METERS = {"codecarbon": "codecarbon reports estimates; no baseline is subtracted from them"}


@dataclass
class BaselineDevice:
    """One device's idle power: the cache file's entry (`power_w` ... `identity`), its age and whether it came
    from the cache; for GPUs, after `context_baseline`, both idle powers and which one `power_w` is."""

    power_w: float
    kind: str | None = None
    meter: str | None = None
    measured_at_unix: float | None = None
    duration_s: float | None = None
    identity: str | None = None  # the meter's device identity (GPU UUID, host + zone); None: not cached
    age_s: float | None = None
    cached: bool | None = None
    idle_w_no_context: float | None = None  # the context fields: written once `power_basis` is set
    idle_w_with_context: float | None = None
    power_basis: str | None = None  # "with_context" | "no_context"
    context_duration_s: float | None = None  # written only with a with-context figure

    CACHE_KEYS = ("power_w", "kind", "meter", "measured_at_unix", "duration_s", "identity")

    def cache_entry(self) -> dict[str, Any]:
        """The cache file's content (no age, no context: those are this job's)."""
        return {k: getattr(self, k) for k in self.CACHE_KEYS}

    def as_dict(self) -> dict[str, Any]:
        out = {**self.cache_entry(), "age_s": self.age_s, "cached": self.cached}
        if self.power_basis is not None:
            out.update(idle_w_no_context=self.idle_w_no_context, idle_w_with_context=self.idle_w_with_context,
                       power_basis=self.power_basis)
            if self.context_duration_s is not None:
                out["context_duration_s"] = self.context_duration_s
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineDevice:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Baseline:
    """The result's `energy.baseline` block: idle power per device (`devices`), asked duration and TTL, notes."""

    duration_s: float | None = None
    ttl_s: float | None = None
    devices: dict[str, BaselineDevice] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s, "ttl_s": self.ttl_s,
                "devices": {d: e.as_dict() for d, e in self.devices.items()}, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        return cls(data.get("duration_s"), data.get("ttl_s"),
                   {d: BaselineDevice.from_dict(e) for d, e in (data.get("devices") or {}).items()},
                   list(data.get("notes") or []))


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    base = Path(root or os.environ.get("LLEM_CACHE") or Path.home() / ".cache" / "llem")
    return base / "energy" / "baseline"


def cache_file(folder: Path, meter: str, identity: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity)[:80]
    digest = hashlib.sha1(identity.encode()).hexdigest()[:8]
    return folder / f"{meter}-{safe}-{digest}.json"


def _load(path: Path) -> BaselineDevice | None:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("power_w"), (int, float)) or not isinstance(data.get("measured_at_unix"),
                                                                                (int, float)):
            return None
        return BaselineDevice.from_dict({k: data.get(k) for k in BaselineDevice.CACHE_KEYS})
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def measure_baselines(meters: Sequence[Meter], duration_s: float, ttl_s: float,
                      folder: str | os.PathLike[str] | None = None, now: Callable[[], float] = time.time,
                      wait: Callable[[float], None] | None = None) -> Baseline:
    """Idle power per device for every measuring meter: cached where fresh, else measured for `duration_s`.

    Returns the result's `baseline` block (`Baseline.as_dict()` writes it).
    """
    folder = Path(folder) if folder is not None else cache_dir()
    wait = wait or (lambda s: threading.Event().wait(s))
    block = Baseline(duration_s, ttl_s)
    for meter in meters:
        if not meter.measures:
            continue
        if meter.name in SKIP_METERS:
            block.notes.append(f"{meter.name}: {SKIP_METERS[meter.name]}")
            continue
        ids = meter.identities()
        t = now()
        fresh = {}
        for device, identity in ids.items():
            entry = _load(cache_file(folder, meter.name, identity))
            # Reuse while fresh, and only if it idled at least (about) as long as asked for now.
            if entry and 0 <= t - (entry.measured_at_unix or 0) < ttl_s and (entry.duration_s or 0) >= 0.9 * duration_s:
                fresh[device] = entry
        if ids and len(fresh) == len(ids):
            for device, entry in fresh.items():
                entry.age_s, entry.cached = t - (entry.measured_at_unix or 0), True
                block.devices[device] = entry
            continue
        try:
            meter.start()
            wait(duration_s)
            reading = meter.stop()
        except Exception as e:  # a failed baseline leaves raw figures intact; say why adjusted ones are missing
            block.notes.append(f"{meter.name}: baseline failed: {type(e).__name__}: {e}")
            continue
        if not reading.measured or reading.duration_s <= 0:
            block.notes.append(f"{meter.name}: baseline not measured: {reading.reason}")
            continue
        t = now()
        for d in reading.devices:
            if d.estimate:
                continue
            entry = BaselineDevice(d.energy_j / reading.duration_s, d.kind, meter.name, t, reading.duration_s,
                                   ids.get(d.device), age_s=0.0, cached=False)
            if d.device in ids:
                try:
                    atomic_write_json(cache_file(folder, meter.name, ids[d.device]), entry.cache_entry())
                except OSError as e:
                    block.notes.append(f"{d.device}: baseline not cached ({e})")
            else:
                block.notes.append(f"{d.device}: baseline not cached (the meter gives no device identity)")
            block.devices[d.device] = entry
    return block


def adjusted_j(raw_j: float, power_w: float, window_s: float) -> float:
    """Energy above idle: raw − baseline power × window time (may be < 0 when the baseline is wrong)."""
    return raw_j - power_w * window_s


def baseline_for(meters: Sequence[Meter], cfg: Any, cache_root: str | None = None) -> Baseline | None:
    """The job's baseline step (before model load): None when `energy.baseline_s` is 0 or nothing measures."""
    if cfg.baseline_s <= 0 or not any(m.measures for m in meters):
        return None
    return measure_baselines(meters, cfg.baseline_s, cfg.baseline_ttl_s, cache_dir(cache_root))


CONTEXT_IDLE_MAX_S = 5.0  # the with-context idle measurement: min(energy.baseline_s, this)


def context_baseline(meters: Sequence[Meter], cfg: Any, baseline: Baseline | None,
                     wait: Callable[[float], None] | None = None) -> Baseline | None:
    """Idle GPU power with the job's CUDA context loaded (after model load, before warmup).

    A GPU holding a context idles higher than one without (clocks and memory stay up), so the power the
    job would draw doing nothing is this one, not the pre-load baseline. For every GPU the pre-load
    baseline measured, this adds `idle_w_no_context` and `idle_w_with_context` and makes the latter the
    `power_w` that adjusted energy subtracts. Never cached: the context is this job's. Skipped when
    `energy.baseline_s` is 0 or no GPU was baselined; a failure keeps the pre-load figure and says why.
    """
    if baseline is None or cfg.baseline_s <= 0:
        return baseline
    gpus = {d for d, e in baseline.devices.items() if e.kind == "gpu"}
    if not gpus:
        return baseline
    duration_s = min(cfg.baseline_s, CONTEXT_IDLE_MAX_S)
    wait = wait or (lambda s: threading.Event().wait(s))
    measured: dict[str, float] = {}
    for meter in meters:
        if not meter.measures or meter.name in SKIP_METERS:
            continue
        if not any(baseline.devices[d].meter == meter.name for d in gpus):
            continue
        try:
            meter.start()
            wait(duration_s)
            reading = meter.stop()
        except Exception as e:
            baseline.notes.append(f"{meter.name}: idle with context failed ({type(e).__name__}: {e}); "
                                     "adjusted energy uses the idle power before load")
            continue
        if not reading.measured or reading.duration_s <= 0:
            baseline.notes.append(f"{meter.name}: idle with context not measured: {reading.reason}")
            continue
        for d in reading.devices:
            if d.device in gpus and not d.estimate:
                measured[d.device] = d.energy_j / reading.duration_s
    for dev in gpus:
        entry = baseline.devices[dev]
        if entry.idle_w_no_context is None:
            entry.idle_w_no_context = entry.power_w
        entry.idle_w_with_context = measured.get(dev)
        if dev in measured:
            entry.power_w = measured[dev]
            entry.power_basis = "with_context"
            entry.context_duration_s = duration_s
        else:
            entry.power_basis = "no_context"
    return baseline
