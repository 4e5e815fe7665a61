"""The result names what ran: `model.id` decides what loads (builtin, local folder, Hub id at a pinned
commit), and the result records the source, commit, tokenizer, dtypes, attention, generation settings
and threads of what actually loaded. Hub loads go through a real HF cache layout on disk, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_llem

from llem.config.schema import ExperimentConfig, ModelConfig, PytorchConfig
from llem.errors import ConfigError
from llem.models import ModelNotFound, identity_fields, locate, locate_all, parameters_check, resolve_sources

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _compose(overrides: list[str]) -> Any:
    """The experiment config exactly as `python -m llem <overrides>` composes it (Hydra, our conf/)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from llem.config.paths import conf_dir
    from llem.config.store import register

    register()  # the structured schema the YAML extends
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="llem"):
        cfg = compose(config_name="config", overrides=overrides)
    GlobalHydra.instance().clear()
    return OmegaConf.to_object(cfg.model) if hasattr(cfg, "model") else None


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two local model folders of different sizes (same architecture), built with llem's tiny builder."""
    from llem.models.tiny import build_model_folder

    root = tmp_path_factory.mktemp("models")
    return {"small": build_model_folder(root / "small"), "big": build_model_folder(root / "big", n_layer=4)}


@pytest.fixture(scope="module")
def hub_cache(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face hub cache on disk: acme/tiny with two commits, refs/main -> A, tag v2 -> B."""
    import shutil

    hub = tmp_path_factory.mktemp("hf") / "hub"
    repo = hub / "models--acme--tiny"
    shutil.copytree(folders["small"], repo / "snapshots" / COMMIT_A)
    shutil.copytree(folders["big"], repo / "snapshots" / COMMIT_B)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT_A)
    (repo / "refs" / "v2").write_text(COMMIT_B)
    return hub


@pytest.fixture
def offline_hub(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_CACHE/HF_HUB_OFFLINE for this process (huggingface_hub and transformers read them per call)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_cache


# -- which source: fast, no torch -------------------------------------------------------------------------
def test_the_default_group_with_a_model_id_loads_that_id(folders: dict[str, Path]) -> None:
    default = _compose([])
    assert (default.id, locate(default.id, default.revision).kind) == ("llem/tiny-gpt2", "builtin")
    for given, kind in ((str(folders["big"]), "local"), ("Qwen/Qwen2.5-7B-Instruct", "hub"),
                        ("llem/tiny-llama", "builtin")):
        m = _compose([f"model.id={given}"])  # the default model group (tiny) stays selected
        src = locate(m.id, m.revision)
        assert (m.id, src.kind) == (given, kind)
        assert src.path == (str(folders["big"].resolve()) if kind == "local" else given)
    m = _compose(["model=tiny-llama", "model.id=openai-community/gpt2", "model.revision=v1"])
    assert (locate(m.id, m.revision).kind, m.revision) == ("hub", "v1")


def test_a_revision_on_a_folder_or_a_builtin_is_refused(folders: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as err:
        locate(str(folders["small"]), "main")
    assert str(err.value).startswith("model.revision=main is invalid: allowed null: model.id=")
    assert "local folder" in str(err.value)
    with pytest.raises(ConfigError, match=r"model.revision=abc .*llem/tiny-gpt2 is a builtin model"):
        locate("llem/tiny-gpt2", "abc")
    cfg = ExperimentConfig(model=ModelConfig(tokenizer_revision="v1"))
    with pytest.raises(ConfigError, match=r"model.tokenizer_revision=v1 is invalid: allowed null unless model.tokenizer_id"):
        locate_all(cfg)


def test_ids_that_name_nothing_loadable_are_refused_before_any_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.id=llem/tiny-bert .*reserved"):
        locate("llem/tiny-bert", None)
    with pytest.raises(ConfigError, match=r"model.id=/nope/model .*no folder exists at /nope/model"):
        locate("/nope/model", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"a model folder with a config.json"):
        locate(str(tmp_path / "empty"), None)
    cfg = ExperimentConfig(model=ModelConfig(id="llem/tiny-gpt2", tokenizer_id="./missing-tokenizer"))
    with pytest.raises(ConfigError, match=r"model.tokenizer_id=./missing-tokenizer"):
        locate_all(cfg)


def test_parameters_check_flags_a_count_that_differs() -> None:
    assert parameters_check({"parameters": 10}, {"parameters": 10}, "x")["ok"] is True
    bad = parameters_check({"parameters": 10}, {"parameters": 11}, "a meta build")
    assert bad["ok"] is False and "model.parameters=10 but a meta build gives 11" in bad["warning"]


# -- Hub ids resolve to a commit, offline, from a real cache layout ----------------------------------------
def test_hub_revision_resolves_to_the_commit_in_the_cache(offline_hub: Path) -> None:
    for rev, commit in ((None, COMMIT_A), ("v2", COMMIT_B), (COMMIT_A, COMMIT_A)):
        src = resolve_sources(ExperimentConfig(model=ModelConfig(id="acme/tiny", revision=rev))).model
        assert (src.kind, src.commit, src.load_revision) == ("hub", commit, commit)
        assert src.snapshot == str(offline_hub / "models--acme--tiny" / "snapshots" / commit)
    with pytest.raises(ModelNotFound, match=r"model.id=acme/absent revision=main: cannot resolve it to a commit "
                                            r"\(HF_HUB_OFFLINE=1\)"):
        resolve_sources(ExperimentConfig(model=ModelConfig(id="acme/absent")))
    with pytest.raises(ModelNotFound, match=r"revision=v9"):
        resolve_sources(ExperimentConfig(model=ModelConfig(id="acme/tiny", revision="v9")))


def test_pytorch_loads_the_pinned_hub_commit_and_records_it(offline_hub: Path, llem_cache: Path) -> None:
    from llem.backends.pytorch.backend import PytorchBackend

    counts = {}
    for rev, commit in ((None, COMMIT_A), ("v2", COMMIT_B)):
        b = PytorchBackend(ExperimentConfig(model=ModelConfig(id="acme/tiny", revision=rev, cache_dir=str(llem_cache)),
                                            pytorch=PytorchConfig(device="cpu", max_output_tokens=4)))
        b.load()
        facts = b.model_facts().as_dict()
        assert facts["source"]["commit"] == commit and facts["tokenizer"]["commit"] == commit
        assert facts["source"]["snapshot"].endswith(f"/snapshots/{commit}")
        ident = identity_fields(b.sources)
        assert ident["model_commit"] == commit and ident["model_path"] == facts["source"]["snapshot"]
        assert facts["parameters_check"]["ok"]
        counts[commit] = facts["parameters"]
    assert counts[COMMIT_B] > counts[COMMIT_A]  # v2 (4 layers) really loaded, not main (2 layers)


def test_facts_of_what_loaded(folders: dict[str, Path], llem_cache: Path) -> None:
    import torch

    from llem.backends.pytorch.backend import PytorchBackend
    from llem.config.schema import Precision

    b = PytorchBackend(ExperimentConfig(model=ModelConfig(id=str(folders["small"]), tokenizer_id=str(folders["big"]),
                                                          cache_dir=str(llem_cache)),
                                        precision=Precision.bf16,
                                        pytorch=PytorchConfig(device="cpu", max_output_tokens=6, attn_implementation="eager")))
    b.load()
    b.model.generation_config.repetition_penalty = 1.3  # a checkpoint default llem does not override
    f = b.model_facts().as_dict()
    fp = f["source"].pop("fingerprint")
    assert f["source"] == {"kind": "local", "id": str(folders["small"]), "path": str(folders["small"].resolve()),
                           "revision": None, "commit": None, "snapshot": None}
    assert len(fp) == 16 and fp != f["tokenizer"]["fingerprint"]  # the big folder: other weights, other size
    assert b.tokenizer.name_or_path == f["tokenizer"]["path"] == str(folders["big"].resolve())  # loaded from there
    assert f["dtype"] == "bfloat16" and f["dtypes"] == {"bfloat16": f["parameters"]}
    assert f["attn_implementation"] == "eager" and f["torch_threads"] == torch.get_num_threads()
    g = f["generation"]
    assert g["mode"] == "greedy_search" and g["applied"]["max_new_tokens"] == 6 and g["applied"]["min_new_tokens"] == 6
    assert g["applied"]["repetition_penalty"] == 1.3  # merged in from the model's generation_config, as generate does
    assert g["applied"]["temperature"] is None and g["applied"]["do_sample"] is False
    assert g["model_defaults"]["repetition_penalty"] == 1.3
    from llem.config.schema import Decoding

    b.pt.decoding, b.pt.temperature, b.pt.top_k = Decoding.sample, 0.7, 5
    s = b.applied_generation()
    assert s["mode"] == "sample" and (s["applied"]["temperature"], s["applied"]["top_k"]) == (0.7, 5)
    json.dumps(f)  # lands in result.json as is


# -- a sweep over model.id compares different models ------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_over_model_ids_measures_each_model(folders: dict[str, Path], hub_cache: Path, tmp_path: Path,
                                                    llem_cache: Path) -> None:
    ids = [str(folders["small"]), str(folders["big"]), "acme/tiny"]
    proc = run_llem(["-m", f"model.id={','.join(ids)}", "n=2", "pytorch.max_output_tokens=4", "warmup.n_batches=0",
                     "energy=none", "quiet=true", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, llem_cache,
                    env={"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/result.json"))]
    by = {r["identity"]["model"]: r for r in results}
    assert set(by) == set(ids) and all(r["status"] == "completed" for r in results)
    small, big, hub = (by[i] for i in ids)
    assert small["identity"]["model_path"] == str(folders["small"].resolve()) and small["identity"]["model_source"] == "local"
    assert big["identity"]["model_path"] == str(folders["big"].resolve())
    assert big["model"]["parameters"] > small["model"]["parameters"]  # 4 layers vs 2: different models measured
    assert big["flops"]["total_flop"] > small["flops"]["total_flop"]
    assert hub["identity"]["model_source"] == "hub" and hub["identity"]["model_commit"] == COMMIT_A
    assert hub["model"]["source"]["snapshot"] == str(hub_cache / "models--acme--tiny" / "snapshots" / COMMIT_A)
    assert hub["model"]["parameters"] == small["model"]["parameters"]  # main = the small checkpoint
    assert all(r["model"]["parameters_check"]["ok"] for r in results)


def test_a_parameter_count_mismatch_is_a_result_warning(folders: dict[str, Path], tmp_path: Path, llem_cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import llem.backends.pytorch.backend as pt_mod
    from llem.job import run_job

    real = pt_mod.config_parameter_counts
    monkeypatch.setattr(pt_mod, "config_parameter_counts",  # the claim's config says one parameter more
                        lambda *a, **k: {**real(*a, **k), "parameters": real(*a, **k)["parameters"] + 1})
    cfg = ExperimentConfig(model=ModelConfig(id=str(folders["small"]), cache_dir=str(llem_cache)), n=2,
                           pytorch=PytorchConfig(device="cpu", max_output_tokens=2))
    cfg.energy.meter, cfg.warmup.n_batches = "none", 0
    result = run_job(cfg, tmp_path, {}, [], "0" * 16)
    check = result.model["parameters_check"]
    assert result.status == "completed" and check["ok"] is False
    assert check["reference_parameters"] == check["parameters"] + 1 and check["warning"] in result.warnings
    assert result.identity["model_source"] == "local" and result.identity["model_path"] == str(folders["small"].resolve())
