"""NVIDIA GPUs (`energy=nvml`): the GPU meter (`llem.energy.gpu_meter`) over `llem.device.nvidia`.

Energy per GPU is the counter `nvmlDeviceGetTotalEnergyConsumption` (mJ, Volta and newer). It advances
in steps (~100 ms): `probe` measures the step; `start`/`stop` wait (outside the window) for the next
tick at each edge. Power is sampled from `NVML_FI_DEV_POWER_INSTANT` where the GPU answers it, else
`nvmlDeviceGetPowerUsage` (a 1-second average on Ampere except GA100 and newer); its integral is a
cross-check beside the counter, and the energy on GPUs without the counter. No NVML call here: they
are all in `llem.device.nvidia`.
"""

from __future__ import annotations

from typing import Any

from llem.energy.gpu_meter import (
    CONTINUOUS_BELOW_S,
    COUNTER_UPDATE_PERIOD_S,
    POLL_S,
    STEP_PROBE_S,
    THROTTLE_REASONS,
    GpuMeter,
    _Gpu,
    tick_curve,
)

__all__ = ["CONTINUOUS_BELOW_S", "COUNTER_UPDATE_PERIOD_S", "POLL_S", "STEP_PROBE_S", "THROTTLE_REASONS",
           "NvmlMeter", "tick_curve"]


class NvmlMeter(GpuMeter):
    name = "nvml"
    library = "NVML"
    visible_env = "CUDA_VISIBLE_DEVICES"

    def _open_host(self) -> Any:
        from llem.device.nvidia import open_host

        return open_host()

    def _counter_value(self, g: _Gpu) -> int:
        return g.dev.energy_counter_raw()  # mJ, an integer: exact differences

    def _power_note(self, g: _Gpu) -> str | None:
        if g.power_source != "power_usage_1s_average":
            return None
        return (f"{g.device} ({g.name}): sampled power is nvmlDeviceGetPowerUsage, a 1-second average "
                "on this GPU (NVML_FI_DEV_POWER_INSTANT unavailable): the power series and its "
                "integral lag load changes; the energy counter is unaffected")
