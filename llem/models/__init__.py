"""Which weights a job loads and the facts that prove it (code in source.py; tiny models in tiny.py)."""

from __future__ import annotations

from llem.models.source import (  # noqa: F401
    BUILTIN_PREFIX,
    TOKENIZER_FILES,
    ModelNotFound,
    ModelSource,
    ModelSources,
    builtin_name,
    config_parameter_counts,
    dtype_counts,
    folder_fingerprint,
    hub_commit,
    identity_fields,
    locate,
    locate_all,
    parameter_counts,
    parameters_check,
    resolve_model_path,
    resolve_sources,
    snapshot_folder,
)
