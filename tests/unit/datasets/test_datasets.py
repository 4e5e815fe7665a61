"""Dataset loaders on real files: the AIEnergyScore prompts kept in tests/data and files the test writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import AIENERGYSCORE

from llem.config.schema import DatasetConfig
from llem.datasets import DatasetError, load_prompts


def test_aienergyscore_offline_copy_skips_provenance_and_keeps_order() -> None:
    cfg = DatasetConfig(name="aienergyscore", path=str(AIENERGYSCORE))
    prompts = load_prompts(cfg, 1000, seed=0)
    lines = AIENERGYSCORE.read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 1000 == len(lines) - 1
    assert prompts[0] == json.loads(lines[1])["prompt"]
    assert prompts[-1] == json.loads(lines[-1])["prompt"]
    with pytest.raises(DatasetError, match="n=1001 but the dataset has only 1000"):
        load_prompts(cfg, 1001, seed=0)


def test_shuffle_is_seeded() -> None:
    cfg = DatasetConfig(name="aienergyscore", path=str(AIENERGYSCORE), shuffle=True)
    a, b, c = (load_prompts(cfg, 50, seed=s) for s in (1, 1, 2))
    assert a == b and a != c
    assert set(a) <= set(load_prompts(DatasetConfig(name="aienergyscore", path=str(AIENERGYSCORE)), 1000, 0))


def test_csv_column_detection_and_explicit_column(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer"])
        for i in range(5):
            w.writerow([i, f"What is {i}+{i}, with a comma?", str(2 * i)])
    assert load_prompts(DatasetConfig(name="csv", path=str(path)), 3, 0) == [
        f"What is {i}+{i}, with a comma?" for i in range(3)]
    assert load_prompts(DatasetConfig(name="csv", path=str(path), column="answer"), 2, 0) == ["0", "2"]
    with pytest.raises(DatasetError, match=r"dataset.column='nope'.*columns there: \['id', 'question', 'answer'\]"):
        load_prompts(DatasetConfig(name="csv", path=str(path), column="nope"), 2, 0)


def test_jsonl_without_a_prompt_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"foo": "a", "bar": 1}\n{"foo": "b", "bar": 2}\n')
    with pytest.raises(DatasetError, match=r"dataset.column is not set.*columns there: \['foo', 'bar'\]"):
        load_prompts(DatasetConfig(name="jsonl", path=str(path)), 1, 0)
    assert load_prompts(DatasetConfig(name="jsonl", path=str(path), column="foo"), 2, 0) == ["a", "b"]
    with pytest.raises(DatasetError, match="no such file"):
        load_prompts(DatasetConfig(name="jsonl", path=str(tmp_path / "missing.jsonl")), 1, 0)


def test_synthetic_prompts_have_the_requested_token_count(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts = load_prompts(DatasetConfig(name="synthetic", input_tokens=24), 6, seed=3, tokenizer=tok)
    assert len(prompts) == 6 and len(set(prompts)) == 6
    assert [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts] == [24] * 6
    assert prompts == load_prompts(DatasetConfig(name="synthetic", input_tokens=24), 6, seed=3, tokenizer=tok)


def test_hf_loader_reads_a_local_dataset_folder_like_a_hub_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "my-prompts"
    folder.mkdir()
    rows = [{"id": i, "instruction": f"Summarise report {i}.", "output": "x"} for i in range(6)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DatasetConfig(name="hf", hub_id=str(folder), split="train")
    assert load_prompts(cfg, 4, 0) == [f"Summarise report {i}." for i in range(4)]  # column detected
    with pytest.raises(DatasetError, match=r"n=7 but the dataset has only 6"):
        load_prompts(cfg, 7, 0)
