"""Range checks of `openai.*`, before any server starts (pure; registered in BACKENDS)."""

from __future__ import annotations

import importlib.util
import math
import os
import re
from typing import Any
from urllib.parse import urlparse

from llem.serving.client import ENDPOINTS, RESERVED_BODY

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- checks before load (pure; registry: BackendSpec.checks) ---------------------------------------------
def check(c: Any, cfg: Any) -> None:
    """Range checks of `openai.*` (c: llem.config.validate.Checks). Runs at planning and before load."""
    o = cfg.openai

    if importlib.util.find_spec("aiohttp") is None:
        c.add("backend", "openai", "a backend whose client is installed: backend=openai needs aiohttp "
              "(pip install 'llem[openai]')")
    if o.base_url is not None:
        u = urlparse(str(o.base_url))
        if u.scheme not in ("http", "https") or not u.hostname:
            c.add("openai.base_url", o.base_url, "null (llem starts the server) or http(s)://host:port/v1")
        if o.server.command is not None:
            c.add("openai.server.command", o.server.command,
                  "null with openai.base_url set (a command starts a server; base_url uses a running one)")
    if o.api_key_env is not None:
        if not _ENV_NAME.match(str(o.api_key_env)):
            c.add("openai.api_key_env", o.api_key_env, "null or the NAME of an environment variable (never the key)")
        elif o.api_key_env not in os.environ:
            c.add("openai.api_key_env", o.api_key_env,
                  f"the name of a set environment variable (${o.api_key_env} is not set in this environment)")
    if o.model_name is not None and not str(o.model_name).strip():
        c.add("openai.model_name", o.model_name, "null or a served model name")
    c.one_of("openai.endpoint", o.endpoint, tuple(ENDPOINTS))
    c.int_min("openai.max_input_tokens", o.max_input_tokens, 1)
    c.int_min("openai.max_tokens", o.max_tokens, 1)
    if o.temperature is None or not 0 <= o.temperature < math.inf:
        c.add("openai.temperature", o.temperature, "a number >= 0 (0 = greedy)")
    if o.read_timeout_s is None or not 0 < o.read_timeout_s < math.inf:
        c.add("openai.read_timeout_s", o.read_timeout_s, "a number of seconds > 0 (longest silence within one answer)")
    if o.request_timeout_s is not None and not 0 < o.request_timeout_s < math.inf:
        c.add("openai.request_timeout_s", o.request_timeout_s,
              "null (no whole-request cap; openai.read_timeout_s bounds silences) or a number of seconds > 0")
    if o.max_connections is not None and (isinstance(o.max_connections, bool) or not isinstance(o.max_connections, int)
                                          or o.max_connections < 1):
        c.add("openai.max_connections", o.max_connections, "null (from the open-file limit) or an integer >= 1")
    if o.server.ready_timeout_s is None or not 0 < o.server.ready_timeout_s < math.inf:
        c.add("openai.server.ready_timeout_s", o.server.ready_timeout_s, "a number of seconds > 0")
    cmd = o.server.command
    if cmd is not None and o.base_url is None:
        if not cmd or not str(cmd[0]).strip():
            c.add("openai.server.command", cmd, "null (vLLM's OpenAI server) or a non-empty argv list")
        elif not any("{port}" in str(a) for a in cmd):
            c.add("openai.server.command", cmd, "an argv containing {port} (llem picks a free port and passes it)")
    if o.base_url is not None and o.server.extra_args:
        c.add("openai.server.extra_args", list(o.server.extra_args), "[] with openai.base_url set (no server is started)")
    trace = getattr(getattr(cfg.scenario, "trace", None), "path", None)
    if trace and cfg.scenario.name == "serving" and o.endpoint == "chat":
        c.add("openai.endpoint", o.endpoint, "completions with scenario.trace.path set (a trace's prompts are sent "
              "as exact token ids, which only /v1/completions takes)")
    taken = sorted(k for k in (o.extra_body or {}) if k in RESERVED_BODY)
    if taken:
        c.add(f"openai.extra_body.{taken[0]}", o.extra_body[taken[0]],
              f"no value: llem sets {', '.join(RESERVED_BODY)} itself (openai.max_tokens, the prompt, streaming)")
