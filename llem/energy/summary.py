"""The result's `energy` block, from meter readings plus the window's workload (pure)."""

from __future__ import annotations

from typing import Any

from llem.energy.base import EnergyReading


def energy_block(readings: list[EnergyReading], notes: list[str], window_s: float, output_tokens: int,
                 requests: int, total_flop: float | None = None) -> dict[str, Any]:
    """GPU, CPU and DRAM energy reported separately; derived per-token figures on the GPU total where
    measured, else the CPU package total (named in `basis`), never a silent sum of different meters."""
    measured = [r for r in readings if r.measured]
    block: dict[str, Any] = {
        "measured": bool(measured),
        "meters": [r.meter for r in readings],
        "selection": notes,
        "reason": None if measured else "; ".join(r.reason or "not measured" for r in readings),
        "devices": [d.__dict__ for r in measured for d in r.devices],
        "warnings": [w for r in readings for w in r.warnings],
        "window_s": window_s,
    }
    for kind in ("gpu", "cpu", "dram"):
        values = [r.total_j(kind) for r in measured]
        present = [v for v in values if v is not None]
        block[f"{kind}_j"] = sum(present) if present else None
    basis_kind = "gpu" if block["gpu_j"] is not None else ("cpu" if block["cpu_j"] is not None else None)
    basis_j = block[f"{basis_kind}_j"] if basis_kind else None
    block["basis"] = basis_kind
    block["energy_j"] = basis_j
    block["j_per_output_token"] = basis_j / output_tokens if basis_j is not None and output_tokens else None
    block["j_per_request"] = basis_j / requests if basis_j is not None and requests else None
    block["output_tokens_per_j"] = output_tokens / basis_j if basis_j else None
    block["wh_per_1000_queries"] = basis_j / requests * 1000 / 3600 if basis_j is not None and requests else None
    block["mean_power_w"] = basis_j / window_s if basis_j is not None and window_s > 0 else None
    block["j_per_flop"] = basis_j / total_flop if basis_j is not None and total_flop else None
    for r in measured:
        if r.extra:
            block.setdefault("meter_details", {})[r.meter] = r.extra
    return block
