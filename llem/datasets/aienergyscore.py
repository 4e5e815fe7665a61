"""`dataset=aienergyscore`: the AI Energy Score prompts, from a local JSONL copy (`dataset.path`) or the Hub."""

from __future__ import annotations

from llem.config.schema import DatasetConfig
from llem.datasets.base import Problem, file_problems, local_file
from llem.datasets.hf import Hf
from llem.datasets.jsonl import read_jsonl


class AiEnergyScore(Hf):
    name = "aienergyscore"

    def problems(self, cfg: DatasetConfig) -> list[Problem]:
        return file_problems(cfg) if cfg.path else []

    def read(self, cfg: DatasetConfig) -> list[str]:
        if cfg.path:
            return read_jsonl(local_file(cfg), cfg.column)
        return super().read(cfg)
