"""Range and cross-field checks of an experiment config, before any model loads (pure).

Type errors and unknown keys are caught earlier, by the structured schema at compose time. Every
message names the key, the value given and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llem.config.schema import BACKENDS, ExperimentConfig, import_target
from llem.energy.meters import CHOICES as METER_CHOICES
from llem.energy.meters import meter_problems
from llem.errors import ConfigError, UserError, show_value  # noqa: F401

ORDERS = ("sequential", "interleaved", "shuffled")
FAULTS = ("none", "raise", "exit", "segfault", "sigkill", "sleep")


class Checks:
    def __init__(self) -> None:
        self.problems: list[tuple[str, Any, str]] = []

    def add(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append((key, value, allowed))

    def int_min(self, key: str, value: int, lo: int) -> None:
        if value < lo:
            self.add(key, value, f"an integer >= {lo}")

    def num_range(self, key: str, value: float | None, lo: float, hi: float, lo_open: bool = False,
                  optional: bool = False) -> None:
        if value is None:
            if not optional:
                self.add(key, value, f"a number in {'(' if lo_open else '['}{lo}, {hi}]")
            return
        if value < lo or value > hi or (lo_open and value == lo):
            self.add(key, value, f"a number in {'(' if lo_open else '['}{lo}, {hi}]")

    def one_of(self, key: str, value: Any, allowed: Iterable[Any], optional: bool = False) -> None:
        allowed = tuple(allowed)
        if value is None and optional:
            return
        if value not in allowed:
            extra = " or null" if optional else ""
            self.add(key, value, f"one of {', '.join(map(str, allowed))}{extra}")


def problems(cfg: ExperimentConfig) -> list[tuple[str, Any, str]]:
    c = Checks()
    c.int_min("n", cfg.n, 1)
    c.one_of("backend", cfg.backend, BACKENDS)
    for name in BACKENDS:
        section = getattr(cfg, name)
        if name == cfg.backend and section is None:
            c.add(name, None, f"a `{name}:` section (select it with backend={name})")
        elif name != cfg.backend and section is not None:
            c.add(f"{name}.*", "(set)", f"only with backend={name}; this job has backend={cfg.backend}")
    spec = BACKENDS.get(cfg.backend)
    if spec is not None and spec.checks and getattr(cfg, cfg.backend, None) is not None:
        import_target(spec.checks)(c, cfg)  # the backend's own range checks (registry: BackendSpec.checks)
    _check_scenario(c, cfg)
    _check_dataset(c, cfg)
    _check_rest(c, cfg)
    from llem.config import inputs  # n cap, serving knobs under offline, openai URL/command (issue 23)

    inputs.check(c, cfg)
    return c.problems


def _check_scenario(c: Checks, cfg: ExperimentConfig) -> None:
    s = cfg.scenario
    c.one_of("scenario", s.name, ("offline", "serving"))
    spec = BACKENDS.get(cfg.backend)
    if spec is not None and s.name in ("offline", "serving") and s.name not in spec.scenarios():
        c.add("scenario", s.name, f"{' or '.join(spec.scenarios())} with backend={cfg.backend} "
              f"(backends with scenario={s.name}: {', '.join(n for n, b in BACKENDS.items() if s.name in b.scenarios())})")
    if s.name != "serving":
        return
    from llem.serving.checks import check_serving  # the serving knobs' checks, the trace file's included

    for key, value, allowed in check_serving(s):
        c.add(key, value, allowed)


def _check_dataset(c: Checks, cfg: ExperimentConfig) -> None:
    from llem.datasets import DATASETS, dataset

    d = cfg.dataset
    c.one_of("dataset.name", d.name, DATASETS)
    c.int_min("dataset.input_tokens", d.input_tokens, 1)
    if d.name in DATASETS:
        for key, value, allowed in dataset(d.name).problems(d):  # the dataset's own checks
            c.add(key, value, allowed)


def _check_rest(c: Checks, cfg: ExperimentConfig) -> None:
    w = cfg.warmup
    c.one_of("warmup.mode", w.mode, ("fixed", "cv"))
    c.int_min("warmup.n_batches", w.n_batches, 0)
    c.int_min("warmup.max_batches", w.max_batches, max(w.n_batches, 1))
    c.num_range("warmup.cv_threshold", w.cv_threshold, 0.0, 10.0, lo_open=True)
    c.int_min("warmup.cv_window", w.cv_window, 2)
    if w.max_output_tokens is not None:
        c.int_min("warmup.max_output_tokens", w.max_output_tokens, 1)
    e = cfg.energy
    c.one_of("energy.meter", e.meter, METER_CHOICES)
    c.num_range("energy.sample_hz", e.sample_hz, 0.0, 1000.0, lo_open=True)
    c.num_range("energy.baseline_s", e.baseline_s, 0.0, 3600.0)
    c.num_range("energy.thermal_warmup_s", e.thermal_warmup_s, 0.0, 3600.0)
    from llem.energy.meters.node.config import problems as node_problems  # pure: no client imported

    c.problems.extend(node_problems(e))  # energy.node.* (BMC node power) and energy.basis
    c.problems.extend(meter_problems(e))  # each meter's node, energy.<meter>.* (its checks.py)
    s = cfg.study
    c.int_min("study.n_cycles", s.n_cycles, 1)
    c.one_of("study.order", s.order, ORDERS)
    c.int_min("study.max_jobs", s.max_jobs, 1)
    for key in ("config_gap_seconds", "cycle_gap_seconds"):
        value = getattr(s, key)
        if value is not None and value < 0:
            c.add(f"study.{key}", value, "null or a number >= 0")
    if s.objective is not None:  # result fields with min/max (llem/search/objective.py)
        from llem.search.objective import problems as objective_problems

        for problem in objective_problems(s.objective):
            c.add(*problem)
    c.one_of("tracking.name", cfg.tracking.name, ("none", "mlflow"))  # llem/search/tracking.py
    c.one_of("debug.fault", cfg.debug.fault, FAULTS)
    from llem.gpu.checks import check_gpu_config, check_study_gaps  # gpu.* and study.gaps/cool (issue 20)

    check_gpu_config(c, cfg)
    check_study_gaps(c, cfg)


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise ConfigError listing every problem; return cfg unchanged when valid."""
    from llem.extras import check_config as check_extras

    check_extras(cfg)  # a missing optional package (backend, meter, dataset): MissingExtra, its pip line
    found = problems(cfg)
    if found:
        raise ConfigError(found)
    return cfg
