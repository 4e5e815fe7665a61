"""The pre-flight plan of a study (pure): configs, skipped ones and why, job order, hashes, estimate.

The sweeper composes and validates every config, then hands the outcome here. Everything a user
needs to decide whether to start — how many jobs, which were skipped, how long it will take, the
design hash it will carry — is decided by these functions and written to `plan.json`/`plan.txt`
before the first job starts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llem.config.schema import StudyConfig
from llem.errors import UserError
from llem.result import now_iso
from llem.study.estimate import Estimate, WallTime, config_estimates, human_seconds, wall_time
from llem.study.gaps import Gaps, gap_before
from llem.study.hashing import design_hash, digest
from llem.study.jobtag import tag_override, user_overrides
from llem.study.order import schedule, seed_from_design_hash

PLAN_VERSION = 1
PLAN_TEXT_FILE = "plan.txt"
SKIP_WARN_RATIO = 0.5  # more than this share of configs skipped → visible warning
PRINT_ROWS = 40  # rows of the config table printed to the terminal (plan.txt has all)
PRINT_ORDER_TOKENS = 200


class StudyError(UserError):
    """A study that must not start (all invalid, over max_jobs, wrong resume folder); exit code 2."""


@dataclass
class Candidate:
    """One expanded config as composed by the sweeper.

    config_hash is None when composing failed; problems are human messages (empty = valid).
    """

    overrides: list[str]
    config_hash: str | None
    problems: list[str] = field(default_factory=list)
    backend: str | None = None
    gpu: Any = None  # its gpu.* node: checked against the devices at planning (llem.gpu.launch.check_plan)


@dataclass
class PlannedConfig:
    number: int
    overrides: list[str]
    config_hash: str
    backend: str | None
    valid: bool
    reason: str | None = None
    estimate_s: float | None = None
    estimate_source: str | None = None

    @property
    def label(self) -> str:
        return f"c{self.number}"


@dataclass
class PlannedJob:
    index: int
    config: int
    cycle: int
    config_hash: str
    overrides: list[str]
    status: str  # planned | skipped | completed (already, on resume)
    reason: str | None = None
    gap_before_s: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.config_hash, self.cycle)


@dataclass
class Plan:
    study_design_hash: str
    settings: dict[str, Any]
    configs: list[PlannedConfig]
    jobs: list[PlannedJob]  # by index
    gaps: Gaps
    gaps_note: str
    estimate: WallTime
    estimate_note: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sweep_dir: str = ""
    created_at: str = field(default_factory=now_iso)

    @property
    def valid_configs(self) -> list[PlannedConfig]:
        return [c for c in self.configs if c.valid]

    @property
    def skipped_configs(self) -> list[PlannedConfig]:
        return [c for c in self.configs if not c.valid]

    @property
    def to_launch(self) -> list[PlannedJob]:
        return [j for j in self.jobs if j.status == "planned"]

    def counts(self) -> dict[str, int]:
        status = Counter(j.status for j in self.jobs)
        return {"configs": len(self.configs), "valid_configs": len(self.valid_configs),
                "skipped_configs": len(self.skipped_configs), "cycles": self.settings["n_cycles"],
                "jobs": len(self.valid_configs) * self.settings["n_cycles"],
                "skipped_jobs": status["skipped"], "already_completed": status["completed"],
                "to_launch": status["planned"]}

    def as_dict(self) -> dict[str, Any]:
        return {"plan_version": PLAN_VERSION, "study_design_hash": self.study_design_hash,
                "created_at": self.created_at, "sweep_dir": self.sweep_dir, "counts": self.counts(),
                "settings": self.settings,
                "gaps": {"config_gap_s": self.gaps.config_gap_s, "cycle_gap_s": self.gaps.cycle_gap_s,
                         "note": self.gaps_note},
                "estimate": {"total_s": self.estimate.total_s, "jobs_s": self.estimate.jobs_s,
                             "gaps_s": self.estimate.gaps_s, "note": self.estimate_note},
                "notes": self.notes, "warnings": self.warnings,
                "configs": [asdict(c) for c in self.configs],
                "jobs": [asdict(j) for j in self.jobs]}

    def manifest_jobs(self) -> list[dict[str, Any]]:
        """Initial manifest entries (llem.study.manifest.new): one per job, skipped ones included."""
        out = []
        for j in self.jobs:
            entry: dict[str, Any] = {"index": j.index, "config": j.config, "cycle": j.cycle,
                                     "config_hash": j.config_hash, "overrides": user_overrides(j.overrides),
                                     "status": "planned" if j.status == "completed" else j.status}
            if j.reason:
                entry["reason"] = j.reason
            out.append(entry)
        return out

    def render(self, full: bool = False) -> str:
        return render(self, full)


def study_job_overrides(index: int, cycle: int, config_hash: str, study_design_hash: str) -> list[str]:
    """The bookkeeping every job carries: one Hydra-side override (llem.study.jobtag), so Hydra's identity
    of the job (override_dirname, overrides.yaml, JobReturn.overrides) holds only the user's overrides."""
    return [tag_override(index, cycle, config_hash, study_design_hash)]


def fallback_hash(overrides: Sequence[str]) -> str:
    """Identity of a config that could not be composed: its overrides."""
    return digest({"uncomposable": sorted(overrides)})


def study_settings(study: StudyConfig, seed: int) -> dict[str, Any]:
    return {"n_cycles": study.n_cycles, "order": study.order, "shuffle_seed": study.shuffle_seed,
            "seed_used": seed, "gaps": study.gaps, "config_gap_seconds": study.config_gap_seconds,
            "cycle_gap_seconds": study.cycle_gap_seconds, "max_jobs": study.max_jobs,
            "allow_over_max_jobs": study.allow_over_max_jobs, "dry_run": study.dry_run,
            "resume": study.resume, "job_estimate_s": study.job_estimate_s,
            "history_dir": study.history_dir}


def assign_indices(keys: Sequence[tuple[str, int]], previous: Mapping[tuple[str, int], int]) -> list[int]:
    """Job indices (= job folder names): a (config_hash, cycle) planned before keeps its index, new ones
    follow the largest index in use, in the order given. Stable across resume."""
    used = set(previous.values())
    nxt = max(used, default=-1) + 1
    out = []
    for key in keys:
        if key in previous:
            out.append(previous[key])
        else:
            out.append(nxt)
            nxt += 1
    return out


def build_plan(candidates: Sequence[Candidate], study: StudyConfig, gaps: Gaps, gaps_note: str,
               history: Mapping[str, Sequence[float]], *, previous: Mapping[tuple[str, int], int] | None = None,
               completed: Iterable[tuple[str, int]] = (), notes: Iterable[str] = (),
               sweep_dir: str = "") -> Plan:
    """Configs (deduplicated by config_hash) × cycles → jobs in launch order.

    Valid jobs take indices 0..K-1 in launch order and skipped ones follow, unless `previous`
    (index by (config_hash, cycle) of the plan already in the sweep folder) fixes them. Jobs in
    `completed` are not launched again.
    """
    notes = list(notes)
    configs: list[PlannedConfig] = []
    first: dict[str, int] = {}
    for cand in candidates:
        chash = cand.config_hash or fallback_hash(cand.overrides)
        if chash in first:
            notes.append(f"{' '.join(cand.overrides) or '(no overrides)'} is the same config as "
                         f"c{first[chash]} (config_hash {chash}): planned once")
            continue
        first[chash] = len(configs)
        configs.append(PlannedConfig(len(configs), list(cand.overrides), chash, cand.backend,
                                     valid=not cand.problems, reason="; ".join(cand.problems) or None))
    dhash = design_hash(c.config_hash for c in configs)
    seed = study.shuffle_seed if study.shuffle_seed is not None else seed_from_design_hash(dhash)

    valid = [c for c in configs if c.valid]
    order = [(valid[i], cycle) for i, cycle in schedule(len(valid), study.n_cycles, study.order, seed)]
    order += [(c, cycle) for c in configs if not c.valid for cycle in range(study.n_cycles)]
    indices = assign_indices([(c.config_hash, cycle) for c, cycle in order], previous or {})
    done = set(completed)
    jobs = []
    for (cfg, cycle), index in zip(order, indices):
        status = "skipped" if not cfg.valid else "completed" if (cfg.config_hash, cycle) in done else "planned"
        jobs.append(PlannedJob(index, cfg.number, cycle, cfg.config_hash,
                               cfg.overrides + study_job_overrides(index, cycle, cfg.config_hash, dhash),
                               status, cfg.reason))
    jobs.sort(key=lambda j: j.index)

    estimates = config_estimates((c.config_hash for c in valid), history, study.job_estimate_s)
    for c in valid:
        c.estimate_s, c.estimate_source = estimates[c.config_hash].seconds, estimates[c.config_hash].source
    launch = [j for j in jobs if j.status == "planned"]
    prev = None
    for j in launch:
        j.gap_before_s = gap_before(prev, j.cycle, gaps)
        prev = j.cycle
    wall = wall_time([j.key for j in launch], estimates, gaps)
    plan = Plan(dhash, study_settings(study, seed), configs, jobs, gaps, gaps_note, wall,
                _estimate_note(valid, estimates, study.job_estimate_s), notes, [], sweep_dir)
    skipped = len(plan.skipped_configs)
    if configs and skipped / len(configs) > SKIP_WARN_RATIO and valid:
        plan.warnings.append(f"{skipped} of {len(configs)} configs ({skipped / len(configs):.0%}) are invalid "
                             "and skipped: check the sweep")
    return plan


def _estimate_note(valid: Sequence[PlannedConfig], estimates: Mapping[str, Estimate], default_s: float) -> str:
    known = sum(1 for c in valid if estimates[c.config_hash].source.startswith("history"))
    if known:
        return f"{known} of {len(valid)} configs estimated from earlier results (median duration)"
    return f"no earlier results of these configs: {human_seconds(default_s)} per job (study.job_estimate_s)"


def check_job_count(n_configs: int, study: StudyConfig) -> None:
    """Refuse a study over `study.max_jobs` from its size alone (configs as expanded × cycles), before
    any config is composed: invalid or duplicate configs count here too (an upper bound)."""
    n = n_configs * study.n_cycles
    if n > study.max_jobs and not study.allow_over_max_jobs:
        raise StudyError(f"the sweep expands to {n_configs} configs × {study.n_cycles} cycles = {n} jobs, above "
                         f"study.max_jobs={study.max_jobs}; nothing was run. Raise study.max_jobs or pass "
                         "study.allow_over_max_jobs=true")


def check_startable(plan: Plan, study: StudyConfig) -> None:
    """Refuse a study with nothing valid, or more jobs than `study.max_jobs` unless allowed."""
    if plan.configs and not plan.valid_configs:
        reasons = Counter(c.reason for c in plan.configs)
        lines = [f"  {n}× {reason}" for reason, n in reasons.most_common(10)]
        raise StudyError(f"all {len(plan.configs)} configs of the study are invalid; nothing was run:\n"
                         + "\n".join(lines))
    if not plan.configs:
        raise StudyError("the sweep expands to no configs; nothing was run")
    n = len(plan.to_launch)
    if n > study.max_jobs and not study.allow_over_max_jobs:
        raise StudyError(f"the study would launch {n} jobs, above study.max_jobs={study.max_jobs}; "
                         f"nothing was run. Raise study.max_jobs or pass study.allow_over_max_jobs=true")


def _common(configs: Sequence[PlannedConfig]) -> list[str]:
    if not configs:
        return []
    shared = set(configs[0].overrides)
    for c in configs[1:]:
        shared &= set(c.overrides)
    return [o for o in configs[0].overrides if o in shared] if len(configs) > 1 else []


def render(plan: Plan, full: bool = False) -> str:
    """The human plan (plan.txt in full; the terminal gets the first PRINT_ROWS configs)."""
    s, n = plan.settings, plan.counts()
    common = _common(plan.configs)
    lines = [f"llem study plan · design {plan.study_design_hash}",
             f"  sweep folder  {plan.sweep_dir}",
             f"  configs       {n['valid_configs']} valid" + (f", {n['skipped_configs']} skipped (invalid)"
                                                             if n["skipped_configs"] else ""),
             f"  jobs          {n['valid_configs']} configs × {n['cycles']} cycles = {n['jobs']} jobs, "
             f"order {s['order']}" + (f" (seed {s['seed_used']})" if s["order"] == "shuffled" else "")]
    if n["already_completed"]:
        lines.append(f"  resume        {n['already_completed']} already completed, {n['to_launch']} to run")
    lines += [f"  gaps          config {plan.gaps.config_gap_s:g} s, cycle {plan.gaps.cycle_gap_s:g} s · "
              f"{plan.gaps_note}",
              f"  estimate      {human_seconds(plan.estimate.total_s)} for {n['to_launch']} jobs "
              f"(jobs {human_seconds(plan.estimate.jobs_s)} + gaps {human_seconds(plan.estimate.gaps_s)}) · "
              f"{plan.estimate_note}",
              f"  max_jobs      {s['max_jobs']}" + (" (over: allowed by study.allow_over_max_jobs)"
                                                   if n["to_launch"] > s["max_jobs"] else "")]
    if common:
        lines.append(f"  every config  {' '.join(common)}")
    lines.append("")
    lines.append(f"  {'config':<7} {'config_hash':<16}  {'est.':>10}  overrides")
    rows = plan.configs if full else plan.configs[:PRINT_ROWS]
    for c in rows:
        own = " ".join(o for o in c.overrides if o not in common) or "(defaults)"
        if c.valid:
            lines.append(f"  {c.label:<7} {c.config_hash}  {human_seconds(c.estimate_s or 0):>10}  {own}")
        else:
            lines.append(f"  {c.label:<7} {c.config_hash}  {'skipped':>10}  {own}\n{'':29}reason: {c.reason}")
    if len(rows) < len(plan.configs):
        lines.append(f"  … {len(plan.configs) - len(rows)} more configs in {PLAN_TEXT_FILE}")
    tokens = [f"{j.index}:{plan.configs[j.config].label}/{j.cycle}" + ("✓" if j.status == "completed" else "")
              for j in plan.jobs if j.status != "skipped"]
    shown = tokens if full else tokens[:PRINT_ORDER_TOKENS]
    lines += ["", "  job order (job index: config/cycle, ✓ = already completed)"]
    row: list[str] = []
    for tok in shown:
        row.append(tok)
        if len(row) == 10:
            lines.append("    " + " ".join(row))
            row = []
    if row:
        lines.append("    " + " ".join(row))
    if len(shown) < len(tokens):
        lines.append(f"    … {len(tokens) - len(shown)} more jobs in {PLAN_TEXT_FILE}")
    lines += [f"  note: {x}" for x in plan.notes] + [f"  WARNING: {x}" for x in plan.warnings]
    return "\n".join(lines)
