"""AMD GPUs (`energy=amdsmi`): the GPU meter (`llem.energy.gpu_meter`) over `llem.device.amd`.

Energy per GPU is amdsmi's energy accumulator × its counter resolution (µJ; ~15.3 µJ per tick, updated
about every millisecond: read as a continuous counter, wraparound unfolded by the device layer). Power
is sampled from `current_socket_power` (instantaneous, MI300 and newer) where the GPU reports it, else
`average_socket_power` (the SMU's average: lags load changes); its integral is a cross-check beside the
counter and the energy on GPUs without one. The job's GPUs: ROCR_VISIBLE_DEVICES, then
HIP_VISIBLE_DEVICES (else CUDA_VISIBLE_DEVICES), narrowed after the model loads to those where
`amdsmi_get_gpu_process_list` lists a process of the job. No amdsmi call here: they are all in
`llem.device.amd`.
"""

from __future__ import annotations

import os
from typing import Any

from llem.energy.gpu_meter import GpuMeter, _Gpu

VISIBLE_ENVS = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


class AmdsmiMeter(GpuMeter):
    name = "amdsmi"
    library = "amdsmi"
    visible_env = "ROCR_VISIBLE_DEVICES/HIP_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES"
    runtime = "ROCm"

    def _open_host(self) -> Any:
        from llem.device.amd import open_host

        return open_host()

    def _visible_desc(self) -> str:
        return ", ".join(f"{k}={os.environ.get(k)!r}" for k in VISIBLE_ENVS)

    def _power_note(self, g: _Gpu) -> str | None:
        if g.power_source != "average_socket_power":
            return None
        return (f"{g.device} ({g.name}): sampled power is amdsmi's average_socket_power (current_socket_power is "
                "N/A on this GPU): the power series and its integral lag load changes; the energy counter is "
                "unaffected")
