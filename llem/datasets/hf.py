"""`dataset=hf`: a Hugging Face Hub dataset (`dataset.hub_id`, `hub_config`, `split`); needs llem[datasets]."""

from __future__ import annotations

from llem.config.schema import DatasetConfig
from llem.datasets.base import Dataset, DatasetError, Problem, pick_column, prompt_of


class Hf(Dataset):
    name = "hf"

    def problems(self, cfg: DatasetConfig) -> list[Problem]:
        return [] if cfg.hub_id else [("dataset.hub_id", cfg.hub_id, "a Hub dataset id such as tatsu-lab/alpaca")]

    def read(self, cfg: DatasetConfig) -> list[str]:
        if not cfg.hub_id:
            raise DatasetError(f"dataset={cfg.name} needs dataset.hub_id=<owner/name>")
        return read_hub(cfg.hub_id, cfg.hub_config, cfg.split, cfg.column)


def read_hub(hub_id: str, config: str | None, split: str, column: str | None) -> list[str]:
    from llem.hubdata import offline_unless_reachable

    try:
        with offline_unless_reachable(hub_id):  # not cached and no Hub: one line in seconds (before importing
            try:  # `datasets`, which alone takes seconds), no retries
                import datasets
            except ImportError as e:
                raise DatasetError("dataset=hf/aienergyscore from the Hub needs `pip install llem[datasets]`") from e
            ds = datasets.load_dataset(hub_id, config, split=split)
    except DatasetError:
        raise
    except Exception as e:  # not found, offline and not cached, no such split/config, ...
        first = (str(e).strip().splitlines() or [""])[0]
        raise DatasetError(f"dataset.hub_id={hub_id!r} (config {config}, split {split}) cannot be loaded: "
                           f"{type(e).__name__}: {first}") from e
    col = pick_column(ds.column_names, column, f"dataset.hub_id={hub_id!r}")
    prompts = (prompt_of(x, col, f"dataset.hub_id={hub_id!r}: row {i}") for i, x in enumerate(ds[col]) if x is not None)
    return [p for p in prompts if p is not None]
