"""Registers llem's structured configs in Hydra's ConfigStore (the only Hydra import of llem.config)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from llem.config.schema import ExperimentConfig

SCHEMA_NAME = "llem_schema"


def register() -> None:
    """Idempotent: the primary config's defaults list starts with `llem_schema`."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=ExperimentConfig)


register()
