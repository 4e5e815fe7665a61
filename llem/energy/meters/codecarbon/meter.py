"""CodeCarbon (`pip install llem[codecarbon]`): an offline tracker around the window. Its figures are
ESTIMATES — CPU power from a TDP/load model where RAPL is unreadable, RAM power from its size, GPU from
NVML polled every `energy.codecarbon.measure_power_s` — so every device it reports is marked
`estimate: true` and never summed with measured energy. Energies arrive in kWh; llem reports joules.

GPUs: CodeCarbon is told the job's GPUs (`gpu_ids`, NVML indices from llem's device layer) so other
jobs' GPUs on a shared host are not tracked; `output_methods` (CodeCarbon >= 3.2.8) is used when the
installed version has it, else the older `save_to_file=False`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable
from llem.energy.meters.codecarbon.checks import COUNTRY, COUNTRY_ALLOWED

KWH_J = 3.6e6


def tracker_params(cls: Any) -> set[str]:
    """Keyword arguments the tracker class (and its bases) accept: CodeCarbon's API moves between releases."""
    names: set[str] = set()
    for klass in getattr(cls, "__mro__", [cls]):
        init = klass.__dict__.get("__init__")
        if init is not None:
            with contextlib.suppress(TypeError, ValueError):
                names |= set(inspect.signature(init).parameters)
    return names


def tracker_kwargs(params: set[str], gpu_ids: list[int] | None) -> dict[str, Any]:
    """Version-dependent tracker arguments: no files written, and only the job's GPUs."""
    kw: dict[str, Any] = {}
    if "output_methods" in params:  # CodeCarbon >= 3.2.8; save_to_file is deprecated there
        kw["output_methods"] = []
    elif "save_to_file" in params:
        kw["save_to_file"] = False
    if gpu_ids is not None and "gpu_ids" in params:
        kw["gpu_ids"] = list(gpu_ids)
    return kw


def job_gpu_ids(gpu_indices: list[int] | None = None) -> tuple[list[int] | None, str]:
    """NVML indices of the GPUs this job uses (CUDA_VISIBLE_DEVICES resolved by llem's device layer,
    restricted to `energy.gpu_indices`), and a note; None when NVML cannot say (no GPU host)."""
    from llem.device import job_order, nvidia_session

    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with nvidia_session() as host:
            visible = host.resolve(cvd, job_order()).visible
    except Exception as e:  # no NVML: CodeCarbon finds no GPU either
        return None, f"GPUs not resolved ({type(e).__name__}: {e})"
    if gpu_indices is not None:
        visible = [v for v in visible if v.cuda_index in gpu_indices]
    ids = sorted({v.gpu.nvml_index for v in visible})
    return ids, f"tracking NVML GPU(s) {ids} (the job's: CUDA_VISIBLE_DEVICES={cvd!r})"


class CodeCarbonMeter(Meter):
    name = "codecarbon"

    @classmethod
    def from_config(cls, cfg: Any) -> CodeCarbonMeter:
        return cls(cfg.codecarbon.country_iso_code, cfg.codecarbon.measure_power_s, None if cfg.gpu_indices is None else [int(i) for i in cfg.gpu_indices])

    def __init__(self, country_iso_code: str = "USA", measure_power_s: float = 1.0,
                 gpu_indices: list[int] | None = None) -> None:
        self.country = country_iso_code
        self.measure_power_s = measure_power_s
        self.gpu_indices = gpu_indices  # CUDA ordinals (energy.gpu_indices); None = all the job's
        self.gpu_ids: list[int] | None = None  # NVML indices handed to CodeCarbon
        self.gpu_note = ""
        self.tracker: Any = None
        self._cls: Any = None
        self._kwargs: dict[str, Any] = {}

    def probe(self) -> None:
        if self._cls is not None:
            return
        if not COUNTRY.fullmatch(self.country or ""):
            raise MeterUnavailable(f"energy.codecarbon.country_iso_code={self.country!r} is invalid: allowed "
                                   f"{COUNTRY_ALLOWED}")
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError as e:
            raise MeterUnavailable("energy=codecarbon needs CodeCarbon: pip install llem[codecarbon]") from e
        self.gpu_ids, self.gpu_note = job_gpu_ids(self.gpu_indices)
        self._kwargs = tracker_kwargs(tracker_params(OfflineEmissionsTracker), self.gpu_ids)
        self._cls = OfflineEmissionsTracker

    def describe(self) -> str:
        return f"codecarbon: offline tracker, country {self.country} (estimates); {self.gpu_note}"

    def _new_tracker(self) -> Any:
        # CodeCarbon's constructor swallows its own exceptions; a broken tracker shows up at stop().
        return self._cls(country_iso_code=self.country, measure_power_secs=self.measure_power_s,
                         log_level="error", allow_multiple_runs=True, project_name="llem", **self._kwargs)

    def start(self) -> None:
        self.probe()
        self.tracker = self._new_tracker()  # one tracker per window: CodeCarbon's clock never resets
        self.tracker.start()

    def stop(self) -> EnergyReading:
        tracker, self.tracker = self.tracker, None
        emissions = tracker.stop() if tracker is not None else None
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            return EnergyReading(meter=self.name, measured=False,
                                 reason=f"CodeCarbon produced no data (country_iso_code={self.country!r} unknown to "
                                        "it, or it failed to start; see its log)")
        devices = []
        for kind, attr, power in (("gpu", "gpu_energy", "gpu_power"), ("cpu", "cpu_energy", "cpu_power"),
                                  ("dram", "ram_energy", "ram_power")):
            kwh = getattr(data, attr, None)
            if kwh is None or (kind == "gpu" and not getattr(data, "gpu_count", 0)):
                continue
            devices.append(DeviceEnergy(f"{kind}:codecarbon", kind, float(kwh) * KWH_J, "codecarbon_estimate",
                                        {"power_w": getattr(data, power, None)}, estimate=True))
        return EnergyReading(
            meter=self.name, measured=bool(devices), duration_s=float(data.duration), devices=devices,
            reason=None if devices else "CodeCarbon reported no device energy",
            warnings=["codecarbon figures are estimates (modelled CPU/RAM power), not measurements"],
            details={"estimate": True, "emissions_kg_co2eq": emissions, "country_iso_code": data.country_iso_code,
                     "energy_consumed_j": float(data.energy_consumed) * KWH_J, "cpu_model": data.cpu_model,
                     "gpu_model": data.gpu_model, "tracking_mode": data.tracking_mode},
        )

    def close(self) -> None:
        if self.tracker is not None:
            with contextlib.suppress(Exception):
                self.tracker.stop()
            self.tracker = None
