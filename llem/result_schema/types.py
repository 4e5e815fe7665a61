"""One dataclass per block of `result.json`, of a requests.jsonl row, a timeseries row, the study
manifest and the plan. Field names are the keys on disk; SI units are in the names.

`OPEN = True` marks a block whose keys are not all listed here (other keys are allowed): blocks
filled by backends, meters or the host (model facts, environment, GPU settings, meter details) whose
keys vary with the hardware and backend. Every other block refuses unknown keys, so a typo or a
renamed key in a producer fails the schema test. Fields with a default may be absent (older 1.x files,
or a block filled only part-way when the job failed); the others are always written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Status = Literal["running", "completed", "failed", "interrupted"]
Basis = Literal["gpu", "cpu", "node", "dram"]
Object = dict[str, Any]  # a free-form JSON object (keys vary with backend, meter or host)


def doc(text: str, **kw: Any) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass
class Empty:
    """The block is empty: the job failed or was interrupted before it was filled, or the scenario has none."""


@dataclass
class LatencyStats:
    """Summary of a latency sample in seconds: count, mean and percentiles (linear interpolation)."""

    n: int
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None


Stats = LatencyStats | None


@dataclass
class Identity:
    """What ran: the config's hash, its place in a study, and the model, tokenizer and data actually loaded.
    A job that died before writing its result gets the keys its launcher knew (config_hash, cycle, job_dir)."""

    OPEN: ClassVar[bool] = False
    config_hash: str | None = doc("always written; a job that died before starting gets what the launcher knew")
    study_design_hash: str | None = None
    cycle: int | None = None
    job_index: int | None = None
    overrides: list[str] = doc("the job's Hydra overrides as given on the command line / by the sweeper",
                               default_factory=list)
    backend: str | None = None
    model: str | None = None
    model_revision: str | None = None
    dataset: str | None = None
    precision: str | None = None
    pid: int | None = None
    job_dir: str | None = None
    model_source: str | None = doc("builtin | local | hub", default=None)
    model_path: str | None = None
    model_commit: str | None = None
    tokenizer: str | None = None
    tokenizer_path: str | None = None
    tokenizer_commit: str | None = None
    files: list[str] = doc("side files written beside result.json (requests.jsonl, timeseries.parquet)",
                           default_factory=list)


@dataclass
class Workload:
    """The requests of the measured window (serving: the succeeded ones) and the limits they ran under."""

    prompts: int
    batch_size: int | None = doc("static batch size, or the engine's batch cap (continuous batching)")
    input_tokens: int = 0
    output_tokens: int = 0
    input_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    truncated_prompts: int = 0
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    dataset: str = ""
    batching: Literal["static", "continuous"] | None = None
    scenario: str | None = doc("offline | serving", default=None)
    compile: Object | None = doc("pytorch torch.compile: shapes warmed, recompiles in window", default=None)
    engine: Object | None = doc("vLLM: the engine settings actually used", default=None)


@dataclass
class Timing:
    load_s: float | None = None
    warmup_s: float | None = None
    warmup_batches: int | None = None
    warmup_latencies_s: list[float] = field(default_factory=list)
    window_s: float | None = None
    window_start_unix_s: float | None = None
    job_s: float | None = doc("whole job, also written when it failed", default=None)


@dataclass
class SteadyThroughput:
    """vLLM offline: the span with a full batch (ML.ENERGY method)."""

    output_tok_s: float | None = None
    output_tokens: int | None = None
    requests: int | None = None
    duration_s: float | None = None
    batch_size: int | None = None


@dataclass
class Throughput:
    output_tok_s: float
    total_tok_s: float
    requests_s: float
    steady_state: SteadyThroughput | None = None


@dataclass
class Latency:
    """Offline latencies; serving figures are in `serving.latency` (vLLM bench serve definitions)."""

    ttft_s: Stats = None
    itl_request_mean_s: Stats = None
    itl_step_s: Stats = None
    e2e_s: Stats = None
    per_token_timing: bool | None = doc("per-token times were observed (else ITL is not reported)", default=None)


@dataclass
class DeviceReading:
    """One device's energy over the window, from one meter."""

    OPEN: ClassVar[bool] = True  # meters may add keys
    device: str
    kind: str
    energy_j: float | None
    method: str
    extra: Object = field(default_factory=dict)
    estimate: bool = False
    adjusted_j: float | None = None


@dataclass
class KindTotals:
    OPEN: ClassVar[bool] = True
    gpu_j: float | None = None
    cpu_j: float | None = None
    dram_j: float | None = None


@dataclass
class Baseline:
    """Idle power measured before the model loads (and again with the job's GPU context)."""

    OPEN: ClassVar[bool] = True  # method details differ per meter
    devices: dict[str, Object] = doc("device → {power_w, ...}", default_factory=dict)


@dataclass
class Adjusted:
    """Energy minus idle power × window time, per kind, and the figures derived from it."""

    OPEN: ClassVar[bool] = True
    gpu_j: float | None = None
    cpu_j: float | None = None
    dram_j: float | None = None
    node_j: float | None = None
    baseline_power_w: dict[str, float | None] = field(default_factory=dict)
    energy_j: float | None = None
    j_per_output_token: float | None = None
    j_per_request: float | None = None


@dataclass
class NodeBreakdown:
    node_j: float
    rest_j: float
    rest_parts_subtracted: list[str]
    rest_mean_power_w: float | None = None
    gpu_j: float | None = None
    cpu_j: float | None = None
    dram_j: float | None = None


@dataclass
class Node:
    """The BMC's whole-node reading (energy.node.*): beside the parts, never summed into them."""

    OPEN: ClassVar[bool] = True  # source-specific keys (address, chassis, counter_j ...)
    method: str
    breakdown: NodeBreakdown
    sample_s: float | None = None
    source: str | None = None


@dataclass
class Energy:
    """Energy over the measured window: per device, per kind, the basis kind's derived figures."""

    measured: bool
    estimate: bool = False
    meters: list[str] = field(default_factory=list)
    selection: list[str] = doc("why each meter was used or not", default_factory=list)
    reason: str | None = None
    devices: list[DeviceReading] = field(default_factory=list)
    window_s: float | None = None
    gpu_j: float | None = None
    cpu_j: float | None = None
    dram_j: float | None = None
    estimates: KindTotals | None = None
    measured_total_j: float | None = None
    measured_total_parts: list[str] = field(default_factory=list)
    node_j: float | None = None
    node_mean_power_w: float | None = None
    node: Node | None = None
    basis: Basis | None = doc("the kind the per-token figures use (energy.basis)", default=None)
    energy_j: float | None = None
    j_per_output_token: float | None = None
    j_per_request: float | None = None
    output_tokens_per_j: float | None = None
    wh_per_1000_queries: float | None = None
    mean_power_w: float | None = None
    j_per_flop: float | None = None
    baseline: Baseline | None = None
    adjusted: Adjusted | None = None
    phases: Object | None = doc("prefill / decode / mixed / other energy from the sampled series", default=None)
    steady_state: Object | None = None
    thermal: dict[str, Object] | None = None
    thermal_warmup: Object | None = None
    sampling: dict[str, Object] | None = None
    meter_details: dict[str, Object] | None = None
    attribution: Object | None = doc("how the job's GPUs were decided (nvml)", default=None)
    unattributed_devices: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ServingRequests:
    planned: int
    sent: int
    succeeded: int
    failed: int
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class ServingThroughput:
    requests_s: float | None = None
    output_tok_s: float | None = None
    total_tok_s: float | None = None


@dataclass
class ServingLatency:
    """As vllm bench serve: TTFT from send; ITL one gap per streamed chunk; TPOT per request."""

    ttft_s: Stats = None
    itl_s: Stats = None
    tpot_s: Stats = None
    itl_request_mean_s: Stats = doc("= tpot_s (older name)", default=None)
    e2e_s: Stats = None
    lateness_s: Stats = None
    queue_s: Stats = None
    definitions: str = ""


@dataclass
class Slo:
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2el_s: float | None = None
    itl_s: float | None = doc("= tpot_s (older name)", default=None)
    met: int | None = None
    fraction: float | None = None
    fraction_of_succeeded: float | None = None
    goodput_rate_s: float | None = None


@dataclass
class Peak:
    peak: int | float | None = None
    mean: float | None = None


@dataclass
class ServingEnergy:
    basis: Basis | None = None
    source: str | None = None
    energy_j: float | None = None
    j_per_request: float | None = None
    j_per_output_token: float | None = None
    j_per_slo_request: float | None = None
    attribution: Object | None = doc("per-request energy split: rule, span, per_request_j", default=None)
    mlenergy_per_request_j: Stats = None


@dataclass
class Serving:
    """scenario=serving: the arrival process asked, what was achieved, SLO/goodput, steady state, energy."""

    request_rate: float | None = doc("asked request rate (req/s); null with request_rate_inf: all at once")
    request_rate_inf: bool = False
    burstiness: float | None = None
    max_concurrency: int | None = None
    ramp_up: Any = None
    warmup_requests: int | None = None
    schedule: Object | None = None
    requests: ServingRequests | None = None
    window_s: float | None = None
    offered_rate_s: float | None = None
    send_rate_s: float | None = None
    achieved_rate_s: float | None = None
    throughput: ServingThroughput | None = None
    latency: ServingLatency | None = None
    slo: Slo | None = None
    output_tokens: int | None = None
    input_tokens: int | None = None
    in_flight: Peak | None = None
    running: Peak | None = None
    backend_info: Object | None = None
    energy: ServingEnergy | None = None
    steady_state: Object | None = doc("ML.ENERGY steady-state span and its energy", default=None)
    steady_state_note: str | None = None


@dataclass
class Flops:
    total_flop: int | float | None
    method: str
    flop_per_output_token: float | None = None
    tokens_processed: int | None = None


@dataclass
class Memory:
    OPEN: ClassVar[bool] = True  # backend-specific (vLLM KV cache ...)
    peak_rss_bytes: int | None = None
    peak_allocated_bytes: dict[str, int | None] | int | None = None


@dataclass
class Model:
    """Facts of the loaded model (backend-specific keys beside these)."""

    OPEN: ClassVar[bool] = True
    parameters: int | None = None
    non_embedding_parameters: int | None = None
    dtype: str | None = None
    device: str | None = None
    architecture: str | None = None


@dataclass
class Environment:
    """Host, packages, GPUs and drivers seen by the job (keys vary with the host)."""

    OPEN: ClassVar[bool] = True
    host: str | None = None
    cpu_count: int | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    gpus: list[Object] = field(default_factory=list)


@dataclass
class GpuSettings:
    """gpu.* applied to the job's GPUs (docs/gpu-settings.md)."""

    OPEN: ClassVar[bool] = True
    requested: Object | None = None
    devices: list[Object] = field(default_factory=list)
    seen: Object | None = None
    cool: Object | None = None
    applied_by: Literal["job", "launcher"] | None = None
    restored: bool | None = None
    warnings: list[str] = field(default_factory=list)
    record: str | None = doc("the file that records the previous settings until they are restored", default=None)
    enforced_power_limit_w: dict[str, float | None] | None = doc("NVML index → limit after applying", default=None)
    previous_power_limit_w: dict[str, float | None] | None = None


@dataclass
class Objective:
    """study.objective: the figures returned to Hydra's sweeper."""

    fields: list[str]
    directions: list[Literal["minimize", "maximize"]]
    values: list[float | None]
    status: Literal["ok", "missing"]
    missing: dict[str, str] = field(default_factory=dict)


@dataclass
class Error:
    """Why the job failed (launcher-written errors add reason, exit_code, exit_signal)."""

    OPEN: ClassVar[bool] = True
    type: str
    message: str
    traceback: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    exit_signal: int | str | None = None


@dataclass
class ResultDoc:
    """One job's result.json (llem.result.Result writes it; SCHEMA_VERSION names its version)."""

    status: Status
    schema_version: str
    llem_version: str
    started_at: str
    finished_at: str | None
    identity: Identity
    workload: Workload | Empty
    timing: Timing
    throughput: Throughput | Empty
    latency: Latency
    energy: Energy | Empty
    serving: Serving | Empty
    flops: Flops | Empty
    memory: Memory
    model: Model
    environment: Environment
    config: Object = doc("the resolved experiment config")
    warnings: list[str] = field(default_factory=list)
    error: Error | None = None
    gpu_settings: GpuSettings = field(default_factory=GpuSettings)
    objective: Objective | None = None


@dataclass
class RequestRow:
    """One line of requests.jsonl (times are perf_counter seconds; serving rows carry more)."""

    index: int
    input_tokens: int
    output_tokens: int
    t_submit: float
    t_first_token: float | None
    t_end: float
    batch: int | None = None
    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float | None = None
    token_times: list[float] | None = None
    t_scheduled: float | None = None
    error: str | None = None
    chunk_times: list[float] | None = None
    chunk_tokens: list[int] | None = None
    t_due: float | None = None
    finish_reason: str | None = None
    failure: str | None = None
    tpot_s: float | None = None
    lateness_s: float | None = None
    queue_s: float | None = None
    success: bool | None = None
    meets_slo: bool | None = None
    energy_j: float | None = None
    prefill_energy_j: float | None = None
    decode_energy_j: float | None = None
    mlenergy_energy_j: float | None = None


@dataclass
class TimeseriesRow:
    """One row of timeseries.parquet: one sample of one device (meters add columns)."""

    OPEN: ClassVar[bool] = True
    t_s: float
    elapsed_s: float
    meter: str
    device: str
    kind: str
    power_w: float | None = None
    temperature_c: float | None = None
    energy_j: float | None = doc("the meter's energy counter at this sample (J since its own zero)", default=None)
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    memory_used_bytes: float | None = None
    clock_event_reasons: Any = doc("NVML clock event reasons bitmask", default=None)
    throttle: Any = None
    attributed: bool | None = doc("the device runs this job's processes", default=None)


@dataclass
class _JobEntry:
    """The keys a job has in both the plan and the manifest (each adds its own after these)."""

    OPEN: ClassVar[bool] = True
    index: int
    status: str
    config: int | None = None
    cycle: int | None = None
    config_hash: str | None = None
    overrides: list[str] | None = None


@dataclass
class ManifestJob(_JobEntry):
    OPEN: ClassVar[bool] = True  # launcher state (pid, attempts, torn ...)
    job_dir: str | None = None
    reason: str | None = None
    error: Error | None = None


@dataclass
class ManifestDoc:
    """A study's manifest.json (llem/study/manifest.py)."""

    OPEN: ClassVar[bool] = True  # study-level fields (cycles, order, ...) beside these
    manifest_version: int | str
    study_design_hash: str | None
    status: str
    created_at: str
    jobs: list[ManifestJob]


@dataclass
class PlanCounts:
    OPEN: ClassVar[bool] = True
    configs: int
    valid_configs: int
    skipped_configs: int
    cycles: int
    jobs: int
    skipped_jobs: int = 0
    already_completed: int = 0
    to_launch: int = 0


@dataclass
class PlanConfig:
    OPEN: ClassVar[bool] = True
    number: int
    overrides: list[str]
    config_hash: str | None
    valid: bool
    backend: str | None = None
    reason: str | None = None
    estimate_s: float | None = None
    estimate_source: str | None = None


@dataclass
class PlanJob(_JobEntry):
    OPEN: ClassVar[bool] = True
    reason: str | None = None
    gap_before_s: float | None = None


@dataclass
class PlanDoc:
    """A study's plan.json (`llem plan`, and the sweeper before it launches): configs, job order, estimate."""

    OPEN: ClassVar[bool] = True  # study-level sections follow the launcher's knobs (settings, gaps, estimate)
    plan_version: int
    study_design_hash: str | None
    created_at: str
    counts: PlanCounts
    configs: list[PlanConfig]
    jobs: list[PlanJob]
    sweep_dir: str | None = None
    settings: Object = field(default_factory=dict)
    gaps: Object | None = None
    estimate: Object | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    planning_s: float | None = None
