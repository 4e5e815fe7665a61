"""A job's place in a study (cycle, config_hash, study_design_hash, index), as llem's sweeper hands it
to every job through any Hydra launcher (pure).

It travels as one Hydra-side override, `++hydra.job.env_set.LLEM_STUDY_JOB='<cycle>:<config_hash>:
<study_design_hash>:<index>'`. Every launcher composes a job with Hydra's config loader, which files a
`hydra.*` override under `hydra.overrides.hydra`: never in the task overrides, so never in
`override_dirname`, `.hydra/overrides.yaml` or `JobReturn.overrides`. The job reads it from its
`hydra.job.env_set` (Hydra also sets it in the job's environment while the task runs) into
`cfg.study_job`. `study_job.*` task overrides (a single run, or Hydra's basic sweeper) still set
`cfg.study_job` as any override does; llem's sweeper refuses them (they are its own to set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llem.errors import ConfigError

STUDY_JOB_ENV = "LLEM_STUDY_JOB"
TAG_KEY = f"hydra.job.env_set.{STUDY_JOB_ENV}"
ALLOWED = "'<cycle>:<config_hash>:<study_design_hash>:<index>' (integers >= 0 and hashes), set by llem's sweeper"
_INTS = ("cycle", "index")


def tag_override(index: int, cycle: int, config_hash: str, study_design_hash: str) -> str:
    """The one override that carries a job's place in its study (quoted: hashes stay strings)."""
    return f"++{TAG_KEY}='{cycle}:{config_hash}:{study_design_hash}:{index}'"


def parse_tag(value: Any) -> dict[str, Any]:
    """{cycle, config_hash, study_design_hash, index} of a tag; ConfigError naming the key if malformed."""
    parts = str(value).split(":")
    if len(parts) == 4 and all(parts) and parts[0].isdigit() and parts[3].isdigit():
        return {"cycle": int(parts[0]), "config_hash": parts[1], "study_design_hash": parts[2],
                "index": int(parts[3])}
    raise ConfigError([(TAG_KEY, value, ALLOWED)])


def _split(line: str) -> tuple[str, str]:
    key, _, value = line.partition("=")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return key.strip().lstrip("+~"), value


def is_bookkeeping(line: str) -> bool:
    """The tag override, or a `study_job.*` override: not the user's choice of config."""
    key = _split(line)[0]
    return key == TAG_KEY or key.startswith("study_job.")


def user_overrides(overrides: Sequence[str]) -> list[str]:
    """A job's overrides without the study bookkeeping (what the user's sweep gave it)."""
    return [o for o in overrides if not is_bookkeeping(o)]


def study_job_of(overrides: Sequence[str]) -> dict[str, Any]:
    """A job's {cycle, config_hash, study_design_hash, index} from its override lines: the tag if there
    is one, else any `study_job.<key>=<value>` overrides; {} if neither."""
    found: dict[str, Any] = {}
    for line in overrides:
        key, value = _split(line)
        if key == TAG_KEY:
            return parse_tag(value)
        if key.startswith("study_job."):
            name = key.split(".", 1)[1]
            found[name] = int(value) if name in _INTS and value.isdigit() else None if value == "null" else value
    return found
