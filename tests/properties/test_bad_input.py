"""Every bad input: exit code 2, one `llem:` line naming the key or file, no traceback, before any model loads.

The table runs `python -m llem` as users do (one subprocess per case); the finer cases of the pure parts
(dataset files, context lengths, override keys, Hydra's errors) are checked in-process below it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import run_llem

from llem.config.schema import DatasetConfig, ExperimentConfig, PytorchConfig, VllmConfig
from llem.errors import UserError

LONG = " ".join(["energy token model power watt joule latency batch"] * 160)  # ~1,300 tiny-gpt2 tokens


def _files(root: Path) -> dict[str, Path]:
    """The bad files of the table, written into `root`."""
    files = {
        "empty.jsonl": b"",
        "nocol.jsonl": b'{"foo": "a"}\n{"foo": "b"}\n',
        "header.csv": b"id,prompt\n",
        "two.jsonl": b'{"prompt": "a"}\n{"prompt": "b"}\n',
        "notobj.jsonl": b'{"prompt": "a"}\n["not", "an", "object"]\n',
        "nonstr.jsonl": b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": 42}\n',
        "latin1.jsonl": b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n',
        "long.jsonl": (json.dumps({"prompt": "short one"}) + "\n" + json.dumps({"prompt": LONG}) + "\n").encode(),
    }
    (root / "conf" / "model").mkdir(parents=True)
    (root / "conf" / "model" / "mine.yaml").write_text("id: llem/tiny-gpt2\n  revision: [1\n")
    (root / "conf" / "typed.yaml").write_text("defaults:\n  - llem_schema\n  - backend: pytorch\n  - model: tiny\n"
                                              "  - dataset: synthetic\n  - energy: auto\n  - _self_\nn: abc\n")
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in files}


# (id, argv with {dir} for the files' folder, environment, needles that stderr must hold, True when the
# job itself starts (and writes a failed result.json) rather than Hydra refusing the command line)
CASES: list[tuple[str, list[str], dict[str, str], list[str], bool]] = [
    ("unknown model option", ["model=qwen"], {}, ["model=qwen", "Did you mean one of qwen2.5-0.5b", "tiny"], False),
    ("unknown dataset option", ["dataset=jsonx"], {}, ["dataset=jsonx", "Did you mean 'jsonl'?", "csv"], False),
    ("unknown energy option", ["energy=nvm"], {}, ["energy=nvm", "Did you mean 'nvml'?", "rapl"], False),
    ("unknown backend option", ["backend=vlm"], {}, ["backend=vlm", "Did you mean 'vllm'?", "pytorch"], False),
    ("not an integer", ["n=abc"], {}, ["n=abc is invalid: allowed an integer"], False),
    ("enum case", ["precision=FP16"], {}, ["precision=FP16 is invalid", "fp32, fp16, bf16", "did you mean 'fp16'"],
     False),
    ("+ typo", ["+pytorch.batch_sise=8"], {}, ["'pytorch.batch_sise'", "Did you mean 'pytorch.batch_size'",
                                              "vllm.engine_args"], False),
    ("YAML error in --config-dir", ["--config-dir", "{dir}/conf", "model=mine"], {},
     ["{dir}/conf/model/mine.yaml, line 2", "YAML error"], False),
    ("wrong type in a --config-dir file", ["--config-dir", "{dir}/conf", "-cn", "typed"], {},
     ["in config 'typed': n=abc is invalid: allowed an integer"], False),
    ("empty file", ["dataset=jsonl", "dataset.path={dir}/empty.jsonl"], {}, ["empty.jsonl", "the file is empty"],
     True),
    ("no prompt column", ["dataset=jsonl", "dataset.path={dir}/nocol.jsonl"], {},
     ["nocol.jsonl", "dataset.column is not set", "columns there: ['foo']"], True),
    ("header-only CSV", ["dataset=csv", "dataset.path={dir}/header.csv"], {},
     ["header.csv", "has a header row (id, prompt) but no rows"], True),
    ("fewer prompts than n", ["dataset=jsonl", "dataset.path={dir}/two.jsonl", "n=5"], {},
     ["n=5 but the dataset has only 2 prompts", "two.jsonl", "allowed n <= 2"], True),
    ("line not an object", ["dataset=jsonl", "dataset.path={dir}/notobj.jsonl"], {},
     ["notobj.jsonl", "line 2 is a list, not a JSON object"], True),
    ("non-string prompt", ["dataset=jsonl", "dataset.path={dir}/nonstr.jsonl"], {},
     ["nonstr.jsonl", "line 3: 'prompt' is a number (42); allowed a string"], True),
    ("undecodable bytes", ["dataset=jsonl", "dataset.path={dir}/latin1.jsonl"], {},
     ["latin1.jsonl", "line 2, column 16: byte 0xe9 is not UTF-8"], True),
    ("synthetic prompt + output over the context",
     ["dataset.input_tokens=1000", "pytorch.max_input_tokens=1000", "pytorch.max_output_tokens=100"], {},
     ["pytorch.max_output_tokens=100 is invalid: allowed at most 24", "context of 1024 tokens", "n_positions"],
     True),
    ("file prompt + output over the context",
     ["dataset=jsonl", "dataset.path={dir}/long.jsonl", "n=2", "pytorch.max_input_tokens=1000",
      "pytorch.max_output_tokens=100"], {},
     ["pytorch.max_output_tokens=100 is invalid: allowed at most 24", "prompt 1: 1000 tokens", "1024 tokens"], True),
    ("sweeping a study setting", ["-m", "study.n_cycles=1,2"], {},
     ["study.n_cycles=1,2 is refused", "study.* settings cannot be swept", "one value per study"], False),
    ("study_job set by hand in a study", ["-m", "study_job.cycle=3"], {},
     ["study_job.cycle=3 is refused", "set by llem's sweeper"], False),
    ("CUDA device on a CPU-only host", ["pytorch.device=cuda"], {}, ["pytorch.device=cuda is invalid", "auto or cpu"],
     True),
    ("Hub id, offline", ["model.id=nobody/no-such-model"], {"HF_HUB_OFFLINE": "1"},
     ["model.id=nobody/no-such-model", "HF_HUB_OFFLINE=1", "not in the Hugging Face cache"], True),
    ("Hub id, Hub unreachable", ["model.id=nobody/no-such-model"], {"HF_ENDPOINT": "http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0"},
     ["model.id=nobody/no-such-model", "is unreachable", "ConnectionRefusedError"], True),
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: a connect is refused at once


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    _files(root)
    return root


def _param(case: tuple[str, list[str], dict[str, str], list[str], bool]) -> Any:
    slow = [pytest.mark.slow] if case[0].startswith("file prompt") else []  # builds the tiny model's tokenizer
    return pytest.param(*case, id=case[0], marks=slow)


@pytest.mark.parametrize(("case", "args", "env", "needles", "job_started"), [_param(c) for c in CASES])
def test_bad_input_exits_2_with_one_line_before_any_model_loads(
        case: str, args: list[str], env: dict[str, str], needles: list[str], job_started: bool,
        bad_files: Path, tmp_path: Path, llem_cache: Path) -> None:
    if "cuda" in case:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this host has CUDA")
    port = str(_closed_port())
    fill = {"{dir}": str(bad_files), "{port}": port}

    def filled(text: str) -> str:
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    run_dir = tmp_path / "run"
    no_meter = [] if any(a.startswith("energy=") for a in args) else ["energy=none"]
    proc = run_llem([*map(filled, args), *no_meter, "quiet=true", f"hydra.run.dir={run_dir}"], tmp_path, llem_cache,
                    timeout=120, env={"HYDRA_FULL_ERROR": "0", "HF_HUB_CACHE": str(tmp_path / "hf"),
                                      **{k: filled(v) for k, v in env.items()}})
    err = proc.stderr
    assert proc.returncode == 2, proc.stdout[-2000:] + err[-3000:]
    assert "Traceback" not in err and "Error executing job" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("llem: "), err  # one line, llem's
    for needle in needles:
        assert filled(needle) in err, err
    result = run_dir / "result.json"
    if job_started:  # the job recorded its failure, and nothing was loaded
        r = json.loads(result.read_text())
        assert r["status"] == "failed" and "load_s" not in r["timing"] and not r.get("model"), r
        assert r["error"]["message"].split(";")[0] in err
        assert str(result) in err  # the line says where the failed result is
    else:
        assert not result.exists()  # refused before the job started


def test_a_study_refused_by_hydra_exits_2_with_one_line_and_no_sweep_folder(tmp_path: Path, llem_cache: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_llem(["-m", "precision=FP16,fp32", "model=qwen", "energy=none", f"hydra.sweep.dir={sweep}"], tmp_path,
                    llem_cache, timeout=120, env={"HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("llem: model=qwen: no such option") and proc.stderr.count("\n") == 1, proc.stderr
    assert not sweep.exists()


# -- in-process: datasets ---------------------------------------------------------------------------------
def test_dataset_files_with_a_byte_order_mark_read_as_utf8(tmp_path: Path) -> None:
    from llem.datasets import load_prompts

    (tmp_path / "p.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "caf\xc3\xa9"}\n{"prompt": "b"}\n')
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbfprompt,x\r\ncaf\xc3\xa9,1\r\nb,2\r\n")
    assert load_prompts(DatasetConfig(name="jsonl", path=str(tmp_path / "p.jsonl")), 2, 0) == ["café", "b"]
    assert load_prompts(DatasetConfig(name="csv", path=str(tmp_path / "p.csv")), 2, 0) == ["café", "b"]


@pytest.mark.parametrize(("name", "data", "column", "match"), [
    ("csv", b"", None, r"p\.csv'\: the file is empty"),
    ("jsonl", b"\n  \n", None, r"the file is empty"),
    ("jsonl", b'{"_source": "provenance only"}\n', None, r"holds no records"),
    ("jsonl", b'{"prompt": "a"}\n{"prompt": "b"\n', None, r"line 2 is not JSON"),
    ("jsonl", b'{"prompt": "a"}\n"just a string"\n', None, r"line 2 is a string, not a JSON object"),
    ("jsonl", b'{"prompt": "a"}\n{"text": "b"}\n', None, r"line 2 has no 'prompt'"),
    ("jsonl", b'{"prompt": "a"}\n{"prompt": null}\n', None, r"line 2 has no 'prompt'"),
    ("jsonl", b'{"q": "a"}\n{"q": ["b"]}\n', "q", r"line 2: 'q' is a list"),
    ("jsonl", b'{"prompt": "a"}\n{"prompt": true}\n', None, r"line 2: 'prompt' is a boolean"),
    ("csv", b"prompt,x\na,1\nb\n", None, r"line 3 has no 'prompt'|n=3 but"),
    ("csv", b"a,b\n1,2\n", None, r"has none of .*columns there: \['a', 'b'\]"),
    ("csv", b"prompt\na\n\xff\xfeb\n", None, r"line 3, column 1: byte 0xff is not UTF-8"),
])
def test_dataset_problems_name_the_file_and_line(tmp_path: Path, name: str, data: bytes, column: str | None,
                                                  match: str) -> None:
    from llem.datasets import DatasetError, load_prompts

    path = tmp_path / f"p.{name}"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=match) as info:
        load_prompts(DatasetConfig(name=name, path=str(path), column=column), 3, 0)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_empty_prompts_are_skipped_and_counted_against_n(tmp_path: Path) -> None:
    from llem.datasets import DatasetError, load_prompts

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": ""}\n{"prompt": "c"}\n')
    assert load_prompts(DatasetConfig(name="jsonl", path=str(path)), 2, 0) == ["a", "c"]
    with pytest.raises(DatasetError, match="n=3 but the dataset has only 2 prompts"):
        load_prompts(DatasetConfig(name="jsonl", path=str(path)), 3, 0)


# -- in-process: context length ----------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "expected"), [
    ({"model_type": "gpt2", "n_positions": 1024}, (1024, "n_positions")),
    ({"max_position_embeddings": 32768, "seq_length": 8192}, (8192, "seq_length")),  # the smallest, as vLLM
    ({"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
     (131072, "max_position_embeddings")),  # llama3/yarn lengths are already scaled
    ({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 4.0}},
     (16384, "max_position_embeddings x RoPE factor 4")),
    ({"model_type": "llava", "text_config": {"max_position_embeddings": 4096}}, (4096, "max_position_embeddings")),
    ({"hidden_size": 64}, (None, None)),
])
def test_context_tokens_as_vllm_derives_them(config: dict[str, Any], expected: tuple[Any, Any]) -> None:
    from llem.config.preflight import context_tokens

    assert context_tokens(config) == expected


def _cfg(backend: str = "pytorch", **knobs: Any) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.backend = backend
    if backend == "pytorch":
        cfg.pytorch = PytorchConfig(**knobs)
    else:
        cfg.vllm = VllmConfig(**knobs)
    return cfg


def test_context_check_is_exact_at_the_boundary() -> None:
    from llem.config.preflight import check_context
    from llem.errors import ConfigError
    gpt2 = {"n_positions": 1024}
    cfg = _cfg(max_input_tokens=1000, max_output_tokens=24)
    cfg.dataset.input_tokens = 1000
    check_context(cfg, gpt2, "test", None)  # 1000 + 24 = 1024 fits exactly
    cfg.pytorch.max_output_tokens = 25
    with pytest.raises(ConfigError, match=r"pytorch.max_output_tokens=25 is invalid: allowed at most 24 .*1024"):
        check_context(cfg, gpt2, "test", None)
    cfg.dataset.input_tokens = 64  # synthetic prompts are exactly input_tokens long: fits
    check_context(cfg, gpt2, "test", None)
    cfg.dataset.input_tokens, cfg.pytorch.max_input_tokens = 2000, 1024  # the prompt alone fills it
    with pytest.raises(ConfigError, match=r"pytorch.max_input_tokens=1024 is invalid: allowed at most 999"):
        check_context(cfg, gpt2, "test", None)


def test_vllm_context_is_max_model_len_when_set_and_refused_above_the_models() -> None:
    from llem.config.preflight import check_context
    from llem.errors import ConfigError
    cfg = _cfg("vllm", max_input_tokens=100, max_tokens=28, max_model_len=128)
    cfg.dataset.input_tokens = 100
    check_context(cfg, {"max_position_embeddings": 1024}, "test", None)
    cfg.vllm.max_tokens = 29
    with pytest.raises(ConfigError, match=r"vllm.max_tokens=29 is invalid: allowed at most 28 .*vllm.max_model_len=128"):
        check_context(cfg, {"max_position_embeddings": 1024}, "test", None)
    cfg.vllm.max_model_len = 2048
    with pytest.raises(ConfigError, match=r"vllm.max_model_len=2048 is invalid: allowed null or <= the model's "
                                          r"context of 1024"):
        check_context(cfg, {"max_position_embeddings": 1024}, "test", None)


@pytest.mark.slow
def test_file_prompts_under_a_generous_bound_are_not_refused(tiny_model: Path) -> None:
    """max_input_tokens + output over the context, yet the real prompts fit: counted with the tokenizer."""
    from llem.config.preflight import check_context
    from llem.errors import ConfigError
    cfg = _cfg(max_input_tokens=1000, max_output_tokens=100)
    cfg.dataset = DatasetConfig(name="jsonl", path="unused")
    check_context(cfg, {"n_positions": 1024}, "test", ["a short prompt", "another one"])
    with pytest.raises(ConfigError, match=r"prompt 1: 1000 tokens"):
        check_context(cfg, {"n_positions": 1024}, "test", ["a short prompt", LONG])


def test_a_cached_hub_model_is_checked_offline_from_its_cached_config(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hugging Face cache layout (refs/main -> snapshots/<commit>/config.json), no network."""
    from huggingface_hub import constants

    from llem.config.preflight import preflight
    from llem.errors import ConfigError
    repo = tmp_path / "hub" / "models--someone--small-lm"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "config.json").write_text(json.dumps({"max_position_embeddings": 128}))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(max_input_tokens=96, max_output_tokens=32)
    cfg.model.id, cfg.dataset.input_tokens = "someone/small-lm", 96
    preflight(cfg)  # 96 + 32 = 128: fits
    cfg.pytorch.max_output_tokens = 33
    with pytest.raises(ConfigError, match=r"at most 32 .*128 tokens \(max_position_embeddings in config.json of "
                                          r"someone/small-lm\)"):
        preflight(cfg)
    cfg.model.id = "someone/not-cached"
    with pytest.raises(UserError, match=r"model.id=someone/not-cached: not a folder and not in the Hugging Face "
                                        r"cache, and HF_HUB_OFFLINE=1"):
        preflight(cfg)


def test_cuda_index_beyond_the_visible_devices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-GPU host, as torch reports it (this machine has none: torch.cuda's answers are stood in)."""
    import torch

    from llem.backends.pytorch import preflight
    from llem.errors import ConfigError
    monkeypatch.setattr(preflight, "_torch_build", lambda: {"__version__": "2.x+cu124", "cuda": "12.4"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    preflight.check_device(_cfg(device="cuda:1"))
    preflight.check_device(_cfg(device="cuda"))
    with pytest.raises(ConfigError, match=r"pytorch.device=cuda:2 is invalid: allowed cuda or cuda:0..cuda:1: 2 CUDA "
                                          r"device\(s\) visible \(CUDA_VISIBLE_DEVICES='0,1'\)"):
        preflight.check_device(_cfg(device="cuda:2"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"pytorch.device=cuda is invalid: allowed auto or cpu .*sees no CUDA device"):
        preflight.check_device(_cfg(device="cuda"))


# -- in-process: the Hub probe ---------------------------------------------------------------------------
def test_hub_probe_tells_a_listening_port_from_a_closed_one() -> None:
    from llem.config.preflight import hub_unreachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert hub_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=2) is None
    closed = _closed_port()
    assert "ConnectionRefusedError" in (hub_unreachable(f"http://127.0.0.1:{closed}", timeout_s=2) or "")


# -- in-process: override keys and Hydra's errors -------------------------------------------------------------
def test_plus_keys_must_name_a_field_unless_under_a_passthrough_section(tmp_path: Path) -> None:
    from llem.config.overrides import check_argv, unknown_keys

    assert "did you mean 'pytorch.batch_size'" in (check_argv(["+pytorch.batch_sise=8"]) or "").lower()
    assert "did you mean 'pytorch.batch_size'" in (check_argv(["++pytorch.batch_sise=8"]) or "").lower()
    assert check_argv(["+vllm.engine_args.max_num_seqs=8", "+energy.extra.note=x", "+experiment=batch_sweep",
                       "~pytorch.top_k", "hydra.run.dir=x"]) is None
    (tmp_path / "mygroup").mkdir()
    assert check_argv(["--config-dir", str(tmp_path), "mygroup=a", "+mygroup=b"]) is None  # the user's own group
    assert "unknown key 'mygroup'" in (check_argv(["mygroup=a"]) or "")
    composed = {"n": 1, "pytorch": {"batch_size": 1, "batch_sise": 8}, "vllm": None,
                "energy": {"extra": {"anything": 1}}, "nope": 2}
    assert unknown_keys(composed) == ["pytorch.batch_sise", "nope"]


def test_hydra_errors_map_to_one_line_and_bugs_do_not() -> None:
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from llem.app import user_error_lines

    missing = MissingConfigException("In 'config': Could not find 'model/qwen'", "model/qwen",
                                     ["gpt2", "qwen2.5-0.5b", "qwen2.5-7b", "tiny"])
    assert user_error_lines(missing) == ["model=qwen: no such option in config group 'model'. Did you mean one of "
                                         "qwen2.5-0.5b, qwen2.5-7b? Allowed: gpt2, qwen2.5-0.5b, qwen2.5-7b, tiny"]
    assert user_error_lines(ConfigCompositionException("Could not override 'energy'.\nNo match.")) == [
        "Could not override 'energy'. No match."]
    assert user_error_lines(RuntimeError("a bug")) is None
    assert user_error_lines(KeyError("x")) is None
