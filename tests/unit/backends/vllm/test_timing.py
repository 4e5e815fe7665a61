"""The vLLM backend's pure parts (no vLLM needed): steady-state span, clocks, engine-argument checks."""

from __future__ import annotations

import types

import pytest

from llem.backends.vllm.backend import check_engine_args
from llem.backends.vllm.timing import (
    Clocks,
    RequestTiming,
    peak_running,
    request_phases,
    steady_state_block,
    steady_state_span,
)
from llem.config.schema import ExperimentConfig, VllmConfig
from llem.config.validate import problems


def waves(n: int, batch: int, steps: int, step_s: float = 1.0) -> list[RequestTiming]:
    """Continuous batching with fixed-length outputs, as vLLM runs it when all prompts arrive at once:
    `batch` requests start together, each makes one token per step (the first at the end of its first
    step) and finishes after `steps` tokens; its slot is refilled at the next step's schedule instant."""
    out = []
    for i in range(n):
        wave = i // batch
        start = wave * steps * step_s + 0.1  # scheduled at the start of its wave's first step
        times = [start + (k + 1) * step_s - 0.1 for k in range(steps)]
        out.append(RequestTiming(index=i, input_tokens=4, output_tokens=steps, t_arrival=0.0, t_scheduled=start,
                                 t_first_token=times[0], t_end=times[-1], token_times=times))
    return out


def test_steady_state_is_the_span_with_a_full_batch() -> None:
    # 3 waves of 4 requests, 5 tokens each; waves follow each other, so the batch is full throughout.
    reqs = waves(12, 4, 5)
    block, note = steady_state_block(reqs, 4)
    assert note is None and block is not None
    assert block.t_start == pytest.approx(0.1)  # the batch is full from the first schedule
    assert block.t_end == pytest.approx(15.0)  # ... until the last full step's tokens
    assert block.output_tokens == 60 and block.requests == 12
    assert block.output_tok_s == pytest.approx(60 / 14.9)


def test_steady_state_ends_when_the_queue_drains() -> None:
    # 10 requests, batch 4: the third wave has only 2, so the batch is full for waves 1-2 only.
    reqs = waves(10, 4, 5)
    block, _ = steady_state_block(reqs, 4)
    assert block is not None
    assert block.t_end == pytest.approx(10.0)  # last step with 4 running: end of wave 2
    assert block.output_tokens == 40 and block.requests == 8
    # Tokens of the half-empty tail are outside the span: fewer than the run's 50.
    assert sum(r.output_tokens for r in reqs) == 50


def test_batch_that_never_fills_gives_a_note_not_a_span() -> None:
    reqs = waves(3, 3, 4)
    block, note = steady_state_block(reqs, 8)
    assert block is None and "at most 3 requests ran at once" in note and "max_num_seqs=8" in note
    assert peak_running([(r.t_scheduled, r.t_end) for r in reqs]) == 3


def test_staggered_start_and_refills() -> None:
    # Request 0 runs alone for a step before the rest arrive (vLLM starts on the first request while
    # the others are still being added); the batch of 2 fills at t=1.0, and slots are refilled.
    spans = [(0.0, 3.0), (1.0, 4.0), (3.5, 6.0), (4.5, 8.0)]
    instants = [0.5, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert steady_state_span(spans, 2, instants) == (1.0, 6.0)  # at 7.0 only one request runs


def test_tokens_without_per_step_times_are_spread_over_each_request() -> None:
    reqs = waves(10, 4, 5)
    for r in reqs:
        r.token_times = []
    block, _ = steady_state_block(reqs, 4)
    assert block is not None and block.output_tokens == 40 and "interpolated" in block.method
    assert reqs[0].token_instants() == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])


def test_phases_start_at_scheduling() -> None:
    reqs = waves(2, 1, 3)
    phases = request_phases(reqs)
    assert [(p.t_start, p.t_first_token, p.t_end) for p in phases] == [
        (r.t_scheduled, r.t_first_token, r.t_end) for r in reqs]


def test_clock_offsets_map_monotonic_and_wall_time_onto_perf_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    """On fake clocks with known offsets (monotonic = perf + 100 s, wall = perf + 1.7e9 s), each read 1 µs
    apart and one read pair held up 1 ms (a preemption): the offsets are the known ones from the tightest
    read pair, independent of this machine's speed or load."""
    from llem.backends.vllm import timing

    now, reads = [0.0], [0]

    def tick(offset: float) -> float:
        reads[0] += 1
        now[0] += 1e-3 if reads[0] == 2 else 1e-6  # the first pair's monotonic read comes 1 ms late
        return now[0] + offset

    def fake(implementation: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(perf_counter=lambda: tick(0.0), monotonic=lambda: tick(100.0),
                                     time=lambda: tick(1.7e9),
                                     get_clock_info=lambda name: types.SimpleNamespace(
                                         implementation=implementation if name == "monotonic" else "perf"))

    monkeypatch.setattr(timing, "time", fake("mono"))
    c = Clocks.sample()
    assert c.monotonic_to_perf_s == pytest.approx(-100.0, abs=1e-6)  # 0.5 µs off at most, never 0.5 ms
    assert c.wall_to_perf_s == pytest.approx(-1.7e9, abs=1e-5)
    now[0], reads[0] = 0.0, 0
    monkeypatch.setattr(timing, "time", fake("perf"))  # one clock underneath: no offset at all
    assert Clocks.sample().monotonic_to_perf_s == 0.0


def test_engine_args_unknown_reserved_and_knob_names_are_rejected() -> None:
    accepted = {"max_num_seqs", "max_logprobs", "enable_prefix_caching", "dtype", "seed"}
    found = check_engine_args({"max_logprob": 1, "dtype": "half", "max_num_seqs": 8, "max_logprobs": 0},
                              accepted, "0.32.0")
    by_key = {k: allowed for k, _, allowed in found}
    assert set(by_key) == {"vllm.engine_args.max_logprob", "vllm.engine_args.dtype", "vllm.engine_args.max_num_seqs"}
    assert "did you mean max_logprobs" in by_key["vllm.engine_args.max_logprob"]
    assert by_key["vllm.engine_args.max_logprob"].endswith("accepted: max_logprobs")  # not knobs, not llem's
    assert "precision" in by_key["vllm.engine_args.dtype"]
    assert "use the knob vllm.max_num_seqs" in by_key["vllm.engine_args.max_num_seqs"]


def test_max_model_len_must_fit_prompt_and_output() -> None:
    cfg = ExperimentConfig(backend="vllm", pytorch=None,
                           vllm=VllmConfig(max_model_len=256, max_input_tokens=512, max_tokens=32))
    found = {k: allowed for k, _, allowed in problems(cfg)}
    assert "vllm.max_model_len" in found and "544" in found["vllm.max_model_len"]
    cfg.vllm.max_input_tokens = 200
    assert "vllm.max_model_len" not in {k for k, _, _ in problems(cfg)}
