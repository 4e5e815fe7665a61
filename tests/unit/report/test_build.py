"""`python -m llem.report` on generated studies and on a real tiny multirun: files, plots, the page."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
from conftest import run_llem

import llem.results as results
from llem.report import ReportError, build_report
from llem.report.__main__ import main
from llem.results.example import write_example_job, write_example_study
from llem.results.study_summary import write_sweep_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    """A real, non-blank image of a sensible size."""
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, path
    img = mpimg.imread(path)
    assert img.shape[0] >= 250 and img.shape[1] >= 500, (path, img.shape)
    assert img[..., :3].std() > 0.05, f"{path} looks blank"


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("studies")
    write_example_study(root / "a", cycles=3)
    write_example_study(root / "b", cycles=2, speed=1.4, precision="fp16", failed=False, skipped=False)
    write_example_study(root / "cpu", cycles=2, energy=False, failed=False, skipped=False)
    return {p.name: p for p in root.iterdir()}


def test_report_with_energy_writes_tables_plots_and_page(studies: dict[str, Path], tmp_path: Path) -> None:
    rep = build_report(studies["a"], out=tmp_path / "rep")
    names = {p.name for p in rep.files}
    pngs = {"energy_vs_throughput.png", "latency_vs_throughput.png", "j_per_token_vs_batch.png",
            "throughput_vs_batch.png", "latency_distributions.png", "timeseries.png"}
    assert pngs | {"jobs.csv", "jobs.parquet", "configs.csv", "configs.parquet", "report.md"} <= names
    assert rep.notes == {}
    for name in pngs:
        assert_png(tmp_path / "rep" / name)
    page = rep.page.read_text()
    for name in pngs:
        assert f"]({name})" in page, name
    assert "OutOfMemoryError" in page and "pytorch.batch_size=0 is invalid" in page
    jobs = pd.read_parquet(tmp_path / "rep" / "jobs.parquet")
    assert len(jobs) == 24 and "latency.ttft_s.p50" in jobs
    configs = pd.read_csv(tmp_path / "rep" / "configs.csv").set_index("config")
    assert bool(configs.loc["backend=vllm vllm.max_num_seqs=128", "pareto.energy"])
    assert not configs.loc["pytorch.batch_size=1", "pareto.energy"]
    assert "UNSTABLE" in page.split("pytorch.batch_size=16 |")[1].splitlines()[0]


def test_pareto_front_of_a_real_tradeoff_is_marked(tmp_path: Path) -> None:
    # fast-but-hungry, frugal-but-slow, and one worse than the fast one on both axes
    for i, (tok_s, jpt) in enumerate([(900.0, 0.5), (200.0, 0.1), (700.0, 0.6)]):
        for cycle in range(2):
            write_example_job(tmp_path / "s" / f"{i}{cycle}", overrides=[f"pytorch.batch_size={2 ** i}"],
                              batch_size=2**i, cycle=cycle, output_tok_s=tok_s * (1 + cycle / 100),
                              j_per_output_token=jpt)
    rep = build_report(tmp_path / "s", out=tmp_path / "rep")
    configs = pd.read_csv(tmp_path / "rep" / "configs.csv").set_index("config")
    assert configs["pareto.energy"].to_dict() == {"pytorch.batch_size=1": True, "pytorch.batch_size=2": True,
                                                  "pytorch.batch_size=4": False}
    assert_png(tmp_path / "rep" / "energy_vs_throughput.png")
    assert "energy Pareto front" in rep.page.read_text()


def test_cpu_only_study_says_energy_is_missing_and_plots_latency(studies: dict[str, Path], tmp_path: Path) -> None:
    rep = build_report(studies["cpu"], out=tmp_path)
    assert not (tmp_path / "energy_vs_throughput.png").exists()
    assert not (tmp_path / "j_per_token_vs_batch.png").exists()
    assert "energy measurement disabled" in rep.notes["energy_vs_throughput"]
    assert "no timeseries.parquet" in rep.notes["timeseries"]
    page = rep.page.read_text()
    assert "> energy was not measured in this study" in page
    for name in ("latency_vs_throughput.png", "throughput_vs_batch.png", "latency_distributions.png"):
        assert_png(tmp_path / name)
        assert f"]({name})" in page


def test_cli_vs_compares_two_studies(studies: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(studies["a"]), "--vs", str(studies["b"]), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "B/A ratios" in out and "matched by overrides on: backend" in out
    cmp = pd.read_csv(tmp_path / "compare.csv")
    assert set(cmp["metric"]) == {"throughput.output_tok_s", "energy.j_per_output_token", "latency.ttft_s.p50",
                                  "latency.itl_request_mean_s.p50"}
    assert cmp["config"].nunique() == 8
    tok = cmp[cmp["metric"] == "throughput.output_tok_s"]
    assert tok["ratio"].between(1.2, 1.6).all()  # B was made 1.4× faster
    jpt = cmp[cmp["metric"] == "energy.j_per_output_token"]
    assert (jpt["ratio"] < 1).all()
    assert ((cmp["ci95_low"] <= cmp["ratio"]) | cmp["ci95_low"].isna()).all()
    assert_png(tmp_path / "compare.png")
    page = (tmp_path / "report.md").read_text()
    assert "## Comparison" in page and "](compare.png)" in page and "Welch" in page


def test_cli_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no result.json under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--cv-threshold", "0"])
    assert "--cv-threshold=0.0: allowed a number > 0" in capsys.readouterr().err
    write_example_job(tmp_path / "one", overrides=["n=4"])
    with pytest.raises(ReportError, match="--job="):
        build_report(tmp_path / "one", job=str(tmp_path / "elsewhere"))


# -- a real tiny multirun (llem's sweeper and launcher, or Hydra's stock ones) ------------------------

@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory: pytest.TempPathFactory, llem_cache: Path) -> Path:
    """Two real pytorch jobs on the tiny model: batch sizes 1 and 2."""
    cwd = tmp_path_factory.mktemp("real-multirun")
    proc = run_llem(["-m", "pytorch.batch_size=1,2", "n=4", "pytorch.max_output_tokens=4", "warmup.n_batches=1",
                     "dataset.input_tokens=16", "quiet=true"], cwd, llem_cache, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = sorted(cwd.glob("multirun/*/*"))
    assert len(sweeps) == 1
    return sweeps[0]


@pytest.mark.slow
def test_real_multirun_loads_summarises_and_reports(real_sweep: Path, tmp_path: Path) -> None:
    df = results.load(real_sweep)
    n_files = len(list(real_sweep.glob("*/result.json")))
    assert len(df) == n_files == 2
    assert (df["status"] == "completed").all() and df["config_hash"].nunique() == 2
    assert sorted(df["override.pytorch.batch_size"]) == [1, 2]
    # n=4 prompts x 4 tokens each (the tiny model runs to max_output_tokens), over each job's own window
    assert (df["workload.output_tokens"] == 16).all() and (df["latency.ttft_s.p50"] > 0).all()
    assert df["throughput.output_tok_s"].tolist() == pytest.approx((16 / df["timing.window_s"]).tolist(), rel=1e-9)
    assert df["energy.j_per_output_token"].isna().all()  # CPU-only host: no meter
    first = json.loads((Path(df["job_dir"][0]) / "result.json").read_text())
    assert df["throughput.output_tok_s"][0] == first["throughput"]["output_tok_s"]

    text = write_sweep_summary(real_sweep)
    assert "pytorch.batch_size=1" in text and "pytorch.batch_size=2" in text
    assert len(pd.read_parquet(real_sweep / "summary.parquet")) == 2

    proc = run_llem([str(real_sweep), "--out", str(tmp_path), "--vs", str(real_sweep)], tmp_path,
                    Path("/nonexistent"), timeout=120, module="llem.report")
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and "B/A ratios" in proc.stdout
    for name in ("latency_vs_throughput.png", "throughput_vs_batch.png", "latency_distributions.png"):
        assert_png(tmp_path / name)
    cmp = pd.read_csv(tmp_path / "compare.csv")
    assert (cmp["match"] == "config_hash").all() and cmp["ratio"].tolist() == pytest.approx([1.0] * len(cmp))
    page = (tmp_path / "report.md").read_text()
    assert "energy was not measured" in page and "no supported energy meter" in page
