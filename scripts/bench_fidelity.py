"""Fidelity: llem's measured output tok/s vs a plain loop that calls the same engine directly.

pytorch: llem = `llem.job.run_job` in this process (the path `python -m llem` takes after Hydra has
composed the config: load, warmup, measurement window, result); its figure is the result's
`throughput.output_tok_s`, what a user reads. Native = the same model folder loaded with
`AutoModelForCausalLM.from_pretrained`, the same prompts tokenized and left-padded into the same
batches, `model.generate(...)` with the same generation settings, timed around the batch loop after
the same number of warmup batches.

vllm: one engine serves both arms (a vLLM engine takes tens of seconds to start on CPU). llem = the
real `run_job`, handed llem's already-loaded vLLM backend (its load/close become no-ops), so the
window, the throughput formula and the result are llem's own; native = `LLM.generate` on the same
engine with the same SamplingParams and the same token-id prompts.

Repetitions alternate llem / native (ABBA order) so drift hits both. Ratio = llem / native tok/s:
the median of pair ratios (pairs run back to back), with the ratio of medians beside it.
Target >= 0.97.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    Report,
    compose,
    interleave,
    paired_ratio,
    parse,
    parser,
    progress,
    run_llem,
    spread,
)

TARGET = 0.97


def _shape(quick: bool) -> dict[str, int]:
    return {"n": 32 if quick else 64, "batch_size": 8, "input_tokens": 32, "new_tokens": 32,
            "warmup_batches": 2, "reps": 5 if quick else 9}


# -- pytorch --------------------------------------------------------------------------------------
def pytorch_overrides(s: dict[str, int]) -> list[str]:
    return ["backend=pytorch", "model=tiny", "dataset=synthetic", f"dataset.input_tokens={s['input_tokens']}",
            f"n={s['n']}", f"pytorch.batch_size={s['batch_size']}", f"pytorch.max_output_tokens={s['new_tokens']}",
            f"warmup.n_batches={s['warmup_batches']}", "quiet=true"]


class NativeTransformers:
    """The plain loop: from_pretrained, tokenizer(...) + left padding, model.generate per batch."""

    def __init__(self, path: str, prompts: list[str], s: dict[str, int], max_input_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.torch = torch
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        ids = [x[:max_input_tokens] for x in tok(prompts, add_special_tokens=True)["input_ids"]]
        bs = s["batch_size"]
        self.batches = [tok.pad({"input_ids": ids[i : i + bs]}, padding=True, return_tensors="pt")
                        for i in range(0, len(ids), bs)]
        n = s["new_tokens"]
        self.kwargs = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "num_beams": 1,
                       "use_cache": True, "pad_token_id": tok.pad_token_id,
                       "temperature": None, "top_k": None, "top_p": None}
        self.warmup_batches = s["warmup_batches"]

    def _generate(self, batch: Any) -> Any:
        with self.torch.inference_mode():
            return self.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       **self.kwargs)

    def __call__(self) -> float:
        for _ in range(self.warmup_batches):
            self._generate(self.batches[0])
        new = 0
        t0 = time.perf_counter()
        for batch in self.batches:
            out = self._generate(batch)
            new += out.shape[0] * (out.shape[1] - batch["input_ids"].shape[1])
        dt = time.perf_counter() - t0
        return new / dt


def bench_pytorch(report: Report, quick: bool, tmp: Path) -> None:
    from llem.datasets import load_prompts
    from llem.models import resolve_model_path

    s = _shape(quick)
    overrides = pytorch_overrides(s)
    experiment, _, _ = compose(overrides)
    path = resolve_model_path(experiment)
    from transformers import AutoTokenizer

    prompts = load_prompts(experiment.dataset, experiment.n, experiment.seed, AutoTokenizer.from_pretrained(path))
    native = NativeTransformers(path, prompts, s, experiment.pytorch.max_input_tokens)
    expected_tokens = s["n"] * s["new_tokens"]

    def llem_arm() -> float:
        r = run_llem(overrides, tmp / "pytorch")
        assert r.workload["output_tokens"] == expected_tokens, r.workload
        return r.throughput["output_tok_s"]

    llem_arm()  # first job pays one-time imports and allocator growth; not counted
    native()
    res = interleave({"llem": llem_arm, "native": native}, s["reps"], progress("pytorch"))
    _rows(report, "pytorch", res, s)


# -- vllm -----------------------------------------------------------------------------------------
def vllm_overrides(s: dict[str, int], model: str) -> list[str]:
    chosen = model.split() if "=" in model else [f"model={model}"]
    return ["backend=vllm", *chosen, "dataset=synthetic", f"dataset.input_tokens={s['input_tokens']}",
            f"n={s['n']}", f"vllm.max_tokens={s['new_tokens']}", f"warmup.n_batches={s['warmup_batches']}",
            "quiet=true"]


class _Shared:
    """llem's loaded vLLM backend handed to run_job: load/close are no-ops so one engine serves all reps."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass


def bench_vllm(report: Report, quick: bool, tmp: Path, model: str) -> None:
    try:
        from vllm import LLM  # noqa: F401
    except Exception as e:  # not installed, or broken by a package beside it: say why, measure the rest
        report.skip("fidelity vllm", f"vllm is not importable ({type(e).__name__}: {e})")
        return
    try:
        import llem.backends.vllm.backend as vb
    except ImportError as e:
        report.skip("fidelity vllm", f"llem's vLLM backend (llem/backends/vllm/backend.py, issue 6) is not here ({e})")
        return
    import llem.job
    from llem.datasets import load_prompts

    s = _shape(quick)
    s["n"] = 128 if quick else 256
    s["reps"] = 5 if quick else 15  # a 0.5 s window on a CPU engine core: more pairs to tame the noise
    overrides = vllm_overrides(s, model)
    experiment, _, _ = compose(overrides)
    try:
        backend = vb.VllmBackend(experiment)
    except Exception as e:
        report.skip("fidelity vllm", f"llem's vLLM backend rejected model={model}: {type(e).__name__}: {e}")
        return
    report.doc["data"]["vllm_model"] = model
    try:
        backend.load()
    except Exception as e:
        backend.close()
        report.skip("fidelity vllm", f"vLLM engine did not start: {type(e).__name__}: {e}")
        return
    try:
        llm = backend.llm
        v = experiment.vllm
        # The same generation settings as llem's, written out as a plain user would.
        from vllm import SamplingParams

        sampling = SamplingParams(max_tokens=v.max_tokens, min_tokens=v.min_tokens or 0, ignore_eos=v.ignore_eos,
                                  temperature=v.temperature, top_p=v.top_p, top_k=v.top_k, detokenize=False)
        tok = llm.get_tokenizer()
        prompts = load_prompts(experiment.dataset, experiment.n, experiment.seed, tok)
        token_prompts = [{"prompt_token_ids": ids[: v.max_input_tokens]}
                         for ids in tok(prompts, add_special_tokens=True)["input_ids"]]
        expected_tokens = s["n"] * s["new_tokens"]
        real_make = llem.job.make_backend
        arms_backends = {"llem": (overrides, backend)}
        if hasattr(v, "token_timestamps") and v.token_timestamps:
            # llem without per-step token streaming, on the same engine: shows what streaming costs
            ov2 = [*overrides, "vllm.token_timestamps=false"]
            b2 = vb.VllmBackend(compose(ov2)[0])
            b2.engine, b2.tokenizer = backend.engine, backend.tokenizer
            arms_backends["llem, token_timestamps=false"] = (ov2, b2)

        def llem_arm(name: str = "llem") -> float:
            ov, b = arms_backends[name]
            llem.job.make_backend = lambda cfg: _Shared(b)
            try:
                r = run_llem(ov, tmp / "vllm")
            finally:
                llem.job.make_backend = real_make
            assert r.workload["output_tokens"] == expected_tokens, r.workload
            return r.throughput["output_tok_s"]

        def native() -> float:
            for _ in range(s["warmup_batches"]):
                llm.generate(token_prompts, sampling, use_tqdm=False)
            llm.reset_prefix_cache()  # as llem does after warmup: no prompt KV left from warmup
            t0 = time.perf_counter()
            outs = llm.generate(token_prompts, sampling, use_tqdm=False)
            dt = time.perf_counter() - t0
            n = sum(len(o.outputs[0].token_ids) for o in outs)
            assert n == expected_tokens, n
            return n / dt

        llem_arm()
        native()
        arms = {name: (lambda name=name: llem_arm(name)) for name in arms_backends}
        res = interleave({**arms, "native": native}, s["reps"], progress("vllm"))
    finally:
        backend.close()
    _rows(report, "vllm", res, s)
    if "llem, token_timestamps=false" in res:
        r2 = paired_ratio(res["llem, token_timestamps=false"], res["native"])
        report.row("fidelity vllm, vllm.token_timestamps=false: llem / native", r2["median"], "ratio",
                   f">= {TARGET}", r2["median"] >= TARGET,
                   f"same engine, per-step token streaming off; pair IQR {r2['p25']:.3f}-{r2['p75']:.3f}")
        report.doc["data"]["vllm"]["no_token_timestamps_tok_s"] = res["llem, token_timestamps=false"]
        report.doc["data"]["vllm"]["no_token_timestamps_ratio"] = r2
    report.note("vllm: one engine (llem's VllmBackend.load()) serves both arms; llem's arm is the real "
                "run_job with that backend's load/close made no-ops, so warmup, window and result are llem's; "
                "native = LLM.generate with the same SamplingParams values and token-id prompts")


# -- report ---------------------------------------------------------------------------------------
def _rows(report: Report, engine: str, res: dict[str, list[float]], s: dict[str, int]) -> None:
    ratio = paired_ratio(res["llem"], res["native"])
    sl, sn = spread(res["llem"]), spread(res["native"])
    report.row(f"fidelity {engine}: llem / native output tok/s", ratio["median"], "ratio", f">= {TARGET}",
               ratio["median"] >= TARGET,
               f"median of {len(ratio['pairs'])} pair ratios, IQR {ratio['p25']:.3f}-{ratio['p75']:.3f}; "
               f"ratio of medians {ratio['ratio_of_medians']:.3f}")
    report.row(f"fidelity {engine}: llem output tok/s", sl["median"], "tok/s", None, None,
               f"IQR {sl['p25']:,.0f}-{sl['p75']:,.0f}, min {sl['min']:,.0f}, max {sl['max']:,.0f}")
    report.row(f"fidelity {engine}: native output tok/s", sn["median"], "tok/s", None, None,
               f"IQR {sn['p25']:,.0f}-{sn['p75']:,.0f}, min {sn['min']:,.0f}, max {sn['max']:,.0f}")
    report.doc["data"][engine] = {"shape": s, "llem_tok_s": res["llem"], "native_tok_s": res["native"],
                                  "llem": sl, "native": sn, "ratio": ratio}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--backend", choices=["pytorch", "vllm", "all"], default="all")
    ap.add_argument("--vllm-model", default="tiny", help="model group for the vLLM arm (default tiny), or overrides such as "
                         "'model.id=/path/to/model'")
    args = parse(ap)
    report = Report("fidelity", args.quick,
                    "llem = llem.job.run_job in-process (result throughput.output_tok_s); native = the engine "
                    "called directly; interleaved ABBA repetitions, ratio = median of pair ratios")
    with tempfile.TemporaryDirectory(prefix="llem-bench-fidelity-") as tmp:
        if args.backend in ("pytorch", "all"):
            bench_pytorch(report, args.quick, Path(tmp))
        if args.backend in ("vllm", "all"):
            bench_vllm(report, args.quick, Path(tmp), args.vllm_model)
    report.finish(args.json)


if __name__ == "__main__":
    main()
