"""The result's node figures (pure): node energy and mean power, and node − GPU − CPU − DRAM = rest.

The rest is what the BMC sees beyond the parts llem measured separately: fans, memory not covered by
RAPL, NICs, disks, PSU and VR losses, and any GPU the job does not use. It goes negative only when the
sensors disagree (a BMC reading lagging a load step, a PSU-side vs DC-side reading, GPUs reported by
NVML above what the BMC sees): then a warning says so.
"""

from __future__ import annotations

from typing import Any

PARTS = ("gpu", "cpu", "dram")


def node_figures(devices: list[dict[str, Any]], totals: dict[str, Any], window_s: float,
                 sample_s: float | None = None) -> tuple[dict[str, Any], list[str]]:
    """{node_j, node_mean_power_w, node: {...}} from the measured devices (the node meter's every `sample_s`),
    and warnings."""
    nodes = [d for d in devices if d["kind"] == "node" and not d.get("estimate")]
    if not nodes:
        return {"node_j": None, "node_mean_power_w": None}, []
    node_j = sum(d["energy_j"] for d in nodes)
    extra = nodes[0]["extra"]
    parts = [k for k in PARTS if totals.get(f"{k}_j") is not None]
    rest = node_j - sum(totals[f"{k}_j"] for k in parts)
    duration = extra.get("duration_s") or window_s
    info = {k: extra.get(k) for k in ("source", "address", "port", "chassis", "resource", "reading", "samples",
                                      "sample_interval_s", "min_power_w", "max_power_w", "counter_j",
                                      "counter_step_j", "bmc_average_w", "bmc_period_s", "bmc_sensing_interval_s",
                                      "read_errors")
            if k in extra}
    block = {
        "node_j": node_j,
        "node_mean_power_w": node_j / duration if duration and duration > 0 else None,
        "node": {**info, "sample_s": sample_s, "method": nodes[0]["method"],
                 "breakdown": {"node_j": node_j, **{f"{k}_j": totals.get(f"{k}_j") for k in PARTS},
                               "rest_j": rest, "rest_parts_subtracted": parts,
                               "rest_mean_power_w": rest / duration if duration and duration > 0 else None}},
    }
    warnings = []
    if rest < 0:
        warnings.append(f"node energy ({node_j:.1f} J from the BMC) is below the {'+'.join(parts)} energy measured "
                        f"beside it ({node_j - rest:.1f} J): rest = {rest:.1f} J < 0, the sensors disagree (BMC "
                        "reading lagging the load or averaged, PSU vs DC side, calibration); trust neither split")
    return block, warnings


def pick_basis(asked: str, block: dict[str, Any]) -> str | None:
    """The kind per-token/request figures use: `energy.basis`, or auto = gpu, else cpu, else node."""
    if asked != "auto":
        return asked if block.get(f"{asked}_j") is not None else None
    for kind in ("gpu", "cpu", "node"):
        if block.get(f"{kind}_j") is not None:
            return kind
    return None
