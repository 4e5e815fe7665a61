"""Where a job's weights live and how big the model is — shared by every backend.

`resolve_model_path` turns `model.*` into what `from_pretrained` / `vllm.LLM` load; `parameter_counts`
is the one definition of parameters vs non-embedding parameters (the FLOPs estimate uses the latter),
so both backends report the same numbers for the same model. No torch import at module level.
"""

from __future__ import annotations

from typing import Any

from llem.config.schema import ExperimentConfig


def resolve_model_path(cfg: ExperimentConfig) -> str:
    """A builtin tiny model's cache folder, or the Hub id / local path as given."""
    if cfg.model.builtin:
        from llem.models.tiny import ensure_tiny_model

        return str(ensure_tiny_model(cfg.model.builtin, cfg.model.cache_dir))
    return cfg.model.id


def parameter_counts(model: Any) -> dict[str, int]:
    """parameters and non_embedding_parameters of a transformers model (tied weights counted once).

    Embeddings: the input table, GPT-2's position table, and the output projection when it is not
    tied to the input table."""
    params = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    pos = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2 position table
    if pos is not None:
        emb += pos.weight.numel()
    out_emb = model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is model.get_input_embeddings().weight
    if out_emb is not None and not tied:
        emb += out_emb.weight.numel()
    return {"parameters": params, "non_embedding_parameters": params - emb}


def config_parameter_counts(path: str, revision: str | None = None,
                            trust_remote_code: bool = False) -> dict[str, Any]:
    """`parameter_counts` of the model at `path` built on torch's meta device: shapes only, no weights
    read and no memory used — for backends (vLLM) whose loaded model lives in another process."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {**parameter_counts(model), "architecture": type(model).__name__}
