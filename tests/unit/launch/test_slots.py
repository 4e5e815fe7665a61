"""llem.launch.slots (pure): which GPUs each concurrently running job gets, and the environment that pins
a job to its slot."""

from __future__ import annotations

import pytest

from llem.errors import ConfigError
from llem.launch.slots import launcher_slots, make_slots, slot_env, visible_gpus


def test_no_pinning_is_one_slot_for_any_gpu_count() -> None:
    assert make_slots([], 0) == [()] and make_slots(["0", "1", "2"], 0) == [()]


def test_slots_are_disjoint_runs_of_gpus_per_job_and_the_rest_stays_idle() -> None:
    gpus = ["0", "1", "2", "3", "4", "5", "6"]
    assert make_slots(gpus, 1) == [(g,) for g in gpus]
    assert make_slots(gpus, 2) == [("0", "1"), ("2", "3"), ("4", "5")]  # floor(7 / 2) = 3, GPU 6 unused
    assert make_slots(gpus, 7) == [tuple(gpus)]
    assert make_slots(["GPU-a", "GPU-b"], 1) == [("GPU-a",), ("GPU-b",)]  # UUIDs kept as listed


def test_more_gpus_per_job_than_visible_names_the_knob_and_what_is_visible() -> None:
    with pytest.raises(ConfigError) as e:
        make_slots(["0", "1"], 3)
    assert e.value.problems == [("hydra.launcher.gpus_per_job", 3,
                                 "0 (no pinning) or at most the 2 GPU(s) visible (visible: 0,1)")]
    with pytest.raises(ConfigError, match=r"visible: none"):
        make_slots([], 1)


def test_visible_gpus_prefer_the_allocation_over_the_nvml_count() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}, 8) == ["2", "5"]
    assert visible_gpus({}, 3) == ["0", "1", "2"]
    assert visible_gpus({}, None) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, 8) == []  # an empty allocation hides every GPU


def test_slot_env_sets_pci_order_unless_chosen_and_pins_only_a_real_slot() -> None:
    assert slot_env(("1", "3"), {}) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1,3"}
    assert slot_env((), {}) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert slot_env(("0",), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}) == {"CUDA_VISIBLE_DEVICES": "0"}


def test_launcher_slots_without_pinning_asks_no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import llem.launch.slots as slots

    def no_driver() -> int:
        raise AssertionError("NVML asked although gpus_per_job=0")

    monkeypatch.setattr(slots, "nvml_device_count", no_driver)
    assert launcher_slots(0, {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) == [()]
    monkeypatch.setattr(slots, "nvml_device_count", lambda: 4)
    assert launcher_slots(2, {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) == [("0", "1"), ("2", "3")]
