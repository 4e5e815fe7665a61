"""Whole-node power from the server's BMC (`energy.node.source=redfish|ipmi`), beside the GPU/CPU meters.

`make_node_meter(cfg.energy)` returns the meter or None (source none); `build_meters` appends it to
energy=auto's (or the explicit meter's) choice and probes it before the model loads, so an unreachable
BMC, wrong credentials, a chassis without power readings, a missing env var or client package stop
the job with one line (exit 2). docs/node-power.md says what each interface reads and why.
"""

from __future__ import annotations

from typing import Any

from llem.energy.meters.node.config import BASES, SOURCES, credentials, problems
from llem.energy.meters.node.meter import NodeMeter, summarise

__all__ = ["BASES", "SOURCES", "NodeMeter", "credentials", "make_node_meter", "problems", "summarise"]


def make_node_meter(energy: Any) -> NodeMeter | None:
    node = energy.node
    if node.source == "redfish":
        from llem.energy.meters.node.redfish import RedfishClient

        return NodeMeter(RedfishClient(node), node.sample_s)
    if node.source == "ipmi":
        from llem.energy.meters.node.ipmi import IpmiClient

        return NodeMeter(IpmiClient(node), node.sample_s)
    return None
