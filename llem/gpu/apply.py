"""Apply `gpu.*` to a job's own GPUs and put them back: check → record → apply → read back → restore.

Every device call goes through llem.device's GPU API (`llem.device.gpu_session()`: NVIDIA, else AMD; the
`GPU` settings methods). Safety rules (docs/gpu-settings.md):
1. nothing is changed before every requested value was checked on every job GPU (constraints, supported
   clocks, permission, no other live llem holding the GPU); a problem is one `llem:` line, exit 2;
2. the restore record (llem.gpu.records) is on disk before the first change;
3. whatever ends the job, the applier restores and deletes the record; a record whose process is gone is
   restored by the next llem run on the host (`repair_stale`), or on demand (`python -m llem.gpu restore`).
Locked clocks cannot be read back from NVML: restoring them means resetting them (the driver's default).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from llem.errors import UserError
from llem.gpu import records
from llem.gpu.checks import clock_range

APPLIED_ENV = "LLEM_GPU_SETTINGS"  # set by the launcher for the job process: what it applied (JSON)
TOLERANCE_W = 0.5  # enforced limit further than this from the requested one: a warning


class GpuSettingsError(UserError):
    """A GPU setting cannot be applied (out of range, no permission, GPU held by another llem run)."""


@dataclass(frozen=True)
class Request:
    """What `gpu.*` asks for, normalised."""

    power_limit_w: float | None = None
    sm_clock_mhz: tuple[int, int] | None = None
    mem_clock_mhz: tuple[int, int] | None = None
    persistence: str = "leave"

    @property
    def empty(self) -> bool:
        return self.power_limit_w is None and self.sm_clock_mhz is None and self.mem_clock_mhz is None \
            and self.persistence != "on"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("sm_clock_mhz", "mem_clock_mhz"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


def request_of(node: Any) -> Request:
    """`cfg.gpu` (dataclass, DictConfig or dict; None = nothing) → Request. Ranges were checked before."""
    if node is None:
        return Request()
    def get(key: str) -> Any:
        return node.get(key) if hasattr(node, "keys") else getattr(node, key, None)

    sm, mem, w = clock_range(get("sm_clock_mhz")), clock_range(get("mem_clock_mhz")), get("power_limit_w")
    return Request(float(w) if w is not None else None, sm if isinstance(sm, tuple) else None,
                   mem if isinstance(mem, tuple) else None, str(get("persistence") or "leave"))


def _label(g: Any) -> str:
    return f"GPU {g.index} ({g.name}, {g.uuid})"


class JobGpus(list):  # type: ignore[type-arg]
    """The job's GPU objects; `.mig`: indices of those the job uses through a MIG instance."""

    mig: set[int]


@contextlib.contextmanager
def job_gpus(refs: Sequence[str] | None, env: Mapping[str, str] | None = None) -> Iterator[list[Any]]:
    """The physical GPUs a job with these CUDA_VISIBLE_DEVICES entries uses (None: the environment's; unset:
    every GPU), as llem.device GPU objects of the first vendor that answers, each once (MIG: the parent)."""
    from llem.device import gpu_session
    from llem.device.common import DeviceError

    job_env = dict(os.environ if env is None else env)
    if refs:
        job_env["CUDA_VISIBLE_DEVICES"] = ",".join(refs)
    job_env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # what the launcher and run_job set for jobs
    try:
        with gpu_session() as host:
            out, seen = JobGpus(), set()
            out.mig = set()
            for v in host.resolve_job(job_env).visible:
                if getattr(v, "mig_uuid", None):
                    out.mig.add(v.gpu.device.index if v.gpu.device is not None else v.gpu.nvml_index)
                if v.gpu.nvml_index not in seen and v.gpu.device is not None:
                    seen.add(v.gpu.nvml_index)
                    out.append(v.gpu.device)
            yield out
    except DeviceError as e:
        raise GpuSettingsError(f"gpu.* settings need the job's GPUs, but: {e}") from e


def held_by_others() -> dict[str, dict[str, Any]]:
    """GPU UUID → the live record of another llem process that changed it (two studies never fight)."""
    out = {}
    for _, rec in records.on_this_host():
        if rec.get("pid") != os.getpid() and records.alive(rec):
            for g in rec.get("gpus", []):
                out[str(g.get("uuid"))] = rec
    return out


def check(req: Request, gpus: Sequence[Any], held: Mapping[str, dict[str, Any]] | None = None) -> list[str]:
    """Every reason `req` cannot be applied to `gpus` (one line each; empty: fine). Changes nothing (the
    permission probe sets the power limit to the value it already has)."""
    from llem.device.common import DeviceCallError, DeviceNotSupported, DevicePermissionError

    if req.empty:
        return []
    if not gpus:
        return ["gpu.* settings were requested but the job has no GPU (the GPU library lists none it may use)"]
    problems: list[str] = []
    for g in gpus:
        label, before = _label(g), len(problems)
        if g.index in getattr(gpus, "mig", ()):
            problems.append(f"{label} is split into MIG instances and the job runs on one: its power limit and clocks "
                            "are shared by every instance, so llem does not change them; leave gpu.* at null")
            continue
        rec = (held or {}).get(str(g.uuid))
        if rec is not None:
            problems.append(f"{label}: its settings are held by another llem run (pid {rec.get('pid')}, "
                            f"{rec.get('owner')}, since {rec.get('created_at')}); two runs never change one GPU at once")
            continue
        try:
            if req.power_limit_w is not None:
                lo, hi = g.power_limit_constraints_w()
                if not lo - 1e-6 <= req.power_limit_w <= hi + 1e-6:
                    problems.append(f"gpu.power_limit_w={req.power_limit_w:g} is out of range for {label}: "
                                    f"allowed {lo:g} to {hi:g} W")
            if req.sm_clock_mhz is not None:
                clocks = g.supported_sm_clocks_mhz()
                lo_c, hi_c = min(clocks), max(clocks)
                if req.sm_clock_mhz[0] < lo_c or req.sm_clock_mhz[1] > hi_c:
                    problems.append(f"gpu.sm_clock_mhz={show_value(req.sm_clock_mhz)} is out of range for {label}: "
                                    f"allowed {lo_c} to {hi_c} MHz")
            if req.mem_clock_mhz is not None:
                mem = g.supported_mem_clocks_mhz()
                if req.mem_clock_mhz[0] not in mem:
                    problems.append(f"gpu.mem_clock_mhz={req.mem_clock_mhz[0]} is not a memory clock of {label}: "
                                    f"allowed one of {', '.join(map(str, mem))} MHz")
        except DeviceNotSupported as e:
            problems.append(f"{label} cannot take these settings: {e.detail}")
        except DeviceCallError as e:
            problems.append(f"{label}: reading its settings failed: {e.detail}")
        if len(problems) > before:
            continue
        try:  # permission: NVML has no "may I" query; setting the limit it already has changes nothing
            g.set_power_limit_w(g.power_limit_w())
        except DevicePermissionError as e:
            problems.append(f"{label}: changing its settings needs root (NVML NO_PERMISSION: {e.detail}); run llem "
                            "as root (e.g. sudo -E) or leave gpu.* at null")
        except DeviceCallError:
            pass  # no power limit on this GPU: the clock calls say it themselves when applied
    return problems


def show_value(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"[{r[0]},{r[1]}]"


@dataclass
class Applied:
    """What one application changed: its record (None when nothing was requested) and per-GPU facts."""

    record: Path | None
    requested: dict[str, Any]
    devices: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "devices": self.devices, "warnings": self.warnings,
                "record": str(self.record) if self.record else None,
                # flat per GPU (NVML index → value), so results tables get a column each
                "enforced_power_limit_w": {str(d["index"]): d["enforced"].get("power_limit_w") for d in self.devices},
                "previous_power_limit_w": {str(d["index"]): d["previous"].get("power_limit_w") for d in self.devices}}


def apply(req: Request, refs: Sequence[str] | None = None, owner: str = "", env: Mapping[str, str] | None = None
          ) -> Applied:
    """Check, record, apply and read back `req` on the job's GPUs; raises GpuSettingsError (nothing changed)."""
    from llem.device.common import DeviceCallError

    out = Applied(None, req.as_dict())
    if req.empty:
        return out
    with job_gpus(refs, env) as gpus:
        problems = check(req, gpus, held_by_others())
        if problems:
            raise GpuSettingsError("\n".join(problems))
        entries = []
        for g in gpus:
            prev: dict[str, Any] = {}
            changed = []
            if req.power_limit_w is not None:
                prev["power_limit_w"] = g.power_limit_w()
                changed.append("power_limit")
            if req.sm_clock_mhz is not None:
                changed.append("sm_clocks")
            if req.mem_clock_mhz is not None:
                changed.append("mem_clocks")
            if req.persistence == "on":
                prev["persistence"] = g.persistence_mode()
                changed.append("persistence")
            entries.append({"uuid": g.uuid, "index": g.index, "name": g.name, "previous": prev, "changed": changed})
        record = records.new_record(entries, owner)
        out.record = records.write(record)  # on disk before the first change
        try:
            for g in gpus:
                if req.power_limit_w is not None:
                    g.set_power_limit_w(req.power_limit_w)
                if req.sm_clock_mhz is not None:
                    g.set_locked_sm_clocks_mhz(*req.sm_clock_mhz)
                if req.mem_clock_mhz is not None:
                    g.set_locked_mem_clocks_mhz(*req.mem_clock_mhz)
                if req.persistence == "on":
                    g.set_persistence_mode(True)
        except DeviceCallError as e:
            _restore_gpus(gpus, record)
            records.remove(out.record)
            raise GpuSettingsError(f"GPU {g.index} ({g.uuid}): applying gpu.* failed: {e.detail}; "
                                   "its previous settings were put back") from e
        for g, entry in zip(gpus, entries):
            dev = {**entry, "requested": out.requested, "enforced": _read_back(g, req)}
            enforced = dev["enforced"].get("power_limit_w")
            if req.power_limit_w is not None and enforced is not None \
                    and abs(enforced - req.power_limit_w) > TOLERANCE_W:
                out.warnings.append(f"{_label(g)}: enforced power limit {enforced:g} W differs from the requested "
                                    f"gpu.power_limit_w={req.power_limit_w:g} W")
            out.devices.append(dev)
    return out


def _read_back(g: Any, req: Request) -> dict[str, Any]:
    from llem.device.common import DeviceCallError

    got: dict[str, Any] = {}
    for key, fn in (("power_limit_w", "enforced_power_limit_w"), ("persistence", "persistence_mode")):
        with contextlib.suppress(DeviceCallError):
            got[key] = getattr(g, fn)()
    if req.sm_clock_mhz is not None:  # NVML cannot read locked clocks back: the driver accepted these
        got["locked_sm_clock_mhz"] = list(req.sm_clock_mhz)
    if req.mem_clock_mhz is not None:
        got["locked_mem_clock_mhz"] = list(req.mem_clock_mhz)
    return got


def _restore_gpus(gpus: Sequence[Any], record: Mapping[str, Any]) -> list[str]:
    """Put back what `record` says was changed on these GPUs; returns what failed (empty: all put back)."""
    from llem.device.common import DeviceCallError

    by_uuid = {str(g.uuid): g for g in gpus}
    failed = []
    for entry in record.get("gpus", []):
        g = by_uuid.get(str(entry.get("uuid")))
        if g is None:
            failed.append(f"GPU {entry.get('uuid')} is not on this host any more")
            continue
        prev, changed = entry.get("previous", {}), entry.get("changed", [])
        steps = []
        if "power_limit" in changed:
            steps.append(("power limit", lambda g=g, w=prev["power_limit_w"]: g.set_power_limit_w(w)))
        if "sm_clocks" in changed:
            steps.append(("SM clocks", g.reset_locked_sm_clocks))
        if "mem_clocks" in changed:
            steps.append(("memory clocks", g.reset_locked_mem_clocks))
        if "persistence" in changed:
            steps.append(("persistence", lambda g=g, on=prev["persistence"]: g.set_persistence_mode(bool(on))))
        for what, step in steps:
            try:
                step()
            except DeviceCallError as e:
                failed.append(f"GPU {g.index} ({g.uuid}) {what}: {e.detail}")
    return failed


def describe(record: Mapping[str, Any]) -> str:
    parts = []
    for entry in record.get("gpus", []):
        prev = entry.get("previous", {})
        what = []
        for c in entry.get("changed", []):
            if c == "power_limit":
                what.append(f"power limit back to {prev.get('power_limit_w'):g} W")
            elif c == "persistence":
                what.append(f"persistence {'on' if prev.get('persistence') else 'off'}")
            else:
                what.append(f"{c.replace('_', ' ')} reset")
        parts.append(f"GPU {entry.get('index')} ({entry.get('uuid')}): {', '.join(what) or 'nothing'}")
    return "; ".join(parts)


def restore(path: Path, record: Mapping[str, Any]) -> list[str]:
    """Restore one record's GPUs (every GPU of the host may be named) and delete it when all went back."""
    from llem.device import gpu_session
    from llem.device.common import DeviceError

    try:
        with gpu_session() as host:
            failed = _restore_gpus(host.gpus(), record)
    except DeviceError as e:
        failed = [str(e)]
    if not failed:
        records.remove(path)
    return failed


def restore_applied(applied: Applied | None) -> list[str]:
    if applied is None or applied.record is None:
        return []
    try:
        record = records.read_json(applied.record)
    except (OSError, ValueError):
        return []
    return restore(applied.record, record)


def repair_stale(out: TextIO | None = None) -> int:
    """Restore every record on this host whose process is gone (llem was killed), one line each; returns how
    many. Cheap when there are none (no NVML call)."""
    out = out or sys.stderr
    n = 0
    for path, rec in records.on_this_host():
        if records.alive(rec):
            continue
        failed = restore(path, rec)
        if failed:
            print(f"llem: warning: GPU settings left by llem pid {rec.get('pid')} (record {path}) could not be put "
                  f"back: {'; '.join(failed)}; retry with `python -m llem.gpu restore`", file=out, flush=True)
            continue
        n += 1
        print(f"llem: restored GPU settings left by llem pid {rec.get('pid')} (gone since it applied them at "
              f"{rec.get('created_at')}): {describe(rec)}", file=out, flush=True)
    return n
