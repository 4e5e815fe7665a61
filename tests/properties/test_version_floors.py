"""Version floors match the code: pyproject's floors, vLLM stats read defensively, CodeCarbon's API
feature-detected and told the job's GPUs, Zeus refusing CUDA_VISIBLE_DEVICES it cannot parse."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from gpu_sim import add_migs, host

from llem.energy.base import MeterUnavailable

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _floor(spec: str, name: str) -> tuple[int, ...]:
    m = re.search(rf"^{re.escape(name)}\s*>=\s*([0-9.]+)", spec)
    assert m, spec
    return tuple(int(x) for x in m.group(1).split("."))


def test_pyproject_floors_are_the_first_releases_with_what_llem_calls() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!\[ ]", d)[0]: d for d in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert _floor(deps["transformers"], "transformers") >= (4, 56)  # from_pretrained(dtype=...)
    assert _floor(extras["vllm"][0], "vllm") >= (0, 11, 0)  # V1 fills RequestOutput.metrics (PR 24947)
    assert _floor(extras["codecarbon"][0], "codecarbon") >= (3, 2, 8)  # output_methods=


# -- vLLM: stats fields newer than RequestOutput.metrics are optional ----------------------------------
def _output(i: int, stats: object) -> SimpleNamespace:
    return SimpleNamespace(request_id=str(i), metrics=stats, num_cached_tokens=0,
                           outputs=[SimpleNamespace(token_ids=[1, 2, 3], finish_reason="length")])


def test_vllm_stats_without_num_preemptions_give_unknown_not_a_crash() -> None:
    from llem.backends.base import Workload
    from llem.backends.vllm.backend import Clocks, VllmBackend

    # RequestStateStats as vLLM 0.11 had it: no num_preemptions yet
    old = SimpleNamespace(num_generation_tokens=3, arrival_time=100.0, queued_ts=5.0, scheduled_ts=5.1,
                          first_token_ts=5.2, last_token_ts=5.4)
    new = SimpleNamespace(**vars(old), num_preemptions=2)
    wl = Workload(prompts=["a", "b"], input_tokens=[4, 5], batch_size=0, payload=[{}, {}])
    backend = SimpleNamespace(vllm_version="0.11.0")
    got = VllmBackend._timings(backend, [_output(0, old), _output(1, new)], [], wl, Clocks(0.0, 0.0))
    assert [t.preemptions for t in got] == [None, 2]
    assert got[0].t_first_token == pytest.approx(5.2) and got[0].output_tokens == 3
    with pytest.raises(RuntimeError, match=r"vLLM 0\.10\.2 returned no per-request stats.*>= 0\.11\.0"):
        VllmBackend._timings(SimpleNamespace(vllm_version="0.10.2"), [_output(0, None)], [],
                             Workload(prompts=["a"], input_tokens=[4], batch_size=0, payload=[{}]), Clocks(0.0, 0.0))


# -- CodeCarbon -----------------------------------------------------------------------------------------
def test_codecarbon_arguments_follow_the_installed_api() -> None:
    from llem.energy.meters.codecarbon.meter import tracker_kwargs, tracker_params

    cc = pytest.importorskip("codecarbon")
    params = tracker_params(cc.OfflineEmissionsTracker)  # real 3.3: the base class holds the keywords
    assert {"output_methods", "gpu_ids", "country_iso_code"} <= params
    assert tracker_kwargs(params, [2, 5]) == {"output_methods": [], "gpu_ids": [2, 5]}

    class Old:  # CodeCarbon before 3.2.8: no output_methods
        def __init__(self, save_to_file: bool = True, gpu_ids: list | None = None, **kw: object) -> None: ...

    assert tracker_kwargs(tracker_params(Old), [0]) == {"save_to_file": False, "gpu_ids": [0]}
    assert tracker_kwargs(tracker_params(Old), None) == {"save_to_file": False}  # no NVML: CodeCarbon decides


def test_codecarbon_is_given_the_jobs_nvml_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.energy.meters.codecarbon.meter import job_gpu_ids

    sim = host("H100", 8)
    migs = add_migs(sim, 6)
    monkeypatch.setitem(sys.modules, "pynvml", sim)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,2")
    assert job_gpu_ids()[0] == [2, 5]  # NVML indices, never "all eight"
    assert job_gpu_ids([1])[0] == [2]  # energy.gpu_indices=[1]: CUDA ordinal 1 is NVML GPU 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{migs[0].uuid},{migs[1].uuid}")
    assert job_gpu_ids()[0] == [6]  # two MIG instances: their parent, once
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert job_gpu_ids()[0] == []  # the job sees no GPU: CodeCarbon must track none
    monkeypatch.setitem(sys.modules, "pynvml", host("H100", 1, init_error=9))  # NVML cannot start
    ids, note = job_gpu_ids()
    assert ids is None and "not resolved" in note


def test_codecarbon_tracker_built_with_the_jobs_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real OfflineEmissionsTracker accepts what llem passes and tracks only the job's GPUs."""
    pytest.importorskip("codecarbon")
    from llem.energy.meters.codecarbon.meter import CodeCarbonMeter

    monkeypatch.setitem(sys.modules, "pynvml", host("H100", 4))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.chdir(tmp_path)
    meter = CodeCarbonMeter("FRA")
    meter.probe()
    assert meter.gpu_ids == [3] and "NVML GPU(s) [3]" in meter.describe()
    tracker = meter._new_tracker()
    assert tracker._gpu_ids == [3] and tracker._output_methods == []
    assert not list(tmp_path.iterdir())  # no emissions.csv written


# -- Zeus ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cvd, words", [
    ("GPU-1a2b3c4d-aaaa-bbbb-cccc-000000000001", "GPU UUIDs, which Zeus cannot parse"),
    ("0,GPU-1a2b", "GPU UUIDs"),
    ("MIG-0001-dddd", "names MIG instances, which Zeus cannot measure"),
])
def test_zeus_refuses_cuda_visible_devices_it_cannot_parse(monkeypatch: pytest.MonkeyPatch, cvd: str,
                                                           words: str) -> None:
    from llem.energy.meters.zeus.meter import ZeusMeter

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
    with pytest.raises(MeterUnavailable, match=words) as e:
        ZeusMeter().probe()
    assert "energy=nvml" in str(e.value) and "\n" not in str(e.value)


def test_zeus_accepts_indices_and_warns_when_it_would_measure_no_gpu_on_a_gpu_host() -> None:
    from llem.energy.meters.zeus.meter import no_gpu_warning, visible_problem

    assert visible_problem(None) is None and visible_problem("0,3") is None and visible_problem("") is None
    assert no_gpu_warning(True, [], None).startswith("zeus measures no GPU on this GPU host")
    assert "CUDA_VISIBLE_DEVICES is empty" in no_gpu_warning(True, [], "")
    assert no_gpu_warning(True, [0], "0") is None and no_gpu_warning(False, [], None) is None
