"""DeviceInfo / MemoryUsage: what a backend reports after the run, written as environment.gpus and memory."""

from __future__ import annotations

import pytest

from llem.backends.base import Backend
from llem.backends.facts import DeviceInfo, MemoryUsage, ModelFacts, peak_rss_self


def test_device_info_writes_only_what_was_read() -> None:
    assert DeviceInfo(1, "H100", "GPU-x", 80).as_dict() == {"index": 1, "name": "H100", "uuid": "GPU-x",
                                                            "total_memory_bytes": 80}
    assert DeviceInfo(0, uuid="GPU-y").as_dict() == {"index": 0, "uuid": "GPU-y"}


def test_memory_usage_writes_each_backends_keys_in_order() -> None:
    assert MemoryUsage(5).as_dict() == {"peak_rss_bytes": 5}
    pt = MemoryUsage(5, peak_allocated_bytes={"cuda:0": 1}, peak_reserved_bytes={"cuda:0": 2}).as_dict()
    assert list(pt) == ["peak_rss_bytes", "peak_allocated_bytes", "peak_reserved_bytes"]
    vllm = MemoryUsage(5, engine_peak_rss_bytes={}, kv_cache_read=True).as_dict()
    assert vllm == {"peak_rss_bytes": 5, "engine_peak_rss_bytes": {}, "kv_cache_tokens": None}
    assert "kv_cache_tokens" not in MemoryUsage(5, engine_peak_rss_bytes={}).as_dict()
    assert MemoryUsage(5, server_peak_rss_bytes={"7": 9}).as_dict()["server_peak_rss_bytes"] == {"7": 9}


def test_the_default_backend_reports_its_own_peak_rss_in_bytes() -> None:
    peak = peak_rss_self()
    assert peak > 1 << 20  # bytes, not KiB: a Python process holds more than 1 MiB
    assert Backend.memory(None).peak_rss_bytes >= peak  # type: ignore[arg-type]
    assert Backend.devices(None) == []  # type: ignore[arg-type]


def test_model_facts_write_what_the_backend_set_in_its_order() -> None:
    f = ModelFacts()
    f.set(parameters=10, non_embedding_parameters=8, architecture="A", dtype=None, device="cpu")
    f.set(dtype="float32", parameters_check={"ok": True})  # dtype keeps its place, as in a dict update
    assert list(f.as_dict()) == ["parameters", "non_embedding_parameters", "architecture", "dtype", "device",
                                 "parameters_check"]
    assert f.as_dict()["dtype"] == "float32" and f.non_embedding_parameters == 8 and f.warning is None
    f.set(parameters_check={"ok": False, "warning": "not the model"})
    assert f.warning == "not the model"
    assert ModelFacts().as_dict() == {} and ModelFacts().non_embedding_parameters is None
    served = ModelFacts()
    served.set(dtype=None, device="server")
    assert served.as_dict() == {"dtype": None, "device": "server"}  # known to be unknown: written as null
    with pytest.raises(KeyError):
        served.set(dtpye="float16")
