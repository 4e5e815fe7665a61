"""The node meter: one BMC client read at `energy.node.sample_s` in the shared sampler thread.

Edge rules as the GPU meters' power integral (llem/energy/meters/nvml/meter.py): the first and last readings are
taken in the caller's thread as the window opens and closes (outside its clock), the sampler thread
reads in between, and the energy is the trapezoidal integral of the readings over [first, last]. A
BMC reading is the BMC's own latest value (Redfish: updated about once a second; DCMI: "current
power"), so a change of load shows up to one BMC period late; the figure is the integral of what the
BMC reported, not of the wall power itself. An energy counter (Redfish `EnergykWh`) is recorded beside
it as a cross-check; at 1 Wh resolution it rarely resolves a window, so it never replaces the integral.
"""

from __future__ import annotations

import bisect
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any, Protocol

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable, Sampling
from llem.energy.sampler import Sampler, cumulative_trapezoid, trapezoid

DEVICE = "node"
KIND = "node"


class NodeClient(Protocol):
    """A BMC interface: `probe` opens it (MeterUnavailable on failure), `read` returns one reading."""

    source: str

    def probe(self) -> None: ...

    def read(self) -> dict[str, Any]:
        """{"power_w": float | None, "counter_j": float | None, ...more fields kept in the series}"""
        ...

    def info(self) -> dict[str, Any]:
        """What is read, where (no credentials): chassis, resource, sensor, address."""
        ...

    def identity(self) -> str: ...

    def close(self) -> None: ...


class NodeMeter(Meter):
    """Whole-node power from the BMC, beside the GPU/CPU meters (never instead of them)."""

    name = "node"

    def __init__(self, client: NodeClient, sample_s: float = 1.0, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.client = client
        self.sample_s = float(sample_s)
        self.update_period_s = self.sample_s
        self.clock = clock
        self._sampler: Sampler | None = None
        self._probed = False
        self._t0 = 0.0
        self._open = 0.0

    def probe(self) -> None:
        if self._probed:
            return
        self.client.probe()
        try:
            first = self.client.read()
        except MeterUnavailable:
            raise
        except Exception as e:
            raise MeterUnavailable(f"{self.client.source} BMC at {self.client.info().get('address')}: the first "
                                   f"power reading failed ({type(e).__name__}: {e})") from e
        if first.get("power_w") is None:
            raise MeterUnavailable(f"{self.client.source} BMC at {self.client.info().get('address')}: it reports no "
                                   "power reading (null/absent); see docs/node-power.md")
        self._probed = True

    def describe(self) -> str:
        info = self.client.info()
        where = ", ".join(f"{k}={v}" for k, v in info.items() if v is not None and k != "address")
        return f"node: {self.client.source} at {info.get('address')} ({where}), every {self.sample_s:g} s"

    def identities(self) -> dict[str, str]:
        return {DEVICE: self.client.identity()}

    def _read(self, t: float) -> list[dict[str, Any]]:
        r = self.client.read()
        # A BMC round trip takes milliseconds (127.0.0.1) to a second (a busy BMC): the reading is placed
        # at the request's midpoint, not at its start.
        return [{**r, "t_s": 0.5 * (t + self.clock()), "t_request_s": t}]

    def start(self) -> None:
        self.probe()
        self._sampler = Sampler(self._read, 1.0 / self.sample_s, name="llem-node-sampler", clock=self.clock)
        self._sampler.start()  # the opening reading is taken here, in this thread
        self._t0 = self._sampler.rows[0]["t_s"] if self._sampler.rows else self.clock()
        self._open = self.clock()  # started last of the job's meters: the window's clock starts right after

    def stop(self) -> EnergyReading:
        assert self._sampler is not None, "stop() without start()"
        close = self.clock()  # stopped first: the window's clock stopped right before
        sampler, self._sampler = self._sampler, None
        rows = sampler.stop()  # the closing reading first, then the thread ends
        return summarise(rows, self.client.source, self.client.info(), self.sample_s, self._t0,
                         sampler.errors, sampler.first_error, span=(self._open, close))

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        with contextlib.suppress(Exception):
            self.client.close()


def _at(ts: list[float], cum: list[float], t: float) -> float:
    if t <= ts[0]:
        return cum[0]
    if t >= ts[-1]:
        return cum[-1]
    i = bisect.bisect_right(ts, t)
    return cum[i - 1] + (cum[i] - cum[i - 1]) * (t - ts[i - 1]) / (ts[i] - ts[i - 1])


def summarise(rows: list[dict[str, Any]], source: str, info: dict[str, Any], sample_s: float, t0: float,
              errors: int = 0, first_error: str | None = None,
              span: tuple[float, float] | None = None) -> EnergyReading:
    """The node's energy (pure; unit-tested with hand-made rows): the trapezoid through the readings,
    between the `span` edges (the meter's start returning and its stop being called: the window's edges,
    since the node meter starts last and stops first), else over the readings themselves."""
    warnings: list[str] = []
    if errors:
        warnings.append(f"node ({source}): {errors} BMC read(s) failed during the window (first: {first_error}); "
                        "the integral bridges the gaps linearly")
    p_rows = [r for r in rows if r.get("power_w") is not None]
    duration = rows[-1]["t_s"] - rows[0]["t_s"] if len(rows) > 1 else 0.0
    sampling = Sampling(1.0 / sample_s, len(p_rows), t0, rows[-1]["t_s"] if rows else t0)
    details = {"source": source, **info, "sample_s": sample_s}
    if len(p_rows) < 2:
        return EnergyReading(meter="node", measured=False, duration_s=duration, warnings=warnings,
                             reason=f"node ({source}): fewer than two power readings in the window "
                                    f"({len(p_rows)} of {len(rows)} answered)",
                             update_period_s=sample_s, sampling=sampling, details=details)
    ts = [r["t_s"] for r in p_rows]
    ps = [float(r["power_w"]) for r in p_rows]
    integral = trapezoid(ts, ps)
    cum = cumulative_trapezoid(ts, ps)
    a, b = span if span is not None and span[1] > span[0] else (ts[0], ts[-1])
    if span is not None and span[1] > span[0]:
        energy = _at(ts, cum, b) - _at(ts, cum, a)
        duration = b - a
        covered = max(0.0, min(b, ts[-1]) - max(a, ts[0]))
    else:
        energy, covered = integral, ts[-1] - ts[0]
    if duration > 0 and covered < duration - 1e-9:
        warnings.append(f"node ({source}): power readings cover {covered:.3f} s of the {duration:.3f} s window "
                        "(reads at an edge failed): the energy covers that span only")
    c_rows = [r for r in rows if r.get("counter_j") is not None]
    counter_j = c_rows[-1]["counter_j"] - c_rows[0]["counter_j"] if len(c_rows) > 1 else None
    steps = sorted({b["counter_j"] - a["counter_j"] for a, b in zip(c_rows, c_rows[1:])
                    if b["counter_j"] > a["counter_j"]})
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    extra: dict[str, Any] = {
        "source": source, **info, "samples": len(p_rows), "duration_s": covered, "span_s": duration,
        "span_start_s": a, "span_end_s": b,
        "sample_interval_s": statistics.median(gaps) if gaps else None,
        "mean_power_w": energy / covered if covered > 0 else None,
        "min_power_w": min(ps), "max_power_w": max(ps),
        "readings_span_s": ts[-1] - ts[0], "readings_integral_j": integral, "counter_j": counter_j, "counter_step_j": steps[0] if steps else None,
        "read_errors": errors,
    }
    for key in ("average_w", "bmc_period_s"):  # IPMI DCMI: the BMC's own average over its period
        vals = [r[key] for r in p_rows if r.get(key) is not None]
        if vals:
            extra[f"bmc_{key}" if not key.startswith("bmc") else key] = vals[-1]
    series = [{"t_s": r["t_s"], "elapsed_s": r["t_s"] - t0, "meter": "node", "device": DEVICE, "kind": KIND,
               "power_w": r["power_w"], "energy_j": e} for r, e in zip(p_rows, cum)]
    device = DeviceEnergy(DEVICE, KIND, energy, f"{source}_power_integral", extra)
    return EnergyReading(meter="node", measured=True, duration_s=duration, devices=[device], warnings=warnings,
                         timeseries=series, update_period_s=sample_s, sampling=sampling, details=details)
