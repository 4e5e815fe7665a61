"""CPU package and DRAM energy from Linux powercap RAPL counters (Intel, and AMD Zen via the same driver).

Zones live under `<energy.rapl.root>` (default /sys/class/powercap) as `intel-rapl:<pkg>` (name
`package-N`) with sub-zones `intel-rapl:<pkg>:<n>` (names `core`, `uncore`, `dram`); AMD CPUs expose
`package-N` and `core` only. `energy_uj` is a wrapping microjoule counter; it wraps at
`max_energy_range_uj`, so a sampler thread reads it at `energy.sample_hz` and adds the range at
every wrap (one wrap takes minutes even at hundreds of watts). The duplicate `intel-rapl-mmio`
zones are skipped so a package is never counted twice.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable, Sampling
from llem.energy.sampler import Sampler

# A counter that has not moved for this long is frozen, never a 0 J reading. RAPL advances about every
# 1 ms (`update_period_s`) in steps of one energy unit (Intel 61 µJ, AMD 15.3 µJ); a package or DRAM
# draws watts even idle, so 50 ms (50 updates) moves it by tens of millijoules. Constant counters are
# what VMs and some containers expose (powercap files with no hardware behind them) and what a firmware
# or driver fault leaves. A shorter window that saw no change cannot tell, and is not counted either.
STUCK_AFTER_S = 0.05
# Kinds whose frozen counter would enter the totals (cpu_j, dram_j) or be read as a device's energy.
_COUNTED = ("cpu", "dram", "psys")

_ZONE = re.compile(r"^(?:intel|amd)-rapl:(\d+)(?::(\d+))?$")
# Sub-zone names → result kind. core/uncore are parts of the package: listed, never added to cpu_j.
_SUB_KINDS = {"dram": "dram", "core": "cpu_core", "uncore": "cpu_uncore"}

FIX_PERMISSIONS = (
    "RAPL counters are readable by root only on Linux >= 5.10 (CVE-2020-8694). Either run as root, or grant "
    "read access until the next reboot: `sudo chmod a+r {root}/intel-rapl:*/energy_uj "
    "{root}/intel-rapl:*:*/energy_uj` (a udev rule or systemd-tmpfiles entry makes it permanent). In a "
    "container, mount the host's /sys/class/powercap and point energy.rapl.root at it. Or measure without "
    "RAPL: energy.cpu=false (auto) or energy=nvml|none."
)


@dataclass
class RaplZone:
    zone_id: str  # e.g. intel-rapl:0:2
    path: Path
    name: str  # package-0, dram, core, psys, ...
    kind: str  # cpu | dram | cpu_core | cpu_uncore | psys
    device: str  # cpu:package-0, dram:package-0, ...
    max_range_uj: int


def discover(root: str | os.PathLike[str]) -> list[RaplZone]:
    """Every RAPL zone under `root` (flat sysfs symlinks or a nested tree), deduplicated by zone id."""
    root = Path(root)
    found: dict[str, Path] = {}
    for pattern in ("*rapl:*", "*rapl*/*rapl:*", "*rapl*/*rapl:*/*rapl:*"):
        for p in sorted(glob.glob(str(root / pattern))):
            zone_id = os.path.basename(p)
            if _ZONE.match(zone_id) and os.path.isfile(os.path.join(p, "energy_uj")):
                found.setdefault(zone_id, Path(p))
    names: dict[str, str] = {}
    for zone_id, path in found.items():
        try:
            names[zone_id] = (path / "name").read_text().strip()
        except OSError:
            names[zone_id] = zone_id
    zones = []
    for zone_id, path in sorted(found.items(), key=lambda kv: [int(x) for x in _ZONE.match(kv[0]).groups() if x]):
        name = names[zone_id]
        m = _ZONE.match(zone_id)
        assert m is not None
        if m.group(2) is None:  # top-level zone: a package (or psys/dram on some platforms)
            if name.startswith("package") or name == "package":
                kind, device = "cpu", f"cpu:{name if name != 'package' else 'package-' + m.group(1)}"
            elif name == "dram":
                kind, device = "dram", f"dram:{zone_id}"
            else:
                kind, device = name, f"{name}:{zone_id}"
        else:
            parent = names.get(zone_id.rsplit(":", 1)[0], f"package-{m.group(1)}")
            kind = _SUB_KINDS.get(name, f"cpu_{name}")
            device = f"{'dram' if kind == 'dram' else name}:{parent}"
        try:
            max_range = int((path / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            max_range = 2**32  # conservative: 32-bit µJ counter
        zones.append(RaplZone(zone_id, path, name, kind, device, max_range))
    return zones


def read_uj(zone: RaplZone) -> int:
    with open(zone.path / "energy_uj") as f:
        return int(f.read().strip())


def wrapped_delta_uj(prev: int, cur: int, max_range_uj: int) -> int:
    """Counter advance from `prev` to `cur`, across one wrap at `max_range_uj` if cur < prev."""
    return cur - prev if cur >= prev else cur + max_range_uj - prev


class RaplMeter(Meter):
    name = "rapl"
    update_period_s = 0.001  # RAPL MSRs update about every millisecond

    @classmethod
    def from_config(cls, cfg: Any) -> RaplMeter:
        return cls(cfg.rapl.root, cfg.sample_hz)

    def __init__(self, root: str = "/sys/class/powercap", sample_hz: float = 10.0) -> None:
        self.root = root
        self.sample_hz = sample_hz
        self.zones: list[RaplZone] = []
        self._sampler: Sampler | None = None
        self._last: dict[str, int] = {}
        self._cum_uj: dict[str, int] = {}
        self._wraps: dict[str, int] = {}
        self._first: dict[str, int] = {}
        self._t0 = 0.0

    def probe(self) -> None:
        if self.zones:
            return
        if not os.path.isdir(self.root):
            raise MeterUnavailable(f"no RAPL powercap tree at energy.rapl.root={self.root} (not a Linux host with "
                                   "intel_rapl loaded, or a container without /sys/class/powercap mounted)")
        zones = discover(self.root)
        if not any(z.kind == "cpu" for z in zones):
            raise MeterUnavailable(f"no RAPL package zones (intel-rapl:N/energy_uj) under energy.rapl.root={self.root}")
        unreadable = []
        for z in zones:
            try:
                read_uj(z)
            except PermissionError:
                unreadable.append(str(z.path / "energy_uj"))
            except (OSError, ValueError) as e:
                raise MeterUnavailable(f"cannot read {z.path / 'energy_uj'}: {e}") from e
        if unreadable:
            raise MeterUnavailable(f"RAPL energy counters are not readable ({', '.join(unreadable[:3])}"
                                   f"{' …' if len(unreadable) > 3 else ''}: permission denied). "
                                   + FIX_PERMISSIONS.format(root=self.root))
        self.zones = zones

    def describe(self) -> str:
        return "rapl: " + ", ".join(f"{z.device} ({z.zone_id})" for z in self.zones)

    def identities(self) -> dict[str, str]:
        host = socket.gethostname()  # the root is part of it: a mounted or fake tree is another device
        return {z.device: f"{host}:{os.path.realpath(self.root)}/{z.zone_id}/{z.name}" for z in self.zones}

    def _read(self, t: float) -> list[dict[str, Any]]:
        rows = []
        for z in self.zones:
            cur = read_uj(z)
            prev = self._last.get(z.zone_id)
            if prev is not None:
                if cur < prev:
                    self._wraps[z.zone_id] = self._wraps.get(z.zone_id, 0) + 1
                self._cum_uj[z.zone_id] += wrapped_delta_uj(prev, cur, z.max_range_uj)
            else:
                self._cum_uj[z.zone_id] = 0
                self._first[z.zone_id] = cur
            self._last[z.zone_id] = cur
            rows.append({"t_s": t, "zone": z.zone_id, "energy_j": self._cum_uj[z.zone_id] / 1e6})
        return rows

    def start(self) -> None:
        self.probe()
        self._last, self._cum_uj, self._wraps, self._first = {}, {}, {}, {}
        self._sampler = Sampler(self._read, self.sample_hz, name="llem-rapl-sampler")
        self._sampler.start()
        self._t0 = self._sampler.rows[0]["t_s"] if self._sampler.rows else 0.0

    def stop(self) -> EnergyReading:
        assert self._sampler is not None, "stop() without start()"
        sampler, self._sampler = self._sampler, None
        rows = sampler.stop()
        devices, series, warnings, frozen = [], [], [], []
        for z in self.zones:
            zr = [r for r in rows if r["zone"] == z.zone_id]
            if len(zr) < 2:
                continue
            energy = zr[-1]["energy_j"]
            duration = zr[-1]["t_s"] - zr[0]["t_s"]
            if self._cum_uj.get(z.zone_id) == 0:  # not one µJ, no wrap, over the whole window
                frozen.append(self._frozen(z, duration, warnings))
                continue
            prev = None
            for r in zr:
                power = None if prev is None or r["t_s"] <= prev["t_s"] else \
                    (r["energy_j"] - prev["energy_j"]) / (r["t_s"] - prev["t_s"])
                series.append({"t_s": r["t_s"], "elapsed_s": r["t_s"] - self._t0, "meter": "rapl",
                               "device": z.device, "kind": z.kind, "power_w": power, "energy_j": r["energy_j"]})
                prev = r
            max_gap = max(b["t_s"] - a["t_s"] for a, b in zip(zr, zr[1:]))
            if duration > 0 and energy / duration * max_gap > 0.5 * z.max_range_uj / 1e6:
                warnings.append(f"{z.device}: samples {max_gap:.3f} s apart at {energy / duration:.0f} W come close to "
                                f"the counter's wrap ({z.max_range_uj / 1e6:.0f} J): a wraparound may have been missed; "
                                "raise energy.sample_hz")
            devices.append(DeviceEnergy(z.device, z.kind, energy, "rapl_counter", {
                "zone": z.zone_id, "name": z.name, "samples": len(zr), "wraparounds": self._wraps.get(z.zone_id, 0),
                "max_energy_range_uj": z.max_range_uj, "duration_s": duration,
                "counter_start_uj": self._first.get(z.zone_id), "counter_end_uj": self._last.get(z.zone_id),
                "mean_power_w": energy / duration if duration > 0 else None,
            }))
        if sampler.errors:
            warnings.append(f"rapl sampler: {sampler.errors} failed reads (first: {sampler.first_error})")
        measured = any(d.kind == "cpu" for d in devices)
        samples = [d.extra["samples"] for d in devices]
        reason = None
        if not measured:
            stuck = [f["device"] for f in frozen if f["kind"] == "cpu"]
            reason = (f"RAPL package counter(s) did not move during the window ({', '.join(stuck)}): "
                      "frozen counters are not 0 J; see warnings" if stuck else "RAPL returned no readings")
        return EnergyReading(
            meter=self.name, measured=measured, duration_s=(rows[-1]["t_s"] - rows[0]["t_s"]) if rows else 0.0,
            devices=devices, reason=reason, warnings=warnings,
            timeseries=series, update_period_s=self.update_period_s,
            sampling=Sampling(self.sample_hz, min(samples) if samples else 0, self._t0,
                              rows[-1]["t_s"] if rows else self._t0),
            details={"root": self.root, "frozen_zones": frozen},
        )

    def _frozen(self, z: RaplZone, duration: float, warnings: list[str]) -> dict[str, Any]:
        """A zone whose counter never moved: left out of `devices` (so no 0 J enters a total), warned
        about when its kind would count; core/uncore (parts of the package, e.g. an idle power-gated
        integrated GPU) are only listed in `frozen_zones`."""
        value = self._first.get(z.zone_id)
        long_enough = duration >= STUCK_AFTER_S
        if z.kind in _COUNTED:
            path = z.path / "energy_uj"
            if long_enough:
                warnings.append(f"{z.device}: RAPL counter {path} stayed at {value} µJ for {duration:.3f} s (it "
                                f"updates about every {self.update_period_s * 1e3:g} ms): a frozen counter, not "
                                "measured (not 0 J). Usual causes: a VM or container exposing powercap without "
                                "the hardware, or a firmware/driver fault; compare two reads of the file a second "
                                "apart, or measure without RAPL (energy.cpu=false, energy=nvml|none)")
            else:
                warnings.append(f"{z.device}: RAPL counter {path} did not move in a {duration * 1e3:.1f} ms window, "
                                f"too short to tell a frozen counter (< {STUCK_AFTER_S * 1e3:g} ms) from none: not "
                                "measured; measure more prompts or longer outputs")
        return {"device": z.device, "kind": z.kind, "zone": z.zone_id, "counter_uj": value,
                "duration_s": duration, "frozen": long_enough}

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
