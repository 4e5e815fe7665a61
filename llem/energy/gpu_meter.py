"""A GPU meter over the device layer (`llem.device`): energy counter plus a power sampler, for any
vendor whose GPUs implement `llem.device.common.GPU` (NVIDIA: `llem.energy.meters.nvml.meter`, AMD: `llem.energy.amdsmi`).

Which GPUs count: the job's. After the model loads (`attribute`), the GPUs where the vendor library
lists a process of the job's process tree are attributed; without such a process (CPU model, container
PID namespace, the library cannot say) the GPUs the visible-devices variables map to. Other visible
GPUs are measured beside them (`unattributed_devices`) and never enter totals. `energy.gpu_indices`
restricts explicitly. A MIG instance is its parent GPU (NVML has no per-instance energy), counted once
however many instances the job sees. Device identity lives in `llem.device`.

Energy per GPU is the GPU's cumulative energy counter. A counter advancing in steps (NVML: ~100 ms) is
measured by `probe`; `start`/`stop` wait (outside the window) for the next tick at each edge, so the
counter is read at a known instant, and the readings in between are placed at their tick times. The
window's energy is that tick-aligned curve between the window's edges; a counter updating faster than
5 ms (amdsmi: ~1 ms) is read as continuous. Power is sampled at `energy.sample_hz` (instantaneous where
the GPU offers it, else its average, as the device says); its integral is a cross-check beside the
counter, and the energy on GPUs without the counter.

Failures: any device error opening the GPUs is MeterUnavailable (auto records it and moves on; an
explicit meter stops the job before the model loads); errors while reading become warnings on the
reading, never an exception out of the window.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llem.device import (
    GPU,
    DeviceCallError,
    DeviceError,
    DeviceNotSupported,
    Resolution,
    Visible,
    describe_error,
    process_tree,
)
from llem.energy.base import (
    Attribution,
    CounterSampling,
    DeviceEnergy,
    EnergyCurve,
    EnergyReading,
    Meter,
    MeterUnavailable,
    OtherProcesses,
    UnattributedDevice,
)
from llem.energy.gpu_window import (  # noqa: F401  (tick_curve: re-exported for the meters)
    CONTINUOUS_BELOW_S,
    COUNTER_UPDATE_PERIOD_S,
    THROTTLE_REASONS,
    summarise,
    tick_curve,
)
from llem.energy.sampler import Sampler

STEP_PROBE_S = 0.5  # the longest `probe` spends measuring the counter's step
POLL_S = 0.001  # counter polling interval while measuring the step and waiting for an edge tick


@dataclass
class _Gpu:
    """One physical GPU this meter reads (a MIG parent appears once, with its instances in `migs`)."""

    visible: list[Visible]
    dev: GPU
    uuid: str
    name: str
    nvml_index: int | None
    compute_capability: tuple[int, int] | None = None
    has_counter: bool = True
    power_source: str = "power_usage"
    counter_step_s: float | None = None
    power_limit_w: float | None = None
    persistence_mode: str | None = None
    unsupported: set[str] = field(default_factory=set)
    read_errors: int = 0
    first_error: str | None = None

    @property
    def device(self) -> str:
        return self.visible[0].label

    @property
    def migs(self) -> list[str]:
        return [v.mig_uuid for v in self.visible if v.mig_uuid]


class GpuMeter(Meter):
    """The vendor-neutral GPU meter; a vendor subclass names itself and opens its host (`_open_host`)."""

    name = "gpu"
    library = "the GPU library"  # how messages name the vendor library (NVML, amdsmi)
    visible_env = "CUDA_VISIBLE_DEVICES"  # how messages name the variable that picks the job's GPUs
    runtime = "CUDA"  # who numbers the job's devices
    update_period_s = COUNTER_UPDATE_PERIOD_S

    @classmethod
    def from_config(cls, cfg: Any) -> GpuMeter:
        return cls(cfg.sample_hz, None if cfg.gpu_indices is None else [int(i) for i in cfg.gpu_indices])

    def __init__(self, sample_hz: float = 10.0, gpu_indices: list[int] | None = None, *,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                 threaded: bool = True, step_probe_s: float = STEP_PROBE_S) -> None:
        self.sample_hz = sample_hz
        self.gpu_indices = gpu_indices
        self.clock, self.sleep, self.threaded = clock, sleep, threaded
        self.step_probe_s = step_probe_s
        self.host: Any = None  # the vendor's open session (llem.device.<vendor>.open_host())
        self.gpus: list[_Gpu] = []
        self.notes: list[str] = []
        self.attribution = Attribution(
            "cuda_visible_devices",
            "not yet decided (the model was not loaded): every GPU CUDA_VISIBLE_DEVICES maps to")
        self._attributed: set[str] | None = None  # devices whose energy is the job's; None: all
        self._sampler: Sampler | None = None
        self._anchors: dict[str, tuple[float, int]] = {}
        self._t0 = 0.0
        self._initialised = False

    # -- setup (before the model loads) -----------------------------------------------------------
    def probe(self) -> None:
        if self._initialised:
            return
        try:
            self.host = self._open_host()
        except DeviceError as e:
            raise MeterUnavailable(str(e)) from e
        self._initialised = True
        try:
            self._open_devices()
            self._measure_steps()
        except DeviceError as e:
            self.close()
            raise MeterUnavailable(str(e)) from e
        except DeviceCallError as e:
            self.close()
            raise MeterUnavailable(f"{self.library} failed while opening the GPUs ({e.detail})") from e
        except BaseException:
            self.close()
            raise

    # -- vendor hooks ---------------------------------------------------------------------------------
    def _open_host(self) -> Any:
        """The vendor library's open session: `.records()`, `.resolve_job(env)`, `.processes(visible)`,
        `.shutdown()`; raises DeviceError (DeviceUnavailable) when the library cannot start."""
        raise NotImplementedError

    def _visible_desc(self) -> str:
        return f"{self.visible_env}={os.environ.get(self.visible_env)!r}"

    def _power_note(self, g: _Gpu) -> str | None:
        """A note when the sampled power is an average (lags load changes)."""
        return None

    def _counter_value(self, g: _Gpu) -> float:
        """The counter in mJ (the vendor's native integer where it is mJ, to keep exact arithmetic)."""
        return g.dev.energy_counter().energy_j * 1e3

    # -- opening --------------------------------------------------------------------------------------
    def _open_devices(self) -> None:
        if not self.host.records():
            raise MeterUnavailable(f"{self.library} reports no GPUs")
        res: Resolution = self.host.resolve_job(os.environ)
        self.notes = list(res.notes)
        if not res.visible:
            raise MeterUnavailable(f"no GPU visible to {self.runtime} ({self._visible_desc()})"
                                   + (f": {'; '.join(res.notes)}" if res.notes else ""))
        visible = res.visible
        if self.gpu_indices is not None:
            bad = [i for i in self.gpu_indices if not 0 <= i < len(visible)]
            if bad:
                raise MeterUnavailable(f"energy.gpu_indices={self.gpu_indices} is invalid: allowed CUDA ordinals "
                                       f"0..{len(visible) - 1} (GPUs visible to this job)")
            visible = [v for v in visible if v.cuda_index in self.gpu_indices]
            self._attributed = {f"gpu:{i}" for i in self.gpu_indices}
            self.attribution = Attribution("energy.gpu_indices",
                                           f"energy.gpu_indices={self.gpu_indices} restricts the GPUs measured",
                                           final=True)
        by_parent: dict[int, _Gpu] = {}
        for v in visible:
            g = by_parent.get(v.gpu.nvml_index)
            if g is None:
                g = by_parent[v.gpu.nvml_index] = _Gpu([v], v.gpu.device, v.gpu.uuid or "?", v.gpu.name or "?",
                                                       v.gpu.nvml_index, v.gpu.compute_capability)
            else:
                g.visible.append(v)
        self.gpus = list(by_parent.values())
        for g in self.gpus:
            if g.migs:
                refs = " and ".join(f"{v.label} ({v.mig_uuid})" for v in g.visible)
                self.notes.append(f"{refs}: MIG instance(s) of {g.uuid} ({g.name}); NVML has no per-instance energy "
                                  f"or power, so {g.device} reports the whole GPU's, once, shared with every other "
                                  "instance on it")
            self._open_gpu(g)
        if self._attributed is not None:  # gpu_indices names ordinals; MIG parents carry their first one
            self._attributed = {g.device for g in self.gpus}

    def _open_gpu(self, g: _Gpu) -> None:
        try:
            g.has_counter = g.dev.has_energy_counter()
        except DeviceCallError as e:  # NO_PERMISSION, GPU_IS_LOST, a read failure: unusable
            raise MeterUnavailable(f"{g.device} ({g.name}, {g.uuid}): {self.library} cannot read its energy "
                                   f"({e.detail})") from e
        g.power_source = g.dev.power_source()
        note = self._power_note(g)
        if note:
            self.notes.append(note)
        g.power_limit_w = self._query(g, "power_limit", g.dev.enforced_power_limit_w)
        mode = self._query(g, "persistence", g.dev.persistence_mode)
        g.persistence_mode = None if mode is None else ("on" if mode else "off")

    def _counter(self, g: _Gpu) -> float | None:
        try:
            return self._counter_value(g)
        except DeviceCallError as e:
            self._note_error(g, e)
            return None

    def _poll_ticks(self, gpus: list[_Gpu], bound_s: float, changes: int) -> dict[str, list[tuple[float, int]]]:
        """Poll the counters until each changed `changes` times (or `bound_s`): (time, value) per change,
        time = midpoint between the last poll with the old value and the first with the new one."""
        seen: dict[str, list[tuple[float, int]]] = {g.device: [] for g in gpus}
        last: dict[str, tuple[float, int | None]] = {g.device: (self.clock(), self._counter(g)) for g in gpus}
        t_end = self.clock() + bound_s
        todo = [g for g in gpus if last[g.device][1] is not None]
        while todo and self.clock() < t_end:
            self.sleep(POLL_S)
            for g in list(todo):
                t_prev, v_prev = last[g.device]
                v = self._counter(g)
                t = self.clock()
                if v is None:
                    todo.remove(g)
                    continue
                if v != v_prev:
                    seen[g.device].append((0.5 * (t_prev + t), v))
                    if len(seen[g.device]) >= changes:
                        todo.remove(g)
                last[g.device] = (t, v)
        return seen

    def _measure_steps(self) -> None:
        """The counter's step per GPU: the median interval between its changes, within `step_probe_s`."""
        counted = [g for g in self.gpus if g.has_counter]
        if not counted:
            return
        seen = self._poll_ticks(counted, self.step_probe_s, changes=4)
        for g in counted:
            ticks = [t for t, _ in seen[g.device]]
            gaps = [b - a for a, b in zip(ticks, ticks[1:])]
            if gaps:
                g.counter_step_s = statistics.median(gaps)
            else:
                self.notes.append(f"{g.device}: the energy counter did not advance twice within {self.step_probe_s:g} s; "
                                  f"assuming a {COUNTER_UPDATE_PERIOD_S:g} s step")
        steps = [g.counter_step_s for g in counted if g.counter_step_s]
        self.update_period_s = max(steps) if steps else COUNTER_UPDATE_PERIOD_S

    # -- attribution (after the model loads) --------------------------------------------------------
    def attribute(self) -> Attribution:
        """Decide which measured GPUs are this job's: where NVML lists a process of its process tree."""
        if not self._initialised or self.attribution.method == "energy.gpu_indices":
            return self.attribution
        try:
            found = self.host.processes([v for g in self.gpus for v in g.visible])
            mine = process_tree()
        except Exception as e:  # never fail a job over attribution: fall back to CUDA_VISIBLE_DEVICES
            found, mine = {v.label: describe_error(e) for g in self.gpus for v in g.visible}, set()
        per_gpu: dict[str, dict[str, list[int]]] = {}
        errors = []
        for g in self.gpus:
            pids: set[int] = set()
            for v in g.visible:
                got = found.get(v.label)
                if isinstance(got, str):
                    errors.append(f"{v.label}: {got}")
                elif got:
                    pids |= got
            per_gpu[g.device] = {"pids": sorted(pids), "job_pids": sorted(pids & mine)}
        ours = {dev for dev, p in per_gpu.items() if p["job_pids"]}
        if ours and not errors:
            self._attributed = ours
            self.attribution = Attribution(f"{self.name}_processes",
                                           f"GPUs where {self.library} lists a process of this job's process tree "
                                           "after the model loaded", per_gpu, final=True)
        else:
            self._attributed = None
            why = (f"{self.library} could not list processes (" + "; ".join(errors) + ")" if errors else
                   f"{self.library} lists no process of this job on any visible GPU (model not on a GPU, or a container PID "
                   "namespace)")
            self.attribution = Attribution("cuda_visible_devices", f"{why}: every GPU {self.visible_env} maps to counts",
                                           per_gpu, final=True)
        return self.attribution

    def _is_attributed(self, g: _Gpu) -> bool:
        return self._attributed is None or g.device in self._attributed

    def describe(self) -> str:
        parts = [f"{g.device} {g.name} ({'energy counter' if g.has_counter else 'power integral: no counter'}) "
                 f"power from {g.power_source}" for g in self.gpus]
        return f"{self.name}: {len(self.gpus)} GPU(s): " + ", ".join(parts)

    def identities(self) -> dict[str, str]:
        return {g.device: g.uuid for g in self.gpus}

    def temperatures(self) -> dict[str, float] | None:
        temps = {}
        for g in self.gpus:
            if not self._is_attributed(g):
                continue
            t = self._temperature(g)
            if t is not None:
                temps[g.device] = float(t)
        return temps or None

    # -- reads ------------------------------------------------------------------------------------
    def _note_error(self, g: _Gpu, e: BaseException) -> None:
        g.read_errors += 1
        if g.first_error is None:
            g.first_error = describe_error(e)

    def _query(self, g: _Gpu, key: str, fn: Callable[[], Any]) -> Any:
        """One device read; a 'not supported' answer is remembered so it is not asked again, any other
        error is counted on the GPU (reported as a warning) and reads as missing."""
        if key in g.unsupported:
            return None
        try:
            return fn()
        except DeviceNotSupported:
            g.unsupported.add(key)  # not supported, or a library mismatch: will not change
        except DeviceCallError as e:
            self._note_error(g, e)
        return None

    def _temperature(self, g: _Gpu) -> Any:
        return self._query(g, "temperature", g.dev.temperature_c)

    def _reasons(self, g: _Gpu) -> int | None:
        return self._query(g, "event_reasons", g.dev.clock_event_mask)

    def _power(self, g: _Gpu) -> float | None:
        reading = self._query(g, "power", g.dev.power_w)
        return None if reading is None else reading.watts

    def _read(self, t: float) -> list[dict[str, Any]]:
        rows = []
        for g in self.gpus:
            t_counter = self.clock()  # the counter first, stamped on its own: ticks are placed by this time
            counter = self._query(g, "counter", lambda g=g: self._counter_value(g)) if g.has_counter else None
            util = self._query(g, "utilization", g.dev.utilization_pct)
            mem = self._query(g, "memory", g.dev.memory_used_bytes)
            rows.append({
                "t_s": t,
                "device": g.device,
                "counter_mj": counter,
                "counter_t_s": t_counter,
                "power_w": self._power(g),
                "temperature_c": self._temperature(g),
                "sm_clock_mhz": self._query(g, "sm_clock", g.dev.sm_clock_mhz),
                "mem_clock_mhz": self._query(g, "mem_clock", g.dev.mem_clock_mhz),
                "gpu_util_pct": None if util is None else util[0],
                "mem_util_pct": None if util is None else util[1],
                "memory_used_bytes": mem,
                "clock_event_reasons": self._reasons(g),
            })
        return rows

    # -- window -----------------------------------------------------------------------------------
    def _edge_ticks(self) -> dict[str, tuple[float, int]]:
        """Wait for each counter's next tick (bounded by ~1.5 steps): a counter value at a known instant."""
        counted = [g for g in self.gpus if g.has_counter and "counter" not in g.unsupported]
        if not counted:
            return {}
        bound = 1.5 * max(g.counter_step_s or COUNTER_UPDATE_PERIOD_S for g in counted) + 0.01
        seen = self._poll_ticks(counted, bound, changes=1)
        return {dev: ticks[0] for dev, ticks in seen.items() if ticks}

    def start(self) -> None:
        self.probe()
        for g in self.gpus:
            g.read_errors, g.first_error = 0, None
        self._anchors = {}
        with contextlib.suppress(Exception):  # the edge wait is a refinement: never fail the window over it
            self._anchors = {f"start:{k}": v for k, v in self._edge_ticks().items()}
        self._sampler = Sampler(self._read, self.sample_hz, name=f"llem-{self.name}-sampler", clock=self.clock,
                                threaded=self.threaded)
        self._sampler.start()  # first sample (counters included) is taken right here, synchronously
        self._t0 = self._sampler.rows[0]["t_s"] if self._sampler.rows else self.clock()

    def sample_now(self) -> None:
        """One sample now, in the caller's thread (with `threaded=False`: tests on a simulated clock)."""
        if self._sampler is not None:
            self._sampler.sample_now()

    def stop(self) -> EnergyReading:
        assert self._sampler is not None, "stop() without start()"
        sampler, self._sampler = self._sampler, None
        rows = sampler.stop()  # closing sample first thing after the window's clock stopped
        with contextlib.suppress(Exception):  # after the window: wait for each counter's next tick
            self._anchors.update({f"end:{k}": v for k, v in self._edge_ticks().items()})
        try:
            others = self._other_processes()
        except Exception:  # an odd binding must not cost a completed window its reading
            others = {}
        devices, unattributed, series, warnings = [], [], [], list(self.notes)
        curves: dict[str, EnergyCurve] = {}
        for g in self.gpus:
            dev_rows = [r for r in rows if r["device"] == g.device]
            anchors = (self._anchors.get(f"start:{g.device}"), self._anchors.get(f"end:{g.device}"))
            energy, ts_rows, extra, curve, thermal = summarise(g, dev_rows, self._t0, anchors, self.name)
            if g.read_errors:
                warnings.append(f"{g.device}: {g.read_errors} {self.library} read(s) failed during the window (first: "
                                f"{g.first_error}); the figures use the readings that succeeded")
            if extra.pop("truncated", False):
                warnings.append(f"{g.device}: its energy counter stopped answering before the window ended; "
                                f"energy covers {extra['counter_covered_s']:.3f} s of {extra['duration_s']:.3f} s")
            if energy is None:
                warnings.append(f"{g.device}: no usable {self.library} energy or power readings in the window")
                continue
            attributed = self._is_attributed(g)
            for r in ts_rows:
                r["attributed"] = attributed
            series.extend(ts_rows)
            if attributed:
                devices.append(DeviceEnergy(g.device, "gpu", energy, extra.pop("method"), extra, thermal=thermal,
                                            other_processes=others.get(g.device)))
                if curve is not None:
                    curves[g.device] = EnergyCurve(curve["t_s"], curve["energy_j"])
            else:
                pids = (self.attribution.devices or {}).get(g.device, {}).get("pids", [])
                unattributed.append(UnattributedDevice(
                    g.device, "gpu", energy, g.uuid, g.name, extra["method"], extra["mean_power_w"],
                    "no process of this job runs on it"
                    + (f" ({self.library} lists pids {pids})" if pids else f" ({self.library} lists none)")))
        if sampler.errors:
            warnings.append(f"{self.name} sampler: {sampler.errors} failed reads (first: {sampler.first_error})")
        if unattributed:
            warnings.append(f"{len(unattributed)} visible GPU(s) ran none of this job's processes and are left out of "
                            f"its energy: {', '.join(u.device for u in unattributed)} (energy.unattributed_devices)")
        duration = (rows[-1]["t_s"] - rows[0]["t_s"]) if rows else 0.0
        samples = [d.extra["samples"] for d in devices]
        steps = [g.counter_step_s for g in self.gpus if g.counter_step_s]
        return EnergyReading(
            meter=self.name, measured=bool(devices), duration_s=duration, devices=devices,
            reason=None if devices else f"{self.library} returned no energy or power readings for this job's GPUs",
            warnings=warnings,
            timeseries=series, update_period_s=self.update_period_s,
            sampling=CounterSampling(self.sample_hz, min(samples) if samples else 0, self._t0,
                                     rows[-1]["t_s"] if rows else self._t0, max(steps) if steps else None),
            attribution=self.attribution, unattributed_devices=unattributed, curves=curves,
        )

    def _other_processes(self) -> dict[str, OtherProcesses]:
        """Compute processes on each GPU that are not this job's (after the window: never inside it)."""
        mine = process_tree()
        found = self.host.processes([v for g in self.gpus for v in g.visible])
        out: dict[str, OtherProcesses] = {}
        for g in self.gpus:
            pid_sets = [found.get(v.label) for v in g.visible]
            if any(not isinstance(p, set) for p in pid_sets):
                continue
            pids = sorted(set().union(*pid_sets))  # type: ignore[arg-type]
            ours = [p for p in pids if p in mine]
            # In a container the library may list host PIDs: none of ours then shows up.
            out[g.device] = OtherProcesses(pids, [p for p in pids if p not in mine], bool(ours) or not pids)
        return out

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self._initialised and self.host is not None:
            with contextlib.suppress(Exception):
                self.host.shutdown()
        self._initialised = False

