"""The device layer: every vendor call of llem (NVML in `nvidia.py`, amdsmi in `amd.py`), one abstract
GPU (`common.py`, its docstring lists the API), and device identity: which GPUs a job uses (CUDA
ordinals ↔ NVML devices, MIG, PCI order; HIP/ROCR ↔ amdsmi) and which processes run where. Meters,
health checks, GPU slots, gaps and GPU settings use only what this package exports."""

from __future__ import annotations

from llem.device.common import (
    AVERAGE,
    GPU,
    INSTANT,
    DeviceCallError,
    DeviceError,
    DeviceLost,
    DeviceNotSupported,
    DevicePermissionError,
    DeviceReadError,
    DeviceUnavailable,
    EnergyCounter,
    GpuHost,
    GpuProcess,
    PowerReading,
)
from llem.device.gpus import (
    Gpu,
    Resolution,
    Visible,
    describe_error,
    fastest_first,
    job_order,
    mixed_order_models,
    parse_visible,
    text,
    use_pci_order,
)
from llem.device.nvidia import (
    NvidiaGPU,
    import_nvml,
    nvml_errors,
    nvml_session,
    open_gpus,
    processes,
    resolve,
)
from llem.device.nvidia import session as nvidia_session
from llem.device.procs import process_tree
from llem.device.vendors import amd_session, device_count, driver_versions, gpu_host, gpu_session, vendors

__all__ = ["AVERAGE", "GPU", "INSTANT", "DeviceCallError", "DeviceError", "DeviceLost", "DeviceNotSupported",
           "DevicePermissionError", "DeviceReadError", "DeviceUnavailable", "EnergyCounter", "Gpu", "GpuHost",
           "GpuProcess", "NvidiaGPU", "PowerReading", "Resolution", "Visible", "amd_session", "describe_error",
           "device_count", "gpu_session", "driver_versions", "fastest_first", "gpu_host", "import_nvml", "job_order",
           "mixed_order_models", "nvidia_session", "nvml_errors", "nvml_session", "open_gpus", "parse_visible",
           "process_tree", "processes", "resolve", "text", "use_pci_order", "vendors"]
