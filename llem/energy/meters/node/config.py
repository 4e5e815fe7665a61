"""`energy.node.*`: the knobs, their checks and credentials (pure: no client library imported here).

Credentials are never in the config: `username_env` / `password_env` name environment variables, read
at probe time. Nothing here returns or formats the password except `credentials`, whose result the
clients keep in memory only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

SOURCES = ("none", "redfish", "ipmi")
BASES = ("auto", "gpu", "cpu", "node")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSTALL = "pip install 'llem[node]'"


@dataclass
class NodeConfig:
    """Whole-node power from the server's BMC, measured beside the GPU/CPU meters (docs/node-power.md)."""

    source: str = "none"  # none | redfish | ipmi
    address: str | None = None  # redfish: https://bmc-host[:port]; ipmi: host name or IP of the BMC
    username_env: str | None = None  # NAME of the env var holding the BMC user (never the user itself)
    password_env: str | None = None  # NAME of the env var holding the BMC password (never the password)
    verify_tls: bool = True  # redfish: check the BMC's certificate (false: self-signed BMCs)
    sample_s: float = 1.0  # seconds between readings (≈ the BMC's own update period)
    timeout_s: float = 5.0  # per request; an unanswered BMC fails the probe before the model loads
    chassis: str | None = None  # redfish: chassis id to read; null = the first member with a power reading
    port: int = 623  # ipmi: RMCP+ (lanplus) UDP port


def problems(energy: Any) -> list[tuple[str, Any, str]]:
    """(key, value, allowed) for every bad `energy.node.*` / `energy.basis` value (before any model loads)."""
    n = energy.node
    out: list[tuple[str, Any, str]] = []
    if n.source not in SOURCES:
        out.append(("energy.node.source", n.source, "one of " + ", ".join(SOURCES)))
    if energy.basis not in BASES:
        out.append(("energy.basis", energy.basis, "one of " + ", ".join(BASES)))
    elif energy.basis == "node" and n.source == "none":
        out.append(("energy.basis", energy.basis, "node only with energy.node.source=redfish|ipmi"))
    if not (isinstance(n.sample_s, (int, float)) and 0.05 <= n.sample_s <= 3600):
        out.append(("energy.node.sample_s", n.sample_s, "a number in [0.05, 3600] (seconds; ~1 for most BMCs)"))
    if not (isinstance(n.timeout_s, (int, float)) and 0 < n.timeout_s <= 300):
        out.append(("energy.node.timeout_s", n.timeout_s, "a number in (0, 300] (seconds)"))
    if not (isinstance(n.port, int) and 1 <= n.port <= 65535):
        out.append(("energy.node.port", n.port, "an integer in [1, 65535] (IPMI lanplus, default 623)"))
    for key in ("username_env", "password_env"):
        value = getattr(n, key)
        if value is not None and not _ENV_NAME.match(str(value)):
            out.append((f"energy.node.{key}", value, "null or the NAME of an environment variable "
                        "(letters, digits, _), never the credential itself"))
    if n.source in ("redfish", "ipmi"):
        if not n.address:
            allowed = ("the BMC's URL, e.g. https://bmc-host" if n.source == "redfish"
                       else "the BMC's host name or IP address")
            out.append(("energy.node.address", n.address, allowed))
        elif "@" in str(n.address):
            out.append(("energy.node.address", "<hidden: it holds credentials>", "an address without user:password@ "
                        "(credentials only through energy.node.username_env / password_env)"))
        elif n.source == "redfish" and not re.match(r"^https?://[^/\s]+/?$", str(n.address)):
            out.append(("energy.node.address", n.address, "http(s)://host[:port] (the BMC's root, no path)"))
        elif n.source == "ipmi" and ("/" in str(n.address) or " " in str(n.address)):
            out.append(("energy.node.address", n.address, "a host name or IP address (no scheme or path)"))
    if n.source == "ipmi" and not n.password_env:
        out.append(("energy.node.password_env", n.password_env, "the name of the env var holding the BMC "
                    "password (IPMI lanplus always authenticates)"))
    return out


def credentials(node: Any) -> tuple[str | None, str | None]:
    """(user, password) from the env vars the config names; MeterUnavailable naming a missing one."""
    from llem.energy.base import MeterUnavailable

    values: list[str | None] = []
    for key in ("username_env", "password_env"):
        name = getattr(node, key)
        if name is None:
            values.append(None)
            continue
        value = os.environ.get(name)
        if value is None:
            raise MeterUnavailable(f"energy.node.{key}={name}: environment variable {name} is not set (export "
                                   "it with the BMC's credential before running llem)")
        values.append(value)
    return values[0], values[1]
