"""Issue 23: the 16 inputs and 5 faults that slipped through, each as a user meets it.

Inputs: `python -m llem ...` exits 2 with `llem:` lines only (one per problem), no traceback, and the
job's result.json (when the job started) failed with nothing loaded. Faults: signals to a single run
(exit 128 + signal, result.json `interrupted` with a message), a read-only run folder (exit 4), any
other error at the top (one line, exit 1), the study refusal that claims no folder, the flag-order hint,
`--help`, and the pure parts (summary of an unwritable job, --vs differences, progress) in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_llem


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("round2")
    (root / "badjson").mkdir()
    (root / "badjson" / "config.json").write_text('{"model_type": "gpt2",\n  "n_positions": \n')
    (root / "emptytok").mkdir()
    (root / "folder.jsonl").mkdir()
    (root / "exits.sh").write_text("#!/bin/sh\nexit 3\n")
    (root / "exits.sh").chmod(0o755)
    (root / "plain.txt").write_text("not a program\n")
    (root / "plain.txt").chmod(0o644)
    return root


@pytest.fixture(scope="module")
def silent_server() -> Iterator[int]:
    """A socket that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for s in held:
        s.close()
    srv.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# (id, argv with {dir}/{closed}/{silent}, environment, needles (each in stderr), number of llem: lines,
# True when the job starts and writes a failed result.json)
CASES: list[tuple[str, list[str], dict[str, str], list[str], int, bool]] = [
    ("invalid config.json, pytorch", ["model.id={dir}/badjson"], {},
     ["model.id={dir}/badjson is invalid", "config.json is valid JSON", "line 3, column 1"], 1, True),
    ("invalid config.json, vllm", ["backend=vllm", "model.id={dir}/badjson"], {},
     ["model.id={dir}/badjson is invalid", "config.json is valid JSON"], 1, True),
    ("invalid config.json, openai (no server started)", ["backend=openai", "model.id={dir}/badjson"], {},
     ["model.id={dir}/badjson is invalid", "config.json is valid JSON"], 1, True),
    ("empty tokenizer folder", ["model.tokenizer_id={dir}/emptytok"], {},
     ["model.tokenizer_id={dir}/emptytok is invalid", "a tokenizer folder", "has none"], 1, True),
    ("base_url port out of range", ["backend=openai", "openai.base_url=http://127.0.0.1:99999/v1"], {},
     ["openai.base_url=http://127.0.0.1:99999/v1 is invalid", "port in 1..65535"], 1, True),
    ("base_url bad scheme", ["backend=openai", "openai.base_url=ftp://127.0.0.1:8000/v1"], {},
     ["openai.base_url=ftp://127.0.0.1:8000/v1 is invalid", "http(s)://host:port/v1"], 1, True),
    ("base_url nothing listening", ["backend=openai", "openai.base_url=http://127.0.0.1:{closed}/v1"], {},
     ["openai.base_url=http://127.0.0.1:{closed}/v1 is invalid", "nothing accepts a connection",
      "ConnectionRefusedError"], 1, True),
    ("base_url accepts and never answers", ["backend=openai", "openai.base_url=http://127.0.0.1:{silent}/v1"], {},
     ["openai.base_url=http://127.0.0.1:{silent}/v1 is invalid", "accepts connections but no answer within 3 s"],
     1, True),
    ("server command missing", ["backend=openai", 'openai.server.command=[/no/such/server,"{port}"]'], {},
     ["openai.server.command=['/no/such/server', '{port}'] is invalid", "is not a file and not on PATH"], 1, True),
    ("server command not executable", ["backend=openai", 'openai.server.command=[{dir}/plain.txt,"{port}"]'], {},
     ["openai.server.command=", "not executable (chmod +x it)"], 1, True),
    ("serving knob under offline: max_concurrency", ["scenario.max_concurrency=0"], {},
     ["scenario.max_concurrency=0 is invalid", "add scenario=serving"], 1, True),
    ("serving knob under offline: request_rate", ["scenario.request_rate=5"], {},
     ["scenario.request_rate=5.0 is invalid", "add scenario=serving"], 1, True),
    ("huge n", ["n=100000000"], {}, ["n=100000000 is invalid", "max_prompts=100000", "allow_over_max_prompts"], 1,
     True),
    ("directory as dataset.path", ["dataset=jsonl", "dataset.path={dir}/folder.jsonl"], {},
     ["dataset.path={dir}/folder.jsonl is invalid", "a jsonl file, not a directory"], 1, True),
    ("Hub dataset offline", ["dataset=aienergyscore"], {"HF_HUB_OFFLINE": "1"},
     ["dataset.hub_id=AIEnergyScore/text_generation", "HF_HUB_OFFLINE=1"], 1, True),
    ("Hub dataset, Hub unreachable", ["dataset=hf", "dataset.hub_id=foo/bar"],
     {"HF_ENDPOINT": "http://127.0.0.1:{closed}", "HF_HUB_OFFLINE": "0"},
     ["dataset.hub_id=foo/bar", "is unreachable", "ConnectionRefusedError"], 1, True),
    ("model and dataset both wrong: model first, both reported", ["model.id=nobody/none", "dataset=hf",
                                                                 "dataset.hub_id=foo/bar"],
     {"HF_HUB_OFFLINE": "1"}, ["model.id=nobody/none", "dataset.hub_id=foo/bar"], 2, True),
    # keys the schema walk (tests/properties/test_every_key.py) found unchecked, through the command line
    ("a negative plateau", ["energy.thermal_plateau_s=-1"], {}, ["energy.thermal_plateau_s=-1.0 is invalid", "> 0"],
     1, True),
    ("a negative seed", ["seed=-5"], {}, ["seed=-5 is invalid", "[0, 4294967295]"], 1, True),
    ("a launcher knob under study.", ["study.health_poll_s=nan"], {},
     ["'study.health_poll_s' is a launcher knob: set hydra.launcher.health_poll_s instead"], 1, False),
    ("an empty string", ["dataset.split=''"], {}, ["dataset.split='' is invalid", "a non-empty string"], 1, True),
    ("flag after an override", ["hydra.sweep.dir={dir}/never", "-m", "n=1,2"], {},
     ["put Hydra's flags before the overrides", "python -m llem -m hydra.sweep.dir="], 1, False),
]


@pytest.mark.parametrize(("case", "args", "env", "needles", "n_lines", "job_started"),
                         [pytest.param(*c, id=c[0]) for c in CASES])
def test_round2_bad_inputs_exit_2_with_llem_lines_only(case: str, args: list[str], env: dict[str, str],
                                                        needles: list[str], n_lines: int, job_started: bool,
                                                        inputs: Path, silent_server: int, tmp_path: Path,
                                                        llem_cache: Path) -> None:
    fill = {"{dir}": str(inputs), "{closed}": str(_closed_port()), "{silent}": str(silent_server)}

    def filled(text: str) -> str:
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    run_dir = tmp_path / "run"
    proc = run_llem([*map(filled, args), "energy=none", "quiet=true", f"hydra.run.dir={run_dir}"], tmp_path,
                    llem_cache, timeout=120, env={"HYDRA_FULL_ERROR": "0", "HF_HUB_CACHE": str(tmp_path / "hf"),
                                                  **{k: filled(v) for k, v in env.items()}})
    err = proc.stderr
    assert proc.returncode == 2, proc.stdout[-2000:] + err[-3000:]
    assert "Traceback" not in err and "usage:" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == n_lines and all(line.startswith("llem: ") for line in lines), err
    for needle in needles:
        assert filled(needle) in err, err
    if n_lines == 2:  # the model's problem first
        assert lines[0].startswith("llem: model.id=") and "dataset.hub_id" in lines[1], err
    result = run_dir / "result.json"
    if job_started:
        r = json.loads(result.read_text())
        assert r["status"] == "failed" and "load_s" not in r["timing"] and not r.get("model"), r
    else:
        assert not result.exists() and not (inputs / "never").exists()


# -- faults -------------------------------------------------------------------------------------------
def _start(args: list[str], cwd: Path, cache: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, "LLEM_CACHE": str(cache), "HYDRA_FULL_ERROR": "0", **(env or {})}
    full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "llem", *args], cwd=cwd, env=full, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_a_single_run_with_one_line_and_an_interrupted_result(sig: signal.Signals, tmp_path: Path,
                                                                            llem_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(["energy=none", "quiet=true", "debug.fault=sleep", "debug.sleep_s=60",
                   f"hydra.run.dir={run_dir}"], tmp_path, llem_cache)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # result.json says running, then the job sleeps in its fault
            try:
                if json.loads((run_dir / "result.json").read_text())["status"] == "running":
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"llem: interrupted by {sig.name}"), err
    r = json.loads((run_dir / "result.json").read_text())
    assert r["status"] == "interrupted" and sig.name in r["error"]["message"], r["error"]


def test_any_error_at_the_top_is_one_line_unless_hydra_full_error(tmp_path: Path, llem_cache: Path) -> None:
    """A fault that is not bad input (here an injected RuntimeError; a server killed mid-run or one that
    never sends [DONE] reach the top the same way): one `llem:` line, exit 1; the traceback only with
    HYDRA_FULL_ERROR=1 (and always in result.json)."""
    args = ["energy=none", "quiet=true", "debug.fault=raise"]
    quiet = run_llem([*args, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path, llem_cache, env={"HYDRA_FULL_ERROR": "0"})
    assert quiet.returncode == 1, quiet.stderr
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("llem: RuntimeError: debug.fault=raise"), quiet.stderr
    assert "HYDRA_FULL_ERROR=1" in lines[0] and str(tmp_path / "a" / "result.json") in lines[0]
    assert "traceback" in json.loads((tmp_path / "a" / "result.json").read_text())["error"]
    full = run_llem([*args, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path, llem_cache, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr and "llem: RuntimeError" in full.stderr


@pytest.mark.slow  # resolves the tiny model for the server's command line first
def test_a_server_command_that_exits_at_once_is_one_line(inputs: Path, tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem(["backend=openai", f'openai.server.command=[{inputs}/exits.sh,"{{port}}"]', "energy=none",
                     "quiet=true", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, llem_cache,
                    env={"HYDRA_FULL_ERROR": "0"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "exited with code 3" in lines[0], proc.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run the job as another user (a read-only folder for that user)")
def test_a_read_only_run_dir_is_exit_4_and_one_line(tmp_path: Path) -> None:
    base = Path("/tmp") / f"llem-ro-{os.getpid()}"  # outside root's private pytest folder
    run_dir, cache = base / "run", base / "cache"
    run_dir.mkdir(parents=True)
    cache.mkdir()
    try:
        os.chmod(cache, 0o777)
        os.chmod(run_dir, 0o555)
        os.chmod(base, 0o755)
        env = {**os.environ, "LLEM_CACHE": str(cache), "HYDRA_FULL_ERROR": "0", "HOME": str(cache)}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                               "llem", "energy=none", "quiet=true", f"hydra.run.dir={run_dir}"], cwd=cache, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"llem: cannot write {run_dir}") and "Permission denied" in lines[0]


def test_a_study_refused_for_gpu_slots_claims_no_folder(tmp_path: Path, llem_cache: Path) -> None:
    from llem.launch.slots import visible_gpus

    try:
        if visible_gpus(None, None):
            pytest.skip("this host has GPUs")
    except Exception:  # noqa: BLE001 - no NVML at all: no GPUs
        pass
    sweep = tmp_path / "sweep"
    proc = run_llem(["-m", "hydra.launcher.gpus_per_job=1", "n=1,2", "energy=none", f"hydra.sweep.dir={sweep}"], tmp_path,
                    llem_cache, timeout=120, env={"HYDRA_FULL_ERROR": "0", "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("llem: ") and "gpus_per_job" in lines[0], proc.stderr
    assert not any((sweep / f).exists() for f in ("plan.json", "manifest.json", "summary.csv", "multirun.yaml"))
    again = run_llem(["-m", "n=1,2", "energy=none", "study.dry_run=true", f"hydra.sweep.dir={sweep}"], tmp_path,
                     llem_cache, timeout=120, env={"HYDRA_FULL_ERROR": "0"})
    assert again.returncode == 0 and "already holds" not in again.stderr, again.stderr[-3000:]


def test_help_names_llem(tmp_path: Path, llem_cache: Path) -> None:
    proc = run_llem(["--help"], tmp_path, llem_cache, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("llem: measure the energy") and "powered by Hydra" not in proc.stdout
    assert "docs/errors.md" in proc.stdout and "--hydra-help" in proc.stdout


# -- in-process: the pure parts -----------------------------------------------------------------------
def test_flag_order_hint_only_where_argparse_would_refuse() -> None:
    from llem.config.inputs import argv_order_problem

    assert argv_order_problem(["-m", "n=1,2"]) is None
    assert argv_order_problem(["hydra.sweep.dir=x", "-m"]) is None  # argparse takes a trailing flag
    assert argv_order_problem(["--config-dir", "a=b", "n=1"]) is None  # a flag's value with '=' in it
    hint = argv_order_problem(["hydra.sweep.dir=x", "-m", "n=1,2"]) or ""
    assert hint.endswith("python -m llem -m hydra.sweep.dir=x n=1,2"), hint
    hint = argv_order_problem(["n=1", "-cd", "conf", "m=2"]) or ""
    assert hint.endswith("python -m llem -cd conf n=1 m=2"), hint


def test_the_summary_names_a_job_whose_folder_became_unwritable_as_failed() -> None:
    import pandas as pd

    from llem.results.study_summary import render_summary

    jobs = pd.DataFrame([{"job_dir": f"s/{i}", "status": "completed", "config_hash": f"h{i}", "cycle": 0,
                          "job_index": i, "output_tok_s": 10.0} for i in range(3)]
                        + [{"job_dir": "s/3", "status": "running", "config_hash": "h3", "cycle": 0, "job_index": 3}])
    err = {"type": "StorageError", "message": "cannot write s/4/result.json: Read-only file system",
           "reason": "io_error"}
    manifest = {"jobs": [*({"index": i, "config_hash": f"h{i}", "cycle": 0, "status": "completed"} for i in range(3)),
                         {"index": 3, "config_hash": "h3", "cycle": 0, "status": "failed", "error": err},
                         {"index": 4, "config_hash": "h4", "cycle": 0, "status": "failed", "error": err,
                          "overrides": ["n=4"]},
                         {"index": 5, "config_hash": "h5", "cycle": 0, "status": "planned"}]}
    table = pd.DataFrame([{"config": "(defaults)"}])
    text = render_summary(jobs, table, manifest)
    head = text.splitlines()[0]
    assert "3 completed, 2 failed/interrupted, 1 not run" in head, text
    assert "job 3  (defaults)  failed  StorageError: cannot write" in text and "[io_error]" in text, text
    assert "job 4  n=4  failed (no result.json)  StorageError" in text, text
    assert "not run (1): job 5 (planned)" in text, text


def test_vs_says_in_what_matched_configs_differ(tmp_path: Path) -> None:
    from llem.results.compare import Matching, render_compare
    from llem.results.confdiff import differences, job_config

    for name, n in (("a", 4), ("b", 16)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(
            {"config": {"n": n, "seed": 0, "quiet": n == 4, "model": {"id": "m", "cache_dir": f"/{name}"}}}))
    diff = differences(job_config(tmp_path / "a"), job_config(tmp_path / "b"))
    assert diff == ["n: 4 vs 16"]  # quiet and model.cache_dir do not change what is measured
    import pandas as pd

    table = pd.DataFrame([{"config": "x", "match": "overrides", "metric": "output_tok_s", "ratio": 1.0,
                           "ci95_low": float("nan"), "ci95_high": float("nan"), "significant": None}])
    m = Matching(pairs=[("aaaaaaaa11", "bbbbbbbb22", "overrides")], key_columns=["override.x"],
                 differences={("aaaaaaaa11", "bbbbbbbb22"): diff})
    assert "aaaaaaaa vs bbbbbbbb differ in: n: 4 vs 16" in render_compare(table, m, "A", "B")


def test_a_later_report_removes_earlier_compare_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llem.report.build as report

    out = tmp_path / "report"
    out.mkdir()
    for name in ("compare.csv", "compare.parquet", "compare.png"):
        (out / name).write_text("old")
    (out / "keep.txt").write_text("mine")

    class Stop(Exception):
        pass

    def stop(*a: Any, **k: Any) -> None:
        raise Stop

    import pandas as pd

    monkeypatch.setattr(report, "load", lambda p: pd.DataFrame([{"status": "completed"}]))
    monkeypatch.setattr(report, "_torn_results", lambda jobs: {})
    monkeypatch.setattr(report, "summary_frame", lambda *a, **k: pd.DataFrame())
    monkeypatch.setattr(report, "Report", stop)  # right after the cleanup: nothing else of the report runs
    study = tmp_path / "study"
    study.mkdir()
    with pytest.raises(Stop):
        report.build_report(study, out, None)
    left = sorted(p.name for p in out.iterdir())
    assert not any(n.startswith("compare.") for n in left) and "keep.txt" in left, left


def test_progress_is_quiet_when_short_and_shows_lines_or_a_bar_when_long(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import llem.progress as progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])

    def run(tty: bool, seconds_per_step: float, n: int = 64 * 40) -> str:
        stream = io.StringIO()
        stream.isatty = lambda: tty  # type: ignore[method-assign]
        clock[0] = 0.0
        p = progress.Progress(n, "synthetic prompts", stream)
        for _ in range(n):
            clock[0] += seconds_per_step
            p.step()
        p.done()
        return stream.getvalue()

    assert run(False, 0.0001) == ""  # 0.26 s in all: nothing printed
    log = run(False, 0.05)  # 128 s: a line every 10 s after the first 2 s
    lines = log.splitlines()
    assert 10 <= len(lines) <= 14 and all(x.startswith("llem progress: synthetic prompts: ") for x in lines), log
    assert lines[-1].startswith("llem progress: synthetic prompts: 2560/2560 (100 %)"), log
    bar = run(True, 0.05)
    assert bar.startswith("\rllem progress: [") and bar.endswith("\n") and "\n" not in bar[:-1], bar[:200]


def test_n_is_bounded_by_max_prompts_exactly_unless_allowed() -> None:
    from llem.config.schema import ExperimentConfig, PytorchConfig
    from llem.config.validate import problems

    cfg = ExperimentConfig()
    cfg.pytorch = PytorchConfig()
    cfg.max_prompts, cfg.n = 50, 50
    assert not problems(cfg)  # at the cap: fine
    cfg.n = 51
    assert [(k, v) for k, v, _ in problems(cfg)] == [("n", 51)]
    cfg.allow_over_max_prompts = True
    assert not problems(cfg)
    cfg.max_prompts = 0
    assert [k for k, _, _ in problems(cfg)] == ["max_prompts"]


def test_serving_knobs_are_refused_only_under_offline_and_only_when_changed() -> None:
    from llem.config.schema import ExperimentConfig, PytorchConfig, VllmConfig
    from llem.config.validate import problems

    cfg = ExperimentConfig()
    cfg.pytorch = PytorchConfig()
    assert not problems(cfg)  # the defaults, nan-free: inf request_rate is the default
    cfg.scenario.slo.ttft_s = 2.0
    assert [k for k, _, _ in problems(cfg)] == ["scenario.slo.ttft_s"]
    serving = ExperimentConfig()
    serving.backend, serving.pytorch, serving.vllm = "vllm", None, VllmConfig()
    serving.scenario.name, serving.scenario.request_rate, serving.scenario.slo.ttft_s = "serving", 5.0, 2.0
    assert not problems(serving)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root for a read-only bind mount")
def test_a_job_folder_turning_read_only_mid_study_is_one_line_and_a_true_summary(tmp_path: Path,
                                                                                  llem_cache: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = _start(["-m", "pytorch.max_output_tokens=2,3,4", "debug.fault=sleep", "debug.sleep_s=2", "n=2",
                   "warmup.n_batches=0", "quiet=true", "energy=none", "hydra.launcher.progress=false",
                   f"hydra.sweep.dir={sweep}"], tmp_path, llem_cache)
    job1 = sweep / "1"
    mounted = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads((job1 / "result.json").read_text())["status"] == "running":
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        for cmd in (["mount", "--bind", str(job1), str(job1)], ["mount", "-o", "remount,bind,ro", str(job1)]):
            if subprocess.run(cmd, capture_output=True, timeout=10).returncode:
                pytest.skip("cannot bind-mount here")
            mounted = True
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        if mounted:
            subprocess.run(["umount", str(job1)], capture_output=True, timeout=10)
    assert proc.returncode == 4, err[-3000:]
    assert "Traceback" not in err and "Logging error" not in err, err[-3000:]
    assert all(line.startswith("llem: ") for line in err.splitlines() if line.strip()), err[-3000:]
    assert "1 completed, 1 failed/interrupted, 1 not run" in out, out[-3000:]
    assert "job 1  pytorch.max_output_tokens=3  failed  StorageError: cannot write" in out, out[-3000:]
