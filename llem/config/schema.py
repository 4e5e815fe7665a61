"""Typed schema of one llem experiment: the structured configs behind every `conf/` group.

Pure dataclasses (no Hydra, no torch). `llem/config/store.py` registers them in Hydra's ConfigStore,
so a typo or a wrong type fails at compose time; `llem/config/validate.py` checks ranges and
cross-field rules before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from llem.energy.meters.node.config import NodeConfig  # energy.node.* (the BMC; beside every meter)


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


@dataclass
class ModelConfig:
    """Which weights to load: `id` alone decides (llem/models/__init__.py `locate`).

    `llem/tiny-gpt2` and `llem/tiny-llama` are tiny models llem builds locally (no network); an existing
    folder is loaded from disk; anything else is a Hub repo id, loaded at `revision`."""

    id: str = "llem/tiny-gpt2"  # llem/tiny-gpt2 | llem/tiny-llama | a local model folder | a Hub repo id
    revision: str | None = None  # Hub ids only: branch, tag or commit (null = main); refused for folders
    tokenizer_id: str | None = None  # defaults to `id` (same rules as `id`)
    tokenizer_revision: str | None = None  # Hub tokenizer_id only; null = main (with no tokenizer_id: `revision`)
    trust_remote_code: bool = False
    cache_dir: str | None = None  # defaults to $LLEM_CACHE or ~/.cache/llem


@dataclass
class DatasetConfig:
    """Where the prompts come from. `name` selects the loader in llem/datasets/."""

    name: str = "synthetic"  # synthetic | aienergyscore | jsonl | csv | hf
    path: str | None = None  # local file (jsonl/csv, or aienergyscore offline copy)
    column: str | None = None  # prompt column; detected among prompt/text/instruction/input/question
    input_tokens: int = 64  # synthetic: prompt length in tokens
    hub_id: str | None = None  # hf/aienergyscore: Hub dataset id
    hub_config: str | None = None
    split: str = "train"
    shuffle: bool = False  # order as-is, or shuffled with `seed`


@dataclass
class WarmupConfig:
    """Warmup before the window: a fixed number of batches, or until latency's CV settles (bounded)."""

    mode: str = "fixed"  # fixed | cv
    n_batches: int = 2  # fixed mode: batches run; cv mode: minimum batches
    max_batches: int = 10  # cv mode: upper bound
    cv_threshold: float = 0.05  # cv mode: stop once CV of the last `cv_window` latencies is below this
    cv_window: int = 3
    max_output_tokens: int | None = None  # shorter warmup generations; null = same as measured


@dataclass
class _EnergyCore:
    """Energy meters around the measurement window (`energy=auto|none|...`); a meter with knobs of its own
    has its node `energy.<meter>.*`, generated from the meter registry (llem/energy/meters/__init__.py)."""

    meter: str = "auto"  # auto | none | nvml | amdsmi | rapl | zeus | codecarbon
    reason: str | None = None  # none: why energy is not measured (recorded in the result)
    sample_hz: float = 10.0  # power sampler rate where the meter samples
    gpu: bool = True  # auto: try GPU meters
    cpu: bool = True  # auto: try CPU meters
    gpu_indices: list[int] | None = None  # CUDA ordinals (after CUDA_VISIBLE_DEVICES) to measure; null = all
    baseline_s: float = 30.0  # idle power measured before model load; 0 = off
    baseline_ttl_s: float = 3600.0  # reuse a cached baseline younger than this
    thermal_warmup_s: float = 0.0  # run warmup until GPU temperature stops rising, at most this long; 0 = off
    thermal_plateau_s: float = 10.0  # thermal warmup: temperature counts as settled when it rose less
    thermal_tolerance_c: float = 1.0  # ... than this over the last thermal_plateau_s seconds
    extra: dict[str, Any] = field(default_factory=dict)
    node: NodeConfig = field(default_factory=NodeConfig)  # BMC node power (energy.node.source=redfish|ipmi)
    basis: str = "auto"  # per-token/request figures from: auto (gpu, else cpu, else node) | gpu | cpu | node


@dataclass
class GpuConfig:
    """GPU settings applied to the job's own GPUs before the model loads and put back after it, whatever
    happens (docs/gpu-settings.md). null = leave the GPU as it is. Needs root (NVML NO_PERMISSION: exit 2)."""

    power_limit_w: float | None = None  # power limit (W) within the GPU's constraints; null = leave
    sm_clock_mhz: Any = None  # locked SM clock: null, one MHz value, or [min, max] (nvmlDeviceSetGpuLockedClocks)
    mem_clock_mhz: Any = None  # locked memory clock: null or one supported MHz value (nvmlDeviceSetMemoryLockedClocks)
    persistence: str = "leave"  # leave | on: persistence mode while the job runs


@dataclass
class CoolConfig:
    """study.gaps=adaptive: before each job wait until the job's GPUs are this close to their idle state
    (measured before the study), at most max_s."""

    temp_c: float = 3.0  # within this many °C of the idle temperature
    power_w: float = 10.0  # and this many W of the idle power
    max_s: float = 300.0  # wait at most this long, then start with a warning in the result
    poll_s: float = 1.0  # how often the GPUs are read while waiting


@dataclass
class StudyConfig:
    """Settings of a study (multirun), read by llem's sweeper and launcher; never part of config_hash."""

    n_cycles: int = 1
    order: str = "interleaved"  # sequential | interleaved | shuffled
    shuffle_seed: int | None = None  # null: derived from the study design hash
    gaps: Any = True  # true (adaptive on GPU hosts unless a gap is set) | adaptive | fixed | false (no gaps)
    cool: CoolConfig = field(default_factory=CoolConfig)  # gaps=adaptive: how cool is cool enough
    config_gap_seconds: float | None = None  # null: 60 s on GPU hosts, 0 on CPU-only hosts
    cycle_gap_seconds: float | None = None  # null: 300 s on GPU hosts, 0 on CPU-only hosts
    max_jobs: int = 200
    allow_over_max_jobs: bool = False
    dry_run: bool = False
    job_estimate_s: float = 60.0  # plan estimate per job never measured before (same config_hash)
    history_dir: str | None = None  # earlier results for estimates (searched recursively); null: multirun/ layout two levels above the sweep folder
    resume: bool = False
    # llem's launcher knobs (timeout_s, gpus_per_job, ...) are hydra.launcher.* only (docs/launcher.md);
    # `study.<knob>` is refused with a pointer there (llem.config.overrides.MOVED_KEYS)
    # search (llem/search/objective.py): result field(s) with a direction the job returns to Hydra, e.g.
    # throughput.output_tok_s:max or [energy.j_per_output_token:min,latency.ttft_s.p90:min]; null = none
    objective: Any = None


@dataclass
class TrackingConfig:
    """Experiment tracking (`tracking=none|mlflow`, llem/search/tracking.py, a Hydra callback); not in config_hash."""

    name: str = "none"  # none | mlflow
    uri: str | None = None  # MLflow tracking URI; null: sqlite:///<sweep or run folder>/mlflow.db
    experiment: str | None = None  # MLflow experiment; null: the study's name (experiment=<option>, else llem)


@dataclass
class StudyJobConfig:
    """This job's place in a study; written by the sweeper, copied into the result."""

    cycle: int = 0
    config_hash: str | None = None
    study_design_hash: str | None = None
    index: int | None = None


@dataclass
class DebugConfig:
    """Test-only fault injection, run inside the job (see tests/unit/launch/test_supervisor.py, tests/e2e/test_launcher.py)."""

    fault: str = "none"  # none | raise | exit | segfault | sigkill | sleep
    sleep_s: float = 0.0
    exit_code: int = 3


@dataclass
class SloConfig:
    """Service-level objective of a serving job, as vLLM's `--goodput`: a succeeded request is good when every
    threshold that is set holds (any subset; null = not used)."""

    ttft_s: float | None = 1.0  # time to first token (from send), seconds; null = not used
    tpot_s: float | None = 0.1  # time per output token (e2el − ttft) / (output tokens − 1), seconds; null = not used
    e2el_s: float | None = None  # end-to-end latency (send → last token), seconds; null = not used
    itl_s: float | None = None  # removed: it was the request's mean inter-token time, vLLM's TPOT: use tpot_s


@dataclass
class TraceConfig:
    """Replay of a production trace (docs/traces.md): each request at its trace time, with its lengths."""

    path: str | None = None  # Azure LLM inference CSV or Mooncake JSONL; null = no trace (the arrival process)
    format: str = "auto"  # auto (from the content) | azure | mooncake
    speedup: float = 1.0  # the trace's time is divided by this (2 = twice as fast)
    start_s: float = 0.0  # window start, seconds after the trace's first request
    duration_s: float | None = None  # window length, seconds of trace time; null = to the end
    max_requests: int | None = None  # at most this many requests of the window (the first ones); null = all
    clip: bool = False  # a request too long for the context: false = skip it (counted), true = clip its prompt
    block_tokens: int | None = None  # tokens per Mooncake hash_id block; null = inferred (ceil(input / ids))


@dataclass
class ScenarioConfig:
    """How requests reach the engine (`scenario=offline|serving`, address knobs as `scenario.<knob>=...`)."""

    name: str = "offline"  # offline: all prompts at once / static batches | serving: requests arrive over time
    request_rate: float = float("inf")  # serving: requests/s of the arrival process; inf = all at once
    burstiness: float = 1.0  # serving: gamma shape of inter-arrival gaps; 1 = Poisson, < 1 burstier, inf = constant
    max_concurrency: int | None = None  # serving: most requests in flight (client side); null = unbounded
    warmup_requests: int = 4  # serving: requests run through the same path before the window (not measured)
    seed: int | None = None  # serving: arrival-process seed; null = the top-level seed
    ramp_up: str | None = None  # serving: null | linear | exponential: rate from ramp_up_start_rps to _end_rps
    ramp_up_start_rps: float | None = None  # serving, with ramp_up: rate of the first request (req/s)
    ramp_up_end_rps: float | None = None  # serving, with ramp_up: rate of the last request (req/s)
    slo: SloConfig = field(default_factory=SloConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)  # serving: replay a trace instead of the arrivals


from llem.backends.openai.config import OpenaiConfig, OpenaiServerConfig  # noqa: E402,F401
from llem.backends.pytorch.config import Decoding, PytorchConfig  # noqa: E402,F401
from llem.backends.vllm.config import VllmConfig  # noqa: E402


@dataclass(frozen=True)
class BackendSpec:
    """Everything llem knows about one backend, in one registry entry (DEVELOPERS.md "Adding things").

    Targets are "module:attribute" strings, imported only when a job uses them, so this module stays pure.
    """

    config: type  # knob dataclass; its section `<name>:` on ExperimentConfig is generated from this entry
    target: str | None  # "module:Class" of the Backend for scenario=offline; None: no offline mode
    serving_target: str | None = None  # "module:Class" for scenario=serving; None: no serving mode
    checks: str | None = None  # "module:function(c, cfg)": range checks before load (a pure module)
    preflight: str | None = None  # "module:function(cfg)": host checks before load (e.g. the device exists)
    batch_knob: str | None = None  # knob that is the batch axis (reports' x axis, workload.batch_size)
    input_tokens_knob: str | None = "max_input_tokens"  # knob that truncates prompts (workload block)
    output_tokens_knob: str | None = "max_tokens"  # knob that caps output tokens (workload block)

    def scenarios(self) -> tuple[str, ...]:
        return tuple(name for name, t in (("offline", self.target), ("serving", self.serving_target)) if t)


def import_target(path: str) -> Any:
    """"package.module:attribute" -> the attribute (importing the module)."""
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# The backend registry: the ONE place a backend is declared. The schema's sections, make_backend,
# validation, the workload block, config_hash and the report's batch axis all read it.
BACKENDS: dict[str, BackendSpec] = {
    "pytorch": BackendSpec(PytorchConfig, "llem.backends.pytorch.backend:PytorchBackend",
                           checks="llem.backends.pytorch.checks:check", batch_knob="batch_size",
                           preflight="llem.backends.pytorch.preflight:check_device",
                           output_tokens_knob="max_output_tokens"),
    "vllm": BackendSpec(VllmConfig, "llem.backends.vllm.backend:VllmBackend",
                        serving_target="llem.backends.vllm.serving:VllmServingBackend",
                        checks="llem.backends.vllm.checks:check", batch_knob="max_num_seqs"),
    "openai": BackendSpec(OpenaiConfig, "llem.backends.openai.backend:OpenaiBackend",
                          serving_target="llem.backends.openai.backend:OpenaiBackend",
                          checks="llem.backends.openai.checks:check"),
}


def _with_sections(core: type, name: str, sections: list[tuple[str, Any, Any]]) -> type:
    """`core` + one typed section per registry entry (`pytorch: PytorchConfig | None = None`,
    `rapl: RaplConfig = RaplConfig()`, ...), so Hydra types every knob at compose time."""
    from dataclasses import make_dataclass

    cls = make_dataclass(name, sections, bases=(core,))
    cls.__module__, cls.__doc__ = __name__, core.__doc__
    return cls


from llem.energy.meters import METERS  # noqa: E402  (the meter registry: pure, no vendor library)

# energy.<meter>.* for every meter with knobs of its own (METERS[...].config); e.g. energy.rapl.root
METER_NODES: dict[str, type] = {name: spec.config for name, spec in METERS.items() if spec.config}
EnergyConfig = _with_sections(_EnergyCore, "EnergyConfig", [
    (name, cls, field(default_factory=cls)) for name, cls in METER_NODES.items()])


@dataclass
class _ExperimentCore:
    """One measured job. The `backend` group sets `backend` and fills its own section."""

    backend: str = "pytorch"
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)  # GPU power limit / clocks for this job (restored after)
    n: int = 16  # prompts used from the dataset
    precision: Precision = Precision.fp32
    seed: int = 0
    study: StudyConfig = field(default_factory=StudyConfig)
    study_job: StudyJobConfig = field(default_factory=StudyJobConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow (docs/search-tracking-api.md)
    save_requests: bool = True  # per-request latencies beside result.json (requests.jsonl)
    quiet: bool = False  # no summary print
    max_prompts: int = 100_000  # bound on n against typos (like study.max_jobs); docs/errors.md
    allow_over_max_prompts: bool = False  # true: n above max_prompts runs anyway


ExperimentConfig = _with_sections(_ExperimentCore, "ExperimentConfig", [
    (name, Optional[spec.config], field(default=None)) for name, spec in BACKENDS.items()])  # noqa: UP045

# Top-level keys that do not change what is measured: excluded from config_hash.
NON_MEASUREMENT_KEYS: tuple[str, ...] = ("study", "study_job", "hydra", "quiet", "save_requests", "max_prompts",
                                          "allow_over_max_prompts", "tracking")
# Nested settings that do not change what is measured either (where files are cached).
NON_MEASUREMENT_SUBKEYS: tuple[tuple[str, str], ...] = (("model", "cache_dir"), ("openai", "api_key_env"))
