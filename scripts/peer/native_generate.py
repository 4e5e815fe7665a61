"""A plain `model.generate` loop on one fixed batch, printed as one JSON line: the native reference.

Needs only torch and transformers, so `scripts/bench_peer.py` runs it in llem's environment and in the
peer's (transformers<5), which separates the tool's own cost from the transformers version. The
batch is what optimum-benchmark feeds: random token ids of shape (batch, input_tokens), attention all
ones; greedy, exactly `new_tokens` new tokens (min = max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="local model folder")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--input-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--warmup-runs", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.manual_seed(42)
    transformers.utils.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()  # 4.56+ and 5.x
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch_size, args.input_tokens))
    mask = torch.ones_like(ids)
    kw = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False,
          "num_beams": 1, "use_cache": True, "pad_token_id": model.config.eos_token_id}
    with torch.inference_mode():
        for _ in range(args.warmup_runs):
            model.generate(input_ids=ids, attention_mask=mask, **kw)
        lat = []
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=mask, **kw)
            lat.append(time.perf_counter() - t0)
    new = out.shape[0] * (out.shape[1] - ids.shape[1])
    mean = statistics.fmean(lat)
    print("NATIVE_JSON " + json.dumps({
        "transformers": transformers.__version__, "torch": torch.__version__,
        "generate_latency_mean_s": mean, "generate_latency_p50_s": statistics.median(lat),
        "generate_latency_min_s": min(lat), "generate_latency_max_s": max(lat), "iterations": len(lat),
        "new_tokens_per_generate": new, "output_tok_s": new / mean,
    }), flush=True)


if __name__ == "__main__":
    main()
