"""Job order of a study (pure): which config runs in which cycle, in what sequence.

Repeating every config `n_cycles` times and spreading the repetitions over the study (interleaved or
shuffled) keeps slow drifts — thermal state, background load — from landing on one config only.
"""

from __future__ import annotations

import random

ORDERS = ("sequential", "interleaved", "shuffled")


def seed_from_design_hash(study_design_hash: str) -> int:
    """Shuffle seed when `study.shuffle_seed` is null: re-running the same design reproduces the order."""
    return int(study_design_hash[:8], 16)


def cycle_permutation(n_configs: int, seed: int, cycle: int) -> list[int]:
    """The config order of one shuffled cycle; each cycle is drawn independently from (seed, cycle)."""
    perm = list(range(n_configs))
    random.Random(f"llem-shuffle:{seed}:{cycle}").shuffle(perm)  # str seeds hash with sha512: stable
    return perm


def schedule(n_configs: int, n_cycles: int, order: str, seed: int = 0) -> list[tuple[int, int]]:
    """(config, cycle) pairs in launch order.

    sequential: A A A B B B (every cycle of a config back to back)
    interleaved: A B A B A B (cycle by cycle, configs in plan order)
    shuffled: cycle by cycle, each cycle a fresh permutation of the configs
    """
    if order not in ORDERS:
        raise ValueError(f"study.order={order!r} is invalid: allowed {', '.join(ORDERS)}")
    if n_configs < 0 or n_cycles < 1:
        raise ValueError(f"need n_configs >= 0 and n_cycles >= 1, got {n_configs}, {n_cycles}")
    if order == "sequential":
        return [(c, k) for c in range(n_configs) for k in range(n_cycles)]
    if order == "interleaved":
        return [(c, k) for k in range(n_cycles) for c in range(n_configs)]
    return [(c, k) for k in range(n_cycles) for c in cycle_permutation(n_configs, seed, k)]
