"""Which weights a job loads, and the facts that prove it — shared by every backend.

One rule, `model.id` alone decides (a user who writes `model.id=X` gets X, whatever the model group):
- `llem/tiny-gpt2`, `llem/tiny-llama` (the `llem/` namespace is reserved): a tiny model llem builds
  once into its cache folder (`llem/models/tiny.py`);
- an existing folder (absolute, relative, `~`): loaded from disk, as transformers does;
- anything else: a Hub repo id. Its `revision` (null = main) is resolved to a commit once, before the
  load, and that commit is what every file is loaded at (config, weights, tokenizer; both backends),
  so the commit the result records is the one that loaded.
A revision on a folder or a builtin model is refused (ConfigError): there is no commit to pin.
`model.tokenizer_id` (default: the model's own source) follows the same rules.

`parameter_counts` is the one definition of parameters vs non-embedding parameters (the FLOPs estimate
uses the latter). No torch import at module level.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llem.errors import ConfigError, UserError

if TYPE_CHECKING:  # types only: llem/models sits below llem/config
    from llem.config.schema import ExperimentConfig

BUILTIN_PREFIX = "llem/"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PATHLIKE = ("/", "./", "../", "~", ".")


class ModelNotFound(UserError):
    """model.id / model.tokenizer_id names nothing loadable (no folder, no Hub repo, not cached offline)."""


@dataclass(frozen=True)
class ModelSource:
    """Where one component (weights or tokenizer) comes from, resolved before anything loads."""

    kind: str  # builtin | local | hub
    id: str  # as configured
    path: str  # what from_pretrained / vLLM get: a folder, or the Hub repo id
    revision: str | None = None  # hub: as configured (null = the default branch)
    commit: str | None = None  # hub: the commit `revision` resolved to, which is what loads
    snapshot: str | None = None  # hub: the cache folder of that commit (once downloaded)

    @property
    def load_revision(self) -> str | None:
        """The revision passed to the loaders: the resolved commit for Hub ids, nothing for folders."""
        return self.commit if self.kind == "hub" else None

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        if self.kind == "hub" and self.snapshot is None:
            out["snapshot"] = snapshot_folder(self.path, self.commit)
        out["fingerprint"] = folder_fingerprint(self.path) if self.kind != "hub" else None
        return out


@dataclass(frozen=True)
class ModelSources:
    model: ModelSource
    tokenizer: ModelSource


def builtin_name(model_id: str) -> str | None:
    """`tiny-gpt2` for `llem/tiny-gpt2`; "" for an unknown name in the reserved `llem/` namespace; None
    for any other id."""
    from llem.models.tiny import ARCHS

    if not model_id.startswith(BUILTIN_PREFIX):
        return None
    name = model_id[len(BUILTIN_PREFIX):]
    return name if name in ARCHS else ""


def locate(model_id: str, revision: str | None, key: str = "model.id",
           revision_key: str = "model.revision") -> ModelSource:
    """Which kind of source `model_id` is, from the id and the file system alone (no build, no Hub)."""
    from llem.models.tiny import ARCHS

    allowed = (f"{' | '.join(BUILTIN_PREFIX + n for n in ARCHS)} (built locally), an existing model folder, "
               "or a Hub repo id (org/name)")
    if not model_id or not str(model_id).strip():
        raise ConfigError([(key, model_id, allowed)])
    model_id = str(model_id)
    name = builtin_name(model_id)
    if name == "":
        raise ConfigError([(key, model_id, f"{allowed}; the llem/ namespace is reserved for the builtin models")])
    folder = Path(os.path.expanduser(model_id))
    kind = "builtin" if name else "local" if folder.is_dir() else "hub"
    if kind == "hub" and (model_id.startswith(_PATHLIKE) or model_id.count("/") > 1):
        raise ConfigError([(key, model_id, f"{allowed}; no folder exists at {folder.resolve()}")])
    if kind == "local" and not (folder / "config.json").is_file() and key == "model.id":
        raise ConfigError([(key, model_id, f"a model folder with a config.json; {folder.resolve()} has none")])
    if kind != "hub" and revision is not None:
        what = "a builtin model" if kind == "builtin" else f"the local folder {folder.resolve()}"
        raise ConfigError([(revision_key, revision, f"null: {key}={model_id} is {what}, which has no "
                                                    "revisions (a revision pins a Hub repo's commit)")])
    path = str(folder.resolve()) if kind == "local" else model_id
    return ModelSource(kind=kind, id=model_id, path=path, revision=revision)


def locate_all(cfg: ExperimentConfig) -> ModelSources:
    """`locate` for the weights and the tokenizer: every problem a ConfigError before any model loads."""
    m = cfg.model
    model = locate(m.id, m.revision)
    if m.tokenizer_id is None:
        if m.tokenizer_revision is not None:
            raise ConfigError([("model.tokenizer_revision", m.tokenizer_revision,
                                "null unless model.tokenizer_id is set (the model's tokenizer follows model.revision)")])
        return ModelSources(model, model)
    tokenizer = locate(m.tokenizer_id, m.tokenizer_revision, "model.tokenizer_id", "model.tokenizer_revision")
    if tokenizer.kind == "local" and not any((Path(tokenizer.path) / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError([("model.tokenizer_id", m.tokenizer_id, f"a tokenizer folder (one of {', '.join(TOKENIZER_FILES)}); "
                                                                  f"{tokenizer.path} has none")])
    return ModelSources(model, tokenizer)


# A folder holding any of these is a tokenizer folder transformers can load (issue 23: an empty one).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model", "merges.txt")


def resolve_sources(cfg: ExperimentConfig) -> ModelSources:
    """`locate_all`, then make each source loadable: build a builtin model, pin a Hub revision to its commit."""
    located = locate_all(cfg)
    model = _resolve(located.model, cfg.model.cache_dir, "model.id")
    if located.tokenizer is located.model:
        return ModelSources(model, model)
    return ModelSources(model, _resolve(located.tokenizer, cfg.model.cache_dir, "model.tokenizer_id"))


def identity_fields(sources: ModelSources) -> dict[str, Any]:
    """The result's `identity` keys that name the weights and tokenizer that load (known before the load:
    a Hub revision is pinned to its commit first)."""
    m, t = sources.model, sources.tokenizer
    return {"model_source": m.kind, "model_path": m.record()["snapshot"] or m.path, "model_commit": m.commit,
            "tokenizer": t.id, "tokenizer_path": t.record()["snapshot"] or t.path, "tokenizer_commit": t.commit}


def resolve_model_path(cfg: ExperimentConfig) -> str:
    """What the loaders get for the weights (a folder or a Hub repo id). Kept for callers of old."""
    return resolve_sources(cfg).model.path


def _resolve(src: ModelSource, cache_dir: str | None, key: str) -> ModelSource:
    if src.kind == "builtin":
        from llem.models.tiny import ensure_tiny_model

        return replace(src, path=str(ensure_tiny_model(src.id[len(BUILTIN_PREFIX):], cache_dir)))
    if src.kind == "local":
        return src
    commit = hub_commit(src.id, src.revision, key)
    return replace(src, commit=commit, snapshot=snapshot_folder(src.id, commit))


def hub_commit(repo_id: str, revision: str | None, key: str = "model.id") -> str:
    """The commit `revision` (null = main) of Hub repo `repo_id` points to now: from the Hub, or from the
    local cache's refs/ when offline (HF_HUB_OFFLINE=1). A clear UserError when neither knows it."""
    from huggingface_hub import HfApi, constants, errors

    rev_key = "model.tokenizer_revision" if key == "model.tokenizer_id" else "model.revision"
    try:
        resolved = HfApi().resolve_revision(repo_id, revision=revision, local_files_only=constants.is_offline_mode())
    except errors.RevisionNotFoundError as e:
        raise ConfigError([(rev_key, revision, f"a branch, tag or commit of the Hub repo {repo_id} ({e})")]) from e
    except errors.RepositoryNotFoundError as e:
        raise ModelNotFound(f"{key}={repo_id}: no such folder here and no Hub repo of that name (or a private or "
                            "gated one: log in with `hf auth login`)") from e
    except Exception as e:  # unreachable Hub and nothing cached, invalid repo id, ...
        offline = " (HF_HUB_OFFLINE=1)" if constants.is_offline_mode() else ""
        raise ModelNotFound(f"{key}={repo_id} revision={revision or 'main'}: cannot resolve it to a commit{offline}: "
                            f"{type(e).__name__}: {e}. Download it once online (hf download {repo_id}), or give "
                            "the model's local folder as the id") from e
    commit = getattr(resolved, "resolved", None) or str(resolved)
    if not _COMMIT.match(commit):
        raise ModelNotFound(f"{key}={repo_id} revision={revision or 'main'}: resolved to {commit!r}, not a commit")
    return commit


def folder_fingerprint(folder: str) -> str | None:
    """sha256[:16] of a model folder's config.json and its files' names and sizes: tells two versions of
    one path apart (a folder has no commit). Weights are not read: hashing gigabytes would cost minutes."""
    import hashlib

    root = Path(folder)
    try:
        h = hashlib.sha256((root / "config.json").read_bytes())
        for p in sorted(root.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                h.update(f"\0{p.name}\0{p.stat().st_size}".encode())
    except OSError:
        return None
    return h.hexdigest()[:16]


def snapshot_folder(repo_id: str, commit: str | None) -> str | None:
    """The HF cache folder holding `commit` of model repo `repo_id` (None until it is downloaded)."""
    if not commit:
        return None
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit
    return str(folder) if folder.is_dir() else None


# -- what loaded ----------------------------------------------------------------------------------------
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


def config_parameter_counts(path: Any, revision: str | None = None,
                            trust_remote_code: bool = False) -> dict[str, Any]:
    """`parameter_counts` of a model built on torch's meta device from its config (a path/repo id, or a
    config object): shapes only, no weights read, no memory used."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = path if not isinstance(path, (str, os.PathLike)) else \
        AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {**parameter_counts(model), "architecture": type(model).__name__}


def dtype_counts(model: Any) -> dict[str, int]:
    """Parameters per dtype actually held (e.g. {"bfloat16": 494032768}), most first."""
    counts: Counter[str] = Counter()
    for p in model.parameters():
        counts[str(p.dtype).replace("torch.", "")] += p.numel()
    return dict(counts.most_common())


def parameters_check(claimed: dict[str, Any], reference: dict[str, Any], what: str) -> dict[str, Any]:
    """Compare the parameter count the result claims with an independent count (`what` says which).
    A mismatch carries a warning: the result may not describe the model that ran."""
    a, b = claimed.get("parameters"), reference.get("parameters")
    ok = a is not None and a == b
    out: dict[str, Any] = {"ok": ok, "parameters": a, "reference_parameters": b, "reference": what}
    if not ok:
        out["warning"] = (f"model.parameters={a} but {what} gives {b}: the loaded model is not the one its "
                          "config describes (quantized, modified by remote code, or another checkpoint)")
    return out
