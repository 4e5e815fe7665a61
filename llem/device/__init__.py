"""Device identity: which GPUs a job uses (CUDA ordinals ↔ NVML devices, MIG, PCI order) and which
processes run where. The only place llem parses CUDA_VISIBLE_DEVICES or walks a job's process tree."""

from llem.device.gpus import (
    DeviceError,
    Gpu,
    Resolution,
    Visible,
    device_count,
    driver_versions,
    gpu_host,
    import_nvml,
    job_order,
    nvml_errors,
    nvml_session,
    open_gpus,
    parse_visible,
    processes,
    resolve,
    use_pci_order,
)
from llem.device.procs import process_tree

__all__ = ["DeviceError", "Gpu", "Resolution", "Visible", "device_count", "driver_versions", "gpu_host",
           "import_nvml", "job_order", "nvml_errors", "nvml_session", "open_gpus", "parse_visible", "processes",
           "process_tree", "resolve", "use_pci_order"]
