"""GPU check: what llem's energy figures rest on, measured on one NVIDIA GPU in <= 8 minutes, offline.

Builds a real-size model with random weights from an architecture shipped in the repo
(`llem/models/configs/qwen2.5-0.5b/config.json`, 494 M parameters, bf16) and a tokenizer trained on
the spot, then measures, each step in its own try/except with its errors recorded in the JSON:

1. idle power before any CUDA context exists (this process has only NVML open), then with a context,
   then with the model's weights resident;
2. the energy counter's step (how often `nvmlDeviceGetTotalEnergyConsumption` advances);
3. instant (`NVML_FI_DEV_POWER_INSTANT`) vs averaged (`nvmlDeviceGetPowerUsage`) power across an
   idle → busy → idle step: rise and fall times, plateau difference;
4. counter energy vs the sampled power integral (100 Hz) on 10 s and 60 s windows of varying load;
5. the sampler's cost on GPU throughput: generate tok/s with llem's nvml meter sampling at 10/50/100 Hz
   vs none (interleaved repetitions);
6. llem/native fidelity for pytorch at bf16: llem's `run_job` output tok/s vs a plain `generate` loop;
   and for vLLM when it is installed (scripts/bench_fidelity.py's method).
7. GPU settings (docs/gpu-settings.md): two power limits, a third and two thirds of the way up the GPU's
   allowed range, each applied through llem's own path (check, restore record, apply, read back), the GPU
   loaded and its power sampled, then put back, always; needs root (without it: recorded as skipped).

Writes `benchmarks/results/gpu-check-<date>-<host>.json` after every step (a kill keeps what was done).
A total time budget (`--budget-s`, default 450 s) skips the steps that no longer fit, and a watchdog
ends the run shortly after it. No GPU: exit 2 with "no NVIDIA GPU". `--dry-run` (no GPU needed) builds
the architecture on the meta device, composes every llem job the check would run, checks the plan
fits the budget, and exits 0.

    python scripts/gpu_check.py              # on the GPU node
    python scripts/gpu_check.py --dry-run    # anywhere: is the check ready to run?
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
CONFIG_DIR = REPO / "llem" / "models" / "configs" / "qwen2.5-0.5b"
RESULTS_DIR = REPO / "benchmarks" / "results"
DEFAULT_BUDGET_S = 450.0  # 7.5 min of steps; imports and the model build come out of it too
POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT where the bindings lack the constant
PARAMS_EXPECTED = 494_032_768  # Qwen2.5-0.5B with tied embeddings

# (step, planned seconds): a step starts only if its planned time still fits the budget.
PLAN: list[tuple[str, float]] = [
    ("idle_no_context", 7), ("idle_with_context", 10), ("build_model", 30), ("counter_step", 6),
    ("power_sources", 11), ("integral_10s", 12), ("integral_60s", 62), ("sampler_cost", 45),
    ("fidelity_pytorch", 75), ("fidelity_vllm", 110), ("power_limits", 14),
]
WORDS = ("energy token model power watt joule latency batch prompt decode prefill cache memory kernel gpu measure "
         "time speed data study cycle sweep result value the a of and to in is that for on with as light river "
         "stone city music history science language water number system question answer")
OPTIONAL = {"fidelity_vllm", "power_limits"}  # the plan without these must fit the default budget


# -- NVML reads (nv = the pynvml module, h = a device handle) ------------------------------------------
def power_avg_w(nv: Any, h: Any) -> float | None:
    """nvmlDeviceGetPowerUsage: a 1 s average on Ampere (except GA100) and newer, instantaneous before."""
    try:
        return nv.nvmlDeviceGetPowerUsage(h) / 1000.0
    except Exception:
        return None


def power_instant_w(nv: Any, h: Any) -> float | None:
    try:
        fv = nv.nvmlDeviceGetFieldValues(h, [getattr(nv, "NVML_FI_DEV_POWER_INSTANT", POWER_INSTANT)])[0]
    except Exception:
        return None
    if fv.nvmlReturn != getattr(nv, "NVML_SUCCESS", 0):
        return None
    return fv.value.uiVal / 1000.0


def counter_mj(nv: Any, h: Any) -> int | None:
    try:
        return int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
    except Exception:
        return None


def sample(nv: Any, h: Any, seconds: float, hz: float, clock: Callable[[], float] = time.perf_counter,
           sleep: Callable[[float], None] = time.sleep, during: Callable[[float], None] | None = None) -> list[dict]:
    """Rows {t, avg_w, instant_w, counter_mj} at `hz` for `seconds`; `during(elapsed)` is called before
    each row (a load pattern, or the simulator's timeline in tests)."""
    rows: list[dict] = []
    t0 = clock()
    nxt = t0
    while True:
        now = clock()
        if now - t0 >= seconds:
            break
        if during is not None:
            during(now - t0)
        rows.append({"t": clock(), "avg_w": power_avg_w(nv, h), "instant_w": power_instant_w(nv, h),
                     "counter_mj": counter_mj(nv, h)})
        nxt += 1.0 / hz
        sleep(max(0.0, nxt - clock()))
    return rows


def power_limit_sweep(nv: Any, h: Any, uuid: str, set_load: Callable[[bool], None], seconds: float = 4.0,
                      clock: Callable[[], float] = time.perf_counter,
                      sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Step 7: two power limits applied with llem.gpu.apply on the loaded GPU, power sampled under each, the
    previous limit put back after each (in `finally`). Without root: {"skipped": why}, nothing changed."""
    from llem.gpu.apply import GpuSettingsError, Request, apply, restore_applied

    lo, hi = (x / 1000.0 for x in nv.nvmlDeviceGetPowerManagementLimitConstraints(h))
    before = nv.nvmlDeviceGetPowerManagementLimit(h) / 1000.0
    out: dict[str, Any] = {"constraints_w": [lo, hi], "limit_before_w": before, "limits": []}
    for w in (round(lo + (hi - lo) / 3), round(lo + 2 * (hi - lo) / 3)):
        try:
            applied = apply(Request(power_limit_w=float(w)), [uuid], "scripts/gpu_check.py")
        except GpuSettingsError as e:
            out["skipped"] = str(e)
            break
        try:
            set_load(True)
            sleep(1.0)  # the cap settles (and the 1 s average catches up)
            rows = sample(nv, h, seconds, 20, clock=clock, sleep=sleep)
        finally:
            set_load(False)
            failed = restore_applied(applied)
        inst = [r["instant_w"] for r in rows if r["instant_w"] is not None]
        counters = [(r["t"], r["counter_mj"]) for r in rows if r["counter_mj"] is not None]
        counter_w = ((counters[-1][1] - counters[0][1]) / 1000.0 / (counters[-1][0] - counters[0][0])
                     if len(counters) > 1 and counters[-1][0] > counters[0][0] else None)
        out["limits"].append({"limit_w": w, "enforced_w": applied.devices[0]["enforced"].get("power_limit_w"),
                              "instant_w_mean": statistics.fmean(inst) if inst else None,
                              "instant_w_max": max(inst) if inst else None, "counter_w": counter_w,
                              "restore_failed": failed})
    out["limit_after_w"] = nv.nvmlDeviceGetPowerManagementLimit(h) / 1000.0
    out["restored"] = out["limit_after_w"] == before
    return out


def idle_summary(rows: list[dict]) -> dict[str, Any]:
    """Mean idle power by source; the counter's from its first to its last change (whole ticks only)."""
    out: dict[str, Any] = {"samples": len(rows)}
    for key in ("avg_w", "instant_w"):
        vals = [r[key] for r in rows if r[key] is not None]
        out[f"{key}_mean"] = statistics.fmean(vals) if vals else None
    changes = counter_changes(rows)
    if len(changes) >= 2:
        (ta, ea), (tb, eb) = changes[0], changes[-1]
        out["counter_w"] = (eb - ea) / 1000.0 / (tb - ta) if tb > ta else None
    else:
        out["counter_w"] = None
    return out


def counter_changes(rows: list[dict]) -> list[tuple[float, int]]:
    """(time, counter) at each row where the counter moved."""
    out, last = [], None
    for r in rows:
        c = r["counter_mj"]
        if c is not None and c != last:
            if last is not None:
                out.append((r["t"], c))
            last = c
    return out


def counter_step(nv: Any, h: Any, seconds: float, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.001) -> dict[str, Any]:
    """How often the energy counter advances: polled every `poll_s`; median time between changes."""
    times: list[float] = []
    last = counter_mj(nv, h)
    if last is None:
        return {"supported": False, "step_s": None}
    t_end = clock() + seconds
    while clock() < t_end:
        c = counter_mj(nv, h)
        if c != last:
            times.append(clock())
            last = c
        sleep(poll_s)
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"supported": True, "changes": len(times), "step_s": statistics.median(gaps) if gaps else None,
            "step_min_s": min(gaps) if gaps else None, "step_max_s": max(gaps) if gaps else None,
            "poll_s": poll_s}


def step_response(rows: list[dict], t_on: float, t_off: float) -> dict[str, Any]:
    """Per power source: idle level, busy plateau, and the seconds from the load edge until the source
    covered 90 % of the change (rise after t_on, fall after t_off)."""
    out: dict[str, Any] = {}
    for key in ("avg_w", "instant_w"):
        pts = [(r["t"], r[key]) for r in rows if r[key] is not None]
        if not pts:
            out[key] = None
            continue
        idle = [w for t, w in pts if t < t_on]
        plateau = [w for t, w in pts if t_off - 1.0 <= t < t_off]
        if not idle or not plateau:
            out[key] = None
            continue
        lo, hi = statistics.fmean(idle), statistics.fmean(plateau)
        rise = next((t - t_on for t, w in pts if t >= t_on and w >= lo + 0.9 * (hi - lo)), None)
        fall = next((t - t_off for t, w in pts if t >= t_off and w <= hi - 0.9 * (hi - lo)), None)
        out[key] = {"idle_w": lo, "busy_w": hi, "rise_90_s": rise, "fall_90_s": fall}
    a, i = out.get("avg_w"), out.get("instant_w")
    if a and i:
        out["busy_diff_pct"] = 100.0 * (a["busy_w"] - i["busy_w"]) / i["busy_w"] if i["busy_w"] else None
    return out


def integral_vs_counter(rows: list[dict]) -> dict[str, Any]:
    """Energy over the rows' span: counter (between its first and last change, so whole ticks) vs the
    trapezoidal integral of each power source over the same span."""
    changes = counter_changes(rows)
    out: dict[str, Any] = {"samples": len(rows)}
    if len(changes) < 2:
        out["error"] = "the energy counter did not advance twice"
        return out
    (ta, ea), (tb, eb) = changes[0], changes[-1]
    out.update({"span_s": tb - ta, "counter_j": (eb - ea) / 1000.0})
    for key in ("instant_w", "avg_w"):
        pts = [(r["t"], r[key]) for r in rows if r[key] is not None and ta <= r["t"] <= tb]
        if len(pts) < 2:
            out[f"{key}_integral_j"] = None
            continue
        e = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(pts, pts[1:]))
        e *= (tb - ta) / (pts[-1][0] - pts[0][0])  # same span as the counter
        out[f"{key}_integral_j"] = e
        out[f"{key}_vs_counter_pct"] = 100.0 * (e - out["counter_j"]) / out["counter_j"] if out["counter_j"] else None
    return out


def square_wave(on_s: float, off_s: float, set_load: Callable[[bool], None]) -> Callable[[float], None]:
    """A load pattern for `sample(during=...)`: busy for on_s, idle for off_s, repeated."""
    def during(elapsed: float) -> None:
        set_load((elapsed % (on_s + off_s)) < on_s)
    return during


# -- a GPU load that can be switched on and off ---------------------------------------------------------
class MatmulLoad:
    """bf16 matmuls in a thread while on (synchronising every few so the queue stays short)."""

    def __init__(self, torch: Any, n: int = 4096) -> None:
        self.torch = torch
        self.a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        self.b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        self.on = threading.Event()
        self.stop_ = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_.is_set():
            if not self.on.wait(0.01):
                continue
            for _ in range(8):
                self.torch.mm(self.a, self.b)
            self.torch.cuda.synchronize()

    def set(self, busy: bool) -> None:
        (self.on.set if busy else self.on.clear)()

    def close(self) -> None:
        self.stop_.set()
        self.on.set()
        self.thread.join(timeout=10)
        self.torch.cuda.synchronize()


# -- the model --------------------------------------------------------------------------------------
def load_config() -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(CONFIG_DIR))


def meta_parameters() -> int:
    """Parameters of the shipped architecture, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(load_config())
    return sum(p.numel() for p in model.parameters())  # tied embeddings are one parameter


def corpus(n_lines: int, seed: int = 1234) -> list[str]:
    """Deterministic pseudo-text for the tokenizer (its vocabulary only shapes prompt lengths)."""
    import random

    words = WORDS.split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))).capitalize() + "."
            for _ in range(n_lines)]


def build_model(out: Path, device: str = "cuda") -> dict[str, Any]:
    """Random-weight Qwen2.5-0.5B (bf16, built on the GPU) + a byte-level BPE tokenizer trained on the spot."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(4000), vocab_size=4096, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(out)
    config = load_config()
    eos = tok.eos_token_id  # the tokenizer's ids index the real-size (151936) embedding
    config.bos_token_id = config.eos_token_id = config.pad_token_id = eos
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"path": str(out), "parameters": n, "dtype": "bfloat16", "tokenizer_vocab": len(tok)}


def fidelity_overrides(folder: str, energy: str = "nvml", device: str = "cuda", n: int = 64,
                       new_tokens: int = 64) -> list[str]:
    return ["backend=pytorch", f"model.id={folder}", "precision=bf16", f"pytorch.device={device}", "dataset=synthetic",
            "dataset.input_tokens=64", f"n={n}", "pytorch.batch_size=16", f"pytorch.max_output_tokens={new_tokens}",
            "warmup.n_batches=2", f"energy={energy}", "energy.baseline_s=0", "save_requests=false", "quiet=true"]


def vllm_spec(folder: str) -> str:
    # eager: no CUDA-graph capture or torch.compile at engine start (minutes saved; llem's overhead is
    # what fidelity compares, the same engine serves both arms)
    return f"model.id={folder} precision=bf16 vllm.gpu_memory_utilization=0.5 vllm.enforce_eager=true"


# -- the run ------------------------------------------------------------------------------------------
class _Skip(Exception):
    """The steps that need the matmul load generator cannot run."""


class Check:
    """The JSON document, written after every step; the budget; one try/except per step."""

    def __init__(self, path: Path | None, budget_s: float, dry_run: bool) -> None:
        self.path = path
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.doc: dict[str, Any] = {
            "benchmark": "gpu_check", "dry_run": dry_run, "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "budget_s": budget_s,
            "plan": [{"step": s, "planned_s": p} for s, p in PLAN], "steps": {}, "skipped": [], "errors": [],
        }

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def write(self) -> None:
        self.doc["elapsed_s"] = time.perf_counter() - self.t0
        if self.path is None:
            return
        from llem.io import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # default=str: a figure of an odd type is written as text rather than losing the whole file
        atomic_write_text(self.path, json.dumps(self.doc, indent=1, default=str) + "\n")

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        planned = dict(PLAN).get(name, 0.0)
        if self.left() < planned:
            self.doc["skipped"].append(f"{name}: {planned:.0f} s planned, {max(self.left(), 0):.0f} s of the budget left")
            print(f"[gpu_check] skip {name} (budget)", flush=True)
            self.write()
            return None
        print(f"[gpu_check] {name} ...", flush=True)
        t = time.perf_counter()
        entry: dict[str, Any] = {"ok": False}
        self.doc["steps"][name] = entry
        try:
            data = fn()
            entry.update(ok=True, data=data)
            return data
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc(limit=8)
            self.doc["errors"].append(f"{name}: {entry['error']}")
            print(f"[gpu_check] {name} failed: {entry['error']}", flush=True)
            return None
        finally:
            entry["elapsed_s"] = time.perf_counter() - t
            self.write()

    def watchdog(self, grace_s: float = 20.0) -> None:
        """Past budget + grace (a hung step): record it, write, and end the process."""
        def fire() -> None:
            self.doc["timed_out"] = True
            self.doc["errors"].append(f"watchdog: still running {self.budget_s + grace_s:.0f} s after start")
            self.write()
            print("[gpu_check] watchdog: time budget exceeded, results so far written", file=sys.stderr, flush=True)
            os._exit(3)

        self._timer = threading.Timer(max(self.budget_s + grace_s, 1.0), fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel_watchdog(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()


def no_gpu_reason() -> str | None:
    """Why this host cannot run the check (None: an NVIDIA GPU answers NVML). No CUDA context made."""
    from llem.device import device_count

    n = device_count()
    if not n:
        return "no NVIDIA GPU: NVML sees none (no driver, no GPU, or CUDA_VISIBLE_DEVICES hides them)"
    return None


def job_handle(nv: Any) -> tuple[Any, dict[str, Any]]:
    """The NVML handle of CUDA device 0 as this process sees it (CUDA_VISIBLE_DEVICES, PCI order)."""
    from llem.device import job_order, open_gpus, resolve

    visible = resolve(nv, open_gpus(nv), os.environ.get("CUDA_VISIBLE_DEVICES"), job_order()).visible
    if not visible:
        raise LookupError(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} leaves no GPU")
    v = visible[0]
    info = {"cuda_index": 0, "nvml_index": v.gpu.nvml_index, "name": v.gpu.name, "uuid": v.gpu.uuid,
            "mig": v.mig_uuid, "pci_bus_id": v.gpu.pci_bus_id}
    return v.gpu.handle, info


def dry_run(check: Check) -> int:
    """No GPU needed: the architecture builds (meta device), the plan fits, every llem job composes."""
    sys.path.insert(0, str(REPO / "scripts"))
    ok = True
    params = check.step("meta_model", meta_parameters)
    if params is None or abs(params - PARAMS_EXPECTED) > 0.001 * PARAMS_EXPECTED:
        check.doc["errors"].append(f"meta_model: {params} parameters, expected {PARAMS_EXPECTED}")
        ok = False
    needed = sum(p for s, p in PLAN if s not in OPTIONAL)
    check.doc["plan_required_s"] = needed
    check.doc["plan_total_s"] = sum(p for _, p in PLAN)
    if needed > check.budget_s:
        check.doc["errors"].append(f"plan: the required steps need {needed:.0f} s > budget {check.budget_s:.0f} s")
        ok = False

    def compose_all() -> dict[str, Any]:
        from bench_common import compose
        from bench_fidelity import vllm_overrides

        out = {}
        for energy in ("nvml", "none"):
            cfg, _, _ = compose(fidelity_overrides(str(CONFIG_DIR), energy))
            out[f"pytorch_{energy}"] = {"backend": cfg.backend, "model": cfg.model.id,
                                        "precision": str(cfg.precision.value), "device": cfg.pytorch.device}
        s = {"n": 128, "input_tokens": 32, "new_tokens": 32, "warmup_batches": 2}
        cfg, _, _ = compose(vllm_overrides(s, vllm_spec(str(CONFIG_DIR))))
        out["vllm"] = {"backend": cfg.backend, "model": cfg.model.id,
                       "gpu_memory_utilization": cfg.vllm.gpu_memory_utilization}
        return out

    if check.step("compose_jobs", compose_all) is None:
        ok = False

    def meter_api() -> dict[str, Any]:
        from llem.energy.meters.nvml.meter import NvmlMeter

        m = NvmlMeter(sample_hz=100)
        return {"meter": type(m).__name__, "methods": [n for n in ("probe", "start", "stop", "close") if hasattr(m, n)]}

    if check.step("meter_api", meter_api) is None:
        ok = False
    check.doc["ok"] = ok
    check.write()
    print(json.dumps({k: check.doc[k] for k in ("ok", "plan_required_s", "plan_total_s", "errors")}, indent=1))
    return 0 if ok else 1


def run(check: Check, keep: bool) -> int:
    check.watchdog()
    work = Path(tempfile.mkdtemp(prefix="llem-gpu-check-"))  # the built model (1 GB) and llem's job folders
    try:
        return _run(check, work)
    finally:
        check.cancel_watchdog()
        if not keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _run(check: Check, work: Path) -> int:
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA ordinals = NVML's, as llem's launcher sets
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # is_available() without touching CUDA
    from llem.device import driver_versions, nvml_session

    sys.path.insert(0, str(REPO / "scripts"))
    with nvml_session() as nv:
        try:
            h, info = job_handle(nv)
        except LookupError as e:
            print(f"gpu_check: no NVIDIA GPU visible to this process: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # e.g. CUDA_VISIBLE_DEVICES names a GPU NVML cannot open
            check.doc["errors"].append(f"gpu: {type(e).__name__}: {e}")
            check.write()
            print(f"gpu_check: cannot identify the GPU: {e}", file=sys.stderr)
            return 1
        driver, cuda = driver_versions()
        check.doc["gpu"] = {**info, "driver": driver, "cuda_driver": cuda}
        check.write()

        # 1. Idle before any CUDA context: torch is not even imported yet.
        check.step("idle_no_context", lambda: idle_summary(sample(nv, h, 5.0, 50)))

        import torch

        if not torch.cuda.is_available():
            check.doc["errors"].append("torch sees no CUDA device (a CPU build of torch?)")
            check.write()
            print("gpu_check: no NVIDIA GPU visible to torch (CPU build of torch?)", file=sys.stderr)
            return 2
        check.doc["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda}

        def idle_with_context() -> dict[str, Any]:
            torch.empty(1, device="cuda")
            torch.cuda.synchronize()
            return idle_summary(sample(nv, h, 5.0, 50))

        ctx = check.step("idle_with_context", idle_with_context)
        model = check.step("build_model", lambda: build_model(work / "qwen2.5-0.5b-random"))
        noctx = check.doc["steps"].get("idle_no_context", {}).get("data")
        if noctx and ctx:
            check.doc["idle_context_delta_w"] = {
                k: (ctx[k] - noctx[k]) if ctx.get(k) is not None and noctx.get(k) is not None else None
                for k in ("avg_w_mean", "instant_w_mean", "counter_w")}

        load = None
        try:
            try:
                load = MatmulLoad(torch)
            except Exception as e:
                check.doc["errors"].append(f"load generator: {type(e).__name__}: {e} (counter and power steps skipped)")
                check.write()
                raise _Skip from e

            def counter_under_load() -> dict[str, Any]:
                load.set(True)
                try:
                    return counter_step(nv, h, 4.0)
                finally:
                    load.set(False)

            check.step("counter_step", counter_under_load)

            def power_sources() -> dict[str, Any]:
                t0 = time.perf_counter()
                rows = sample(nv, h, 10.0, 100, during=lambda e: load.set(3.0 <= e < 7.0))
                load.set(False)
                resp = step_response(rows, t0 + 3.0, t0 + 7.0)
                resp["instant_supported"] = any(r["instant_w"] is not None for r in rows)
                return resp

            check.step("power_sources", power_sources)
            for seconds in (10, 60):
                def window(seconds: float = seconds) -> dict[str, Any]:
                    rows = sample(nv, h, seconds, 100, during=square_wave(0.7, 0.5, load.set))
                    load.set(False)
                    return integral_vs_counter(rows)

                check.step(f"integral_{seconds}s", window)
            check.step("power_limits", lambda: power_limit_sweep(nv, h, str(info["uuid"]), load.set))
        except _Skip:
            pass
        finally:
            if load is not None:
                load.close()
                del load
                torch.cuda.empty_cache()

    if model is not None:
        check.step("sampler_cost", lambda: sampler_cost(model["path"]))
        check.step("fidelity_pytorch", lambda: fidelity_pytorch(model["path"], work))
        check.step("fidelity_vllm", lambda: fidelity_vllm(model["path"], work))
    check.doc["finished"] = True
    check.write()
    return 0


# -- throughput steps -------------------------------------------------------------------------------
def _native(path: str, n: int = 64, batch: int = 16, input_tokens: int = 64, new_tokens: int = 64,
            device: str = "cuda") -> Any:
    """A plain transformers loop on the built model: bf16 on cuda, left-padded batches, fixed length."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llem.config.schema import DatasetConfig
    from llem.datasets import load_prompts

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(device).eval()
    prompts = load_prompts(DatasetConfig(name="synthetic", input_tokens=input_tokens), n, 0, tok)
    ids = tok(prompts, add_special_tokens=True)["input_ids"]
    batches = [tok.pad({"input_ids": ids[i : i + batch]}, padding=True, return_tensors="pt").to(device)
               for i in range(0, len(ids), batch)]
    kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "num_beams": 1,
          "pad_token_id": tok.pad_token_id, "temperature": None, "top_k": None, "top_p": None}

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def run_once() -> float:
        made = 0
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                out = model.generate(**b, **kw)
                made += out.shape[0] * (out.shape[1] - b["input_ids"].shape[1])
        sync()
        return made / (time.perf_counter() - t0)

    for b in batches[:2]:  # warmup, as llem's warmup.n_batches=2
        with torch.inference_mode():
            model.generate(**b, **kw)
    return run_once, model


def sampler_cost(path: str, reps: int = 3) -> dict[str, Any]:
    """Output tok/s of the same generate loop with no meter, and with llem's nvml meter sampling at
    10, 50, 100 Hz around it; arms rotate each repetition so drift hits all alike."""
    from llem.energy.meters.nvml.meter import NvmlMeter

    run_once, model = _native(path, n=32)
    meters = {hz: NvmlMeter(sample_hz=hz) for hz in (10, 50, 100)}
    arms: list[int] = [0, *meters]
    got: dict[int, list[float]] = {a: [] for a in arms}
    try:
        for m in meters.values():
            m.probe()  # once: it measures the counter step
        for r in range(reps):
            for hz in arms[r % len(arms):] + arms[: r % len(arms)]:
                if hz == 0:
                    got[0].append(run_once())
                    continue
                meters[hz].start()
                try:
                    got[hz].append(run_once())
                finally:
                    meters[hz].stop()
    finally:
        for m in meters.values():
            m.close()
    del model
    base = statistics.median(got[0])
    return {"tok_s": {("none" if k == 0 else f"{k}_hz"): v for k, v in got.items()},
            "ratio_vs_no_meter": {f"{k}_hz": statistics.median(v) / base for k, v in got.items() if k}}


def fidelity_pytorch(path: str, work: Path, reps: int = 3) -> dict[str, Any]:
    """llem's run_job output tok/s vs the plain loop, same model, prompts, batches, settings (bf16)."""
    import torch
    from bench_common import run_llem

    run_once, model = _native(path)
    overrides = fidelity_overrides(path)
    llem_tok_s, native_tok_s, energy = [], [], []
    for r in range(reps):
        order = ("llem", "native") if r % 2 == 0 else ("native", "llem")
        for arm in order:
            if arm == "native":
                native_tok_s.append(run_once())
            else:
                res = run_llem(overrides, work / "jobs")
                llem_tok_s.append(res.throughput["output_tok_s"])
                energy.append({k: (res.energy or {}).get(k) for k in ("gpu_j", "j_per_output_token", "basis")})
    del model
    torch.cuda.empty_cache()
    pairs = [a / b for a, b in zip(llem_tok_s, native_tok_s)]
    return {"llem_tok_s": llem_tok_s, "native_tok_s": native_tok_s, "ratio_pairs": pairs,
            "ratio_median": statistics.median(pairs), "target": ">= 0.97", "llem_energy": energy}


def fidelity_vllm(path: str, work: Path) -> dict[str, Any]:
    """scripts/bench_fidelity.py's vLLM arm (one engine serves llem's run_job and LLM.generate)."""
    from bench_common import Report
    from bench_fidelity import bench_vllm

    report = Report("fidelity_vllm", True, "bench_fidelity.bench_vllm on the built model, bf16")
    bench_vllm(report, True, work / "vllm", vllm_spec(path))
    return {"rows": report.doc["rows"], "skipped": report.doc["skipped"], "data": report.doc["data"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="no GPU: check the model config, plan and llem jobs")
    ap.add_argument("--json", type=Path, default=None,
                    help="output file (default benchmarks/results/gpu-check-<date>-<host>.json; dry run: none)")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="total time budget in seconds")
    ap.add_argument("--keep", action="store_true", help="keep the built model folder")
    args = ap.parse_args(argv)
    os.environ.setdefault("LLEM_CACHE", str(Path(tempfile.gettempdir()) / "llem-gpu-check"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network on the GPU node: fail fast, never hang
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.dry_run:
        return dry_run(Check(args.json, args.budget_s, True))
    why = no_gpu_reason()
    if why:
        print(f"gpu_check: {why}", file=sys.stderr)
        return 2
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    path = args.json or RESULTS_DIR / f"gpu-check-{stamp}-{socket.gethostname()}.json"
    check = Check(path, args.budget_s, False)
    rc = run(check, args.keep)
    print(f"[gpu_check] wrote {path} ({check.doc['elapsed_s']:.0f} s, {len(check.doc['errors'])} error(s))")
    return rc


if __name__ == "__main__":
    sys.exit(main())

