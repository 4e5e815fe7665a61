"""Checks that need the host or the model's config.json, never its weights.

`run_job` calls `preflight` after validation and before meters, baseline and load, so these fail in
seconds, with exit code 2 and one line naming the key, the value and what is allowed:

- `pytorch.device=cuda` / `cuda:N` / `mps` that this host's torch cannot see;
- a Hub `model.id` (not `llem/...`, not a folder) that is not in the Hugging Face cache while the
  Hub is off (HF_HUB_OFFLINE=1) or does not accept a connection within `HUB_PROBE_TIMEOUT_S`
  (instead of the loaders' retries, about a minute);
- prompt + output tokens longer than the model's context. The context comes from config.json as
  vLLM derives it (the smallest of `max_position_embeddings`, `n_positions`, ..., RoPE scaling
  applied), or `vllm.max_model_len` when set. The prompt side is exact for `dataset=synthetic`
  (`dataset.input_tokens`, cut to the backend's `max_input_tokens`); for file and Hub datasets
  `max_input_tokens` bounds it, and only when that bound does not fit is the model's tokenizer
  loaded to count the real prompts (so short prompts under a generous bound are never refused).

Skipped for the `openai` backend when it talks to a server llem did not start (`openai.base_url`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llem.config.schema import BACKENDS, ExperimentConfig, import_target
from llem.errors import ConfigError

HUB_PROBE_TIMEOUT_S = 3.0  # a Hub that has not accepted a TCP connection by then counts as unreachable
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")  # vLLM's list
# RoPE types whose max_position_embeddings is already the scaled length (vLLM's list).
_ROPE_PRESCALED = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling", "default")


def preflight(cfg: ExperimentConfig, prompts: list[str] | None = None) -> None:
    """Raise a UserError (ConfigError, ModelNotFound) for what would only fail after the model loaded."""
    found = check_model(cfg)
    if found is not None and found[0] is not None:
        check_context(cfg, found[0], found[1], prompts)


def check_device(cfg: ExperimentConfig) -> None:
    """The backend's own host checks (BackendSpec.preflight, e.g. pytorch.device present)."""
    spec = BACKENDS.get(cfg.backend)
    if spec is not None and spec.preflight:
        import_target(spec.preflight)(cfg)


def check_model(cfg: ExperimentConfig) -> tuple[dict[str, Any] | None, str] | None:
    """The device, then the model (config.json, Hub reachable) or the outside server; the model's
    (config.json dict, origin) when llem runs it."""
    from llem.models import locate_all

    locate_all(cfg)  # model.id / revision / tokenizer_id: from the file system alone
    check_device(cfg)
    section = getattr(cfg, cfg.backend, None)
    if section is None:
        return None
    base_url = getattr(section, "base_url", None)
    if base_url:  # an outside server: its model, not ours; but it must answer, in seconds
        check_server(f"{cfg.backend}.base_url", str(base_url))
        return None
    return model_config(cfg)


def before_load(cfg: ExperimentConfig, load: Any) -> list[str] | None:
    """Every check before meters and model load, in the documented order (docs/errors.md): the model
    (device, folder, config.json, Hub), then the dataset (`load()`: the prompts, or None when they need
    the tokenizer), then prompt + output within the context. A model problem and a dataset problem are
    both reported, one line each."""
    from llem.errors import UserError

    problems: list[UserError] = []
    found = None
    try:
        found = check_model(cfg)
    except UserError as e:
        problems.append(e)
    prompts = None
    try:
        prompts = load()
    except UserError as e:
        problems.append(e)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputProblems(problems)
    if found is not None and found[0] is not None:
        check_context(cfg, found[0], found[1], prompts)
    return prompts


class InputProblems(ConfigError):
    """Several problems found before load (the model's and the dataset's): one line each."""

    def __init__(self, errors: list[Any]) -> None:
        self.errors = errors
        lines = [line for e in errors for line in str(e).splitlines() if line.strip()]
        super().__init__([p for e in errors for p in getattr(e, "problems", [])], "\n".join(lines))


def check_server(key: str, base_url: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> None:
    """A server at `base_url` must accept a connection and answer an HTTP request within `timeout_s`
    (any status: it is alive); nothing listening, or a socket that accepts and never answers, is a
    ConfigError in seconds instead of the client's longer timeouts."""
    import http.client

    url = urlparse(base_url)
    host = url.hostname or ""
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return  # validate says so
    problem = hub_unreachable(f"{url.scheme}://{host}:{port}", timeout_s)
    if problem:
        raise ConfigError([(key, base_url, f"the URL of a running OpenAI-compatible server: nothing accepts a "
                                           f"connection at {host}:{port} ({problem})")])
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout_s)
    try:
        conn.request("GET", (url.path.rstrip("/") or "") + "/models")
        conn.getresponse().read(0)
    except (OSError, http.client.HTTPException) as e:
        why = f"no answer within {timeout_s:g} s" if isinstance(e, TimeoutError | socket.timeout) else (
            f"{type(e).__name__}: {e}")
        raise ConfigError([(key, base_url, f"the URL of a running OpenAI-compatible server: {host}:{port} accepts "
                                           f"connections but {why} to GET {url.path.rstrip('/')}/models")]) from None
    finally:
        conn.close()


# -- the model's config.json ----------------------------------------------------------------------------
def model_config(cfg: ExperimentConfig) -> tuple[dict[str, Any] | None, str]:
    """config.json of the model as a dict (None when it has none), and where it came from — without
    building, downloading weights or loading anything. A Hub id must be cached or reachable."""
    from llem.models import locate_all

    sources = locate_all(cfg)
    src, tok = sources.model, sources.tokenizer
    if tok is not src and tok.kind == "hub":
        _require_hub(tok.id, tok.revision, "model.tokenizer_id")
    if src.kind == "builtin":
        from llem.models.tiny import ARCHS

        return dict(ARCHS[src.id.split("/", 1)[1]]), f"the builtin {src.id}"
    if src.kind == "local":
        path = Path(src.path) / "config.json"
        return (_read_json(path, "model.id", src.id) if path.is_file() else None), str(path)
    _require_hub(src.id, src.revision, "model.id")
    return _hub_config(src.id, src.revision), f"config.json of {src.id}"


def _read_json(path: Path, key: str = "model.id", value: str | None = None) -> dict[str, Any] | None:
    """config.json as a dict; not JSON (or not an object): a ConfigError naming `key`, the file and the
    line, before any loader trips over it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None  # unreadable: the loader will say what is wrong with it
    try:
        data = json.loads(text)
    except ValueError as e:
        where = f"line {e.lineno}, column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise ConfigError([(key, value if value is not None else str(path.parent),
                            f"a model whose config.json is valid JSON ({path} is not: {where})")]) from None
    if not isinstance(data, dict):
        raise ConfigError([(key, value if value is not None else str(path.parent),
                            f"a model whose config.json is a JSON object ({path} holds {type(data).__name__})")])
    return data


def _allowed(repo_id: str) -> str:
    from huggingface_hub import constants

    return ("allowed llem/tiny-gpt2 | llem/tiny-llama, a model folder, or a Hub id already in the Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}; download it once online: hf download {repo_id})")


def _require_hub(repo_id: str, revision: str | None, key: str) -> None:
    """A Hub id must be in the local cache, or the Hub must answer: refused in seconds otherwise."""
    from huggingface_hub import constants

    from llem.models import ModelNotFound

    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    if (folder / "snapshots").is_dir() and (revision is None or _cached_revision(folder, revision)):
        return
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFound(f"{key}={repo_id}: not a folder and not in the Hugging Face cache, and HF_HUB_OFFLINE=1; "
                            + _allowed(repo_id))
    problem = hub_unreachable(constants.ENDPOINT)
    if problem:
        raise ModelNotFound(f"{key}={repo_id}: not a folder and not in the Hugging Face cache, and the Hub "
                            f"({constants.ENDPOINT}) is unreachable ({problem}); " + _allowed(repo_id))


def _cached_revision(folder: Path, revision: str) -> bool:
    return (folder / "snapshots" / revision).is_dir() or (folder / "refs" / revision).is_file()


def _hub_config(repo_id: str, revision: str | None) -> dict[str, Any] | None:
    """config.json from the cache, else from the Hub (reachable: `_require_hub` said so)."""
    from huggingface_hub import constants, errors, hf_hub_download, try_to_load_from_cache

    from llem.models import ModelNotFound

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return _read_json(Path(cached), "model.id", repo_id)
    if constants.HF_HUB_OFFLINE:
        return None  # cached without a config.json: the loader decides
    try:
        return _read_json(Path(hf_hub_download(repo_id, "config.json", revision=revision)), "model.id", repo_id)
    except errors.EntryNotFoundError:
        return None  # no config.json (e.g. a GGUF repo): the loader decides
    except errors.RevisionNotFoundError as e:
        raise ConfigError([("model.revision", revision, f"a branch, tag or commit of the Hub repo {repo_id}")]) from e
    except errors.RepositoryNotFoundError as e:
        raise ModelNotFound(f"model.id={repo_id}: no such folder here and no Hub repo of that name (or a private or "
                            "gated one: log in with `hf auth login`)") from e
    except Exception as e:  # timeouts, HTTP errors: the Hub did not serve it
        raise ModelNotFound(f"model.id={repo_id}: config.json could not be fetched from {constants.ENDPOINT} "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            + _allowed(repo_id)) from e


def hub_unreachable(endpoint: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None if `endpoint` (or the HTTPS proxy in the environment) accepts a TCP connection within
    `timeout_s`, else why not. Name resolution runs in a thread too, since it ignores socket timeouts."""
    url = urlparse(endpoint)
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), None) if url.scheme == "https" else None
    target = urlparse(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else url
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                outcome.append(None)
        except OSError as e:
            outcome.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=connect, name="llem-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    via = f" via proxy {host}:{port}" if proxy else ""
    if not outcome:
        return f"no connection to {host}:{port}{via} within {timeout_s:g} s"
    return f"{outcome[0]}{via}" if outcome[0] else None


# -- context length -------------------------------------------------------------------------------------
def context_tokens(config: dict[str, Any]) -> tuple[int | None, str | None]:
    """(context length, the key it came from) of a config.json dict, as vLLM derives it; (None, None)
    when the config names none."""
    text = next((config[k] for k in ("text_config", "language_config", "llm_config")
                 if isinstance(config.get(k), dict)), config)
    found = [(text[k], k) for k in CONTEXT_KEYS if isinstance(text.get(k), int | float) and text[k] > 0]
    if not found:
        return None, None
    length, key = min(found)
    if isinstance(text.get("model_max_length"), int | float) and text["model_max_length"] > 0:
        length, key = text["model_max_length"], "model_max_length"
    factor = 1.0
    if "gemma3" not in str(config.get("model_type", "")):
        for rope in _rope_parameters(text):
            kind = rope.get("rope_type") or rope.get("type") or "default"
            if kind not in _ROPE_PRESCALED and isinstance(rope.get("factor"), int | float):
                factor = float(rope["factor"])
    return int(length * factor), key if factor == 1.0 else f"{key} x RoPE factor {factor:g}"


def _rope_parameters(config: dict[str, Any]) -> list[dict[str, Any]]:
    rope = config.get("rope_scaling") or config.get("rope_parameters")
    if not isinstance(rope, dict):
        return []
    if "rope_type" in rope or "type" in rope or "factor" in rope:
        return [rope]
    return [v for v in rope.values() if isinstance(v, dict)]  # per layer type (transformers v5)


def check_context(cfg: ExperimentConfig, config: dict[str, Any], origin: str, prompts: list[str] | None) -> None:
    context, key = context_tokens(config)
    if context is None:
        return
    name = cfg.backend
    section = getattr(cfg, name)
    spec = BACKENDS.get(name)
    in_knob = getattr(spec, "input_tokens_knob", "max_input_tokens")
    out_knob = getattr(spec, "output_tokens_knob", "max_tokens")
    if not in_knob or not out_knob or not hasattr(section, in_knob) or not hasattr(section, out_knob):
        return
    max_in, max_out = int(getattr(section, in_knob)), int(getattr(section, out_knob))
    where = f"the model's context of {context} tokens ({key} in {origin})"
    user_len = getattr(section, "max_model_len", None)
    if user_len is not None:
        if user_len > context and not os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
            raise ConfigError([(f"{name}.max_model_len", user_len, f"null or <= {where}")])
        context, where = user_len, f"{name}.max_model_len={user_len}"
    if cfg.dataset.name == "synthetic":
        longest, what = min(cfg.dataset.input_tokens, max_in), f"dataset.input_tokens={cfg.dataset.input_tokens}"
    else:
        longest, what = max_in, f"{name}.{in_knob}={max_in}"
        if longest + max_out > context and prompts:
            longest, what = _longest_prompt(cfg, prompts, max_in)
    if longest + max_out > context:
        room = context - longest
        if room >= 1:
            raise ConfigError([(f"{name}.{out_knob}", max_out, f"at most {room} so that {what} + output fits {where}")])
        raise ConfigError([(f"{name}.{in_knob}", max_in, f"at most {context - max_out} so that the prompt "
                            f"({what}) + {name}.{out_knob}={max_out} fits {where}")])


def _longest_prompt(cfg: ExperimentConfig, prompts: list[str], max_in: int) -> tuple[int, str]:
    """Tokens of the longest prompt as the backends encode it (special tokens in, cut to max_in)."""
    from transformers import AutoTokenizer

    from llem.models import resolve_sources

    src = resolve_sources(cfg).tokenizer
    tok = AutoTokenizer.from_pretrained(src.path, revision=src.load_revision,
                                        trust_remote_code=cfg.model.trust_remote_code)
    counts = [min(len(ids), max_in) for ids in tok(prompts, add_special_tokens=True, truncation=False)["input_ids"]]
    i = max(range(len(counts)), key=counts.__getitem__)
    return counts[i], f"the longest prompt (prompt {i}: {counts[i]} tokens)"
