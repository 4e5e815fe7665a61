"""CodeCarbon (`pip install llem[codecarbon]`): an offline tracker around the window. Its figures are
ESTIMATES — CPU power from a TDP/load model where RAPL is unreadable, RAM power from its size, GPU from
NVML polled every `energy.codecarbon_measure_power_s` — so every device it reports is marked
`estimate: true` and never summed with measured energy. Energies arrive in kWh; llem reports joules.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable

KWH_J = 3.6e6


class CodeCarbonMeter(Meter):
    name = "codecarbon"

    def __init__(self, country_iso_code: str = "USA", measure_power_s: float = 1.0) -> None:
        self.country = country_iso_code
        self.measure_power_s = measure_power_s
        self.tracker: Any = None
        self._cls: Any = None

    def probe(self) -> None:
        if self._cls is not None:
            return
        if not re.fullmatch(r"[A-Z]{3}", self.country or ""):
            raise MeterUnavailable(f"energy.country_iso_code={self.country!r} is invalid: allowed a 3-letter "
                                   "ISO 3166 code in capitals, e.g. USA, FRA, DEU")
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError as e:
            raise MeterUnavailable("energy=codecarbon needs CodeCarbon: pip install llem[codecarbon]") from e
        self._cls = OfflineEmissionsTracker

    def describe(self) -> str:
        return f"codecarbon: offline tracker, country {self.country} (estimates)"

    def _new_tracker(self) -> Any:
        # CodeCarbon's constructor swallows its own exceptions; a broken tracker shows up at stop().
        return self._cls(country_iso_code=self.country, measure_power_secs=self.measure_power_s,
                         output_methods=[], log_level="error", allow_multiple_runs=True,
                         project_name="llem")

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
            extra={"estimate": True, "emissions_kg_co2eq": emissions, "country_iso_code": data.country_iso_code,
                   "energy_consumed_j": float(data.energy_consumed) * KWH_J, "cpu_model": data.cpu_model,
                   "gpu_model": data.gpu_model, "tracking_mode": data.tracking_mode, "sampled": False},
        )

    def close(self) -> None:
        if self.tracker is not None:
            with contextlib.suppress(Exception):
                self.tracker.stop()
            self.tracker = None
