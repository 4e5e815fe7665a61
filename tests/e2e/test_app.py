"""`python -m llem ...` run as users run it, asserting on what lands in result.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import AIENERGYSCORE, REPO, read_result, run_llem

SMALL = ["n=4", "pytorch.max_output_tokens=6", "warmup.n_batches=1", "dataset.input_tokens=16"]


def _only_result(root: Path) -> Path:
    found = sorted(root.glob("outputs/*/*/result.json"))
    assert len(found) == 1, found
    return found[0].parent


@pytest.mark.slow
def test_default_job_writes_a_complete_result(tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem([*SMALL, "pytorch.batch_size=3"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    folder = _only_result(tmp_path)
    r = read_result(folder)
    assert r["status"] == "completed" and r["schema_version"].startswith("1.")
    assert re.fullmatch(r"[0-9a-f]{16}", r["identity"]["config_hash"])
    assert "pytorch.batch_size=3" in r["identity"]["overrides"]
    w = r["workload"]
    assert (w["prompts"], w["batch_size"], w["input_tokens"], w["output_tokens"]) == (4, 3, 64, 24)
    assert r["throughput"]["output_tok_s"] == pytest.approx(24 / r["timing"]["window_s"])
    assert r["latency"]["ttft_s"]["n"] == 4 and r["latency"]["ttft_s"]["p50"] > 0
    assert r["latency"]["itl_request_mean_s"]["p50"] > 0
    assert r["energy"]["measured"] is False and "no supported energy meter" in r["energy"]["reason"]
    assert r["flops"]["total_flop"] == 2 * r["model"]["non_embedding_parameters"] * (64 + 24)
    assert r["timing"]["load_s"] > 0 and r["timing"]["warmup_batches"] == 1
    assert r["environment"]["packages"]["torch"].startswith("2.")
    assert r["memory"]["peak_rss_bytes"] > 10_000_000
    assert (folder / ".hydra" / "config.yaml").is_file()
    rows = [json.loads(x) for x in (folder / "requests.jsonl").read_text().splitlines()]
    assert [x["index"] for x in rows] == [0, 1, 2, 3] and all(x["output_tokens"] == 6 for x in rows)
    # the headline latencies are the requests' own: p50 of 4 values = mean of the middle two
    for key, field in (("ttft_s", "ttft_s"), ("itl_request_mean_s", "itl_s"), ("e2e_s", "e2e_s")):
        mid = sorted(x[field] for x in rows)[1:3]
        assert r["latency"][key]["p50"] == pytest.approx(sum(mid) / 2, rel=1e-6), key
    # static batches of 3 then 1: requests of a batch share their start, so TTFT <= e2e, request by request
    assert all(0 < x["ttft_s"] < x["e2e_s"] for x in rows)
    assert "output tok/s" in proc.stdout and "TTFT p50" in proc.stdout and "energy     not measured" in proc.stdout


@pytest.mark.slow
def test_aienergyscore_prompts_are_the_ones_measured(tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem(["dataset=aienergyscore", f"dataset.path={AIENERGYSCORE}", "n=3",
                     "pytorch.max_output_tokens=2", "pytorch.max_input_tokens=32", "warmup.n_batches=0",
                     "quiet=true"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    r = read_result(_only_result(tmp_path))
    assert r["workload"]["prompts"] == 3 and r["workload"]["dataset"] == "aienergyscore"
    # the first 3 AIEnergyScore prompts are 817, 168 and 732 tokens in tiny-gpt2's tokenizer: all 3 cut to 32
    assert r["workload"]["truncated_prompts"] == 3 and r["workload"]["input_tokens"] == 3 * 32


@pytest.mark.parametrize(
    ("args", "needles", "rc"),
    [
        (["pytorch.batch_sise=8"], ["pytorch.batch_sise", "Did you mean 'pytorch.batch_size'"], 2),
        (["pytorch.batch_size=abc"], ["pytorch.batch_size=abc is invalid: allowed an integer"], 2),
        (["precision=fp12"], ["precision=fp12 is invalid: allowed one of fp32, fp16, bf16"], 2),
        (["n=0"], ["n=0 is invalid: allowed an integer >= 1"], 2),
        (["pytorch.load_in_4bit=true", "pytorch.load_in_8bit=true"],
         ["pytorch.load_in_8bit=true is invalid", "choose one"], 2),
        (["pytorch.load_in_4bit=true"], ["pytorch.load_in_4bit=true is invalid", "without a CUDA GPU"], 2),
        (["dataset=jsonl", "dataset.path=/nonexistent.jsonl"], ["dataset.path=/nonexistent.jsonl", "no such file"], 2),
        (["energy=rapl", "energy.rapl_root=/nonexistent"], ["energy.meter=rapl", "energy.rapl.root=/nonexistent", "energy.rapl_root is now energy.rapl.root"], 2),
        (["vllm.max_tokens=8"], ["'vllm.max_tokens=8' sets a knob of backend vllm", "backend=pytorch"], 2),
    ],
)
def test_bad_input_fails_before_any_model_loads(tmp_path: Path, llem_cache: Path, args: list[str],
                                                 needles: list[str], rc: int) -> None:
    proc = run_llem(args, tmp_path, llem_cache, timeout=60)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    for result in tmp_path.glob("outputs/*/*/result.json"):  # validation failures are recorded, unloaded
        r = json.loads(result.read_text())
        assert r["status"] == "failed" and "load_s" not in r["timing"]


def test_help_and_cfg_job(tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem(["--help"], tmp_path, llem_cache, timeout=60)
    assert proc.returncode == 0 and "backend: openai, pytorch, vllm" in proc.stdout
    proc = run_llem(["--cfg", "job", "pytorch.batch_size=8", "model=gpt2"], tmp_path, llem_cache, timeout=60)
    assert proc.returncode == 0
    assert "batch_size: 8" in proc.stdout and "id: openai-community/gpt2" in proc.stdout
    assert not list(tmp_path.glob("outputs/*"))  # printing the config runs nothing


def test_info_lists_llems_own_sweeper_and_launcher(tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem(["--info"], tmp_path, llem_cache, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "LlemSweeper" in proc.stdout and "LlemLauncher" in proc.stdout  # plugin discovery works
    assert f"file://{REPO / 'conf'}" in proc.stdout  # the checkout's conf/ is the main config source
    assert "backend: pytorch" in proc.stdout  # the defaults tree: the default backend


def test_slurm_preset_composes_with_the_users_partition(tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=lab",
                     "--cfg", "hydra", "-p", "hydra.launcher"], tmp_path, llem_cache, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "SlurmLauncher" in proc.stdout and "partition: gpu" in proc.stdout and "account: lab" in proc.stdout
    assert "gpus_per_node: 1" in proc.stdout and "array_parallelism: 4" in proc.stdout


def test_users_own_config_folder(tmp_path: Path, llem_cache: Path) -> None:
    mine = tmp_path / "myconf" / "model"
    mine.mkdir(parents=True)
    (mine / "my-llm.yaml").write_text("id: my-org/my-llm\nrevision: abc123\n")
    for flags, overrides in ((["--config-dir", str(tmp_path / "myconf")], []),
                             ([], [f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"])):
        proc = run_llem([*flags, "--cfg", "job", *overrides, "model=my-llm"], tmp_path, llem_cache, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "id: my-org/my-llm" in proc.stdout and "revision: abc123" in proc.stdout


@pytest.mark.slow
def test_multirun_with_hydra_stock_sweeper(tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem(["-m", "pytorch.batch_size=1,2", "hydra/sweeper=basic", "hydra/launcher=basic",
                     "n=2", "pytorch.max_output_tokens=3", "warmup.n_batches=0", "quiet=true"],
                    tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    results = sorted(tmp_path.glob("multirun/*/*/*/result.json"))
    assert len(results) == 2
    rs = [json.loads(p.read_text()) for p in results]
    assert {r["workload"]["batch_size"] for r in rs} == {1, 2}
    assert rs[0]["identity"]["config_hash"] != rs[1]["identity"]["config_hash"]
    assert all(r["status"] == "completed" for r in rs)


@pytest.mark.slow
def test_installed_wheel_carries_its_configs(tmp_path: Path, llem_cache: Path) -> None:
    """Build the wheel, install it without deps into a folder, run from elsewhere: configs come along."""
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("llem-*.whl")
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr
    assert (site / "llem" / "conf" / "config.yaml").is_file()
    env = {"PYTHONPATH": str(site)}
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", "import sys, llem.config.paths as p; print(p.conf_dir())"],
                          cwd=work, env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.stdout.strip() == str(site / "llem" / "conf"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "llem", "--cfg", "job", "model=qwen2.5-0.5b"], cwd=work,
                          env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Qwen/Qwen2.5-0.5B-Instruct" in proc.stdout


def test_tab_completion_of_keys(tmp_path: Path, llem_cache: Path) -> None:
    exe = Path(sys.executable).parent / "llem"
    if not exe.exists():
        pytest.skip("the `llem` console script is not installed (pip install -e .)")
    import os

    env = {**os.environ, "COMP_LINE": "llem pytorch.batch_"}
    proc = subprocess.run([str(exe), "-sc", "query=bash"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert "pytorch.batch_size=" in proc.stdout, proc.stderr
