"""Node power over IPMI DCMI, IPMI-over-LAN (RMCP+, "lanplus") through pyghmi.

"Get Power Reading" (DCMI 1.5 §6.6.1): NetFn 0x2C (group extension), command 0x02, request
[0xDC, mode 0x01 = system power statistics, 0, 0]. Response after the completion code: 0xDC,
current W (u16), minimum W, maximum W, average W over the BMC's statistics period, an IPMI timestamp
(u32 s), that period (u32 ms), and a state byte whose bit 6 says power measurement is active. The
meter integrates "current" (the BMC's latest reading) at `energy.node.sample_s`, and keeps the BMC's
own average and period beside it in the series.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from llem.energy.base import MeterUnavailable
from llem.energy.meters.node.config import INSTALL, credentials

NETFN_DCMI = 0x2C
CMD_GET_POWER_READING = 0x02
DCMI_GROUP = 0xDC
REQUEST = (DCMI_GROUP, 0x01, 0x00, 0x00)
ACTIVE_BIT = 0x40


def parse_power_reading(data: bytes | bytearray | list[int]) -> dict[str, Any]:
    """The response body (after the completion code) → W figures; power_w None when not active."""
    raw = bytes(data)
    if len(raw) < 18 or raw[0] != DCMI_GROUP:
        raise ValueError(f"not a DCMI Get Power Reading answer ({len(raw)} bytes: {raw[:4].hex()})")
    cur, lo, hi, avg, stamp, period_ms, state = struct.unpack("<HHHHIIB", raw[1:18])
    active = bool(state & ACTIVE_BIT)
    return {"power_w": float(cur) if active else None, "min_w": float(lo), "max_w": float(hi),
            "average_w": float(avg), "bmc_timestamp_s": stamp, "bmc_period_s": period_ms / 1000.0,
            "active": active, "counter_j": None}


class IpmiClient:
    source = "ipmi"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.address = str(node.address)
        self.port = int(node.port)
        self.cmd: Any = None

    def probe(self) -> None:
        user, password = credentials(self.node)
        try:
            from pyghmi.ipmi import command
        except ImportError as e:
            raise MeterUnavailable(f"energy.node.source=ipmi needs the pyghmi package ({e.name} is not "
                                   f"installed): {INSTALL}") from None
        where = f"IPMI BMC at energy.node.address={self.address} port {self.port}"
        try:
            self.cmd = command.Command(bmc=self.address, userid=user or "", password=password or "", port=self.port)
        except Exception as e:  # pyghmi.exceptions.IpmiException: bad password, timeout, ...
            self._forget_sessions()
            msg = str(e)
            if "password" in msg.lower() or "unauthor" in msg.lower() or "user" in msg.lower():
                raise MeterUnavailable(f"{where} refused the login ({msg}): check the env vars named by "
                                       f"energy.node.username_env={self.node.username_env} / "
                                       f"password_env={self.node.password_env}") from None
            raise MeterUnavailable(f"{where}: no IPMI session ({msg if msg and msg != 'None' else 'no answer'}); "
                                   "is IPMI-over-LAN enabled and the address/port right?") from None
        try:
            rsp = self._raw()
        except Exception as e:
            raise MeterUnavailable(f"{where}: DCMI Get Power Reading failed ({type(e).__name__}: {e})") from None
        if rsp.get("code", 0) != 0 or "error" in rsp:
            raise MeterUnavailable(f"{where} does not answer DCMI Get Power Reading (completion code "
                                   f"0x{rsp.get('code', 0):02x}: {rsp.get('error', 'unsupported')}): no DCMI power "
                                   "management on this BMC; try energy.node.source=redfish")

    def _raw(self) -> dict[str, Any]:
        return self.cmd.raw_command(netfn=NETFN_DCMI, command=CMD_GET_POWER_READING, data=REQUEST,
                                    timeout=float(self.node.timeout_s))  # the login keeps pyghmi's own (~5 s)

    def read(self) -> dict[str, Any]:
        rsp = self._raw()
        if rsp.get("code", 0) != 0 or "error" in rsp:
            raise RuntimeError(f"DCMI Get Power Reading failed: code 0x{rsp.get('code', 0):02x} {rsp.get('error', '')}")
        return parse_power_reading(rsp["data"])

    def info(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port,
                "reading": "DCMI Get Power Reading (NetFn 0x2C cmd 0x02): current power"}

    def identity(self) -> str:
        return f"ipmi:{self.address}:{self.port}"

    def _forget_sessions(self) -> None:
        """pyghmi keeps a half-open session per (BMC, user, password, port) for reuse and hands a logged-out
        one back to the next login in this process, which then fails: drop ours (BMC session slots are
        few, so `close` logs out rather than leaving the session to time out)."""
        try:
            from pyghmi.ipmi.private.session import Session
        except ImportError:
            return
        for key in [k for k in list(Session.initting_sessions) if k[0] == self.address and k[3] == self.port]:
            Session.initting_sessions.pop(key, None)

    def close(self) -> None:
        if self.cmd is not None:
            with contextlib.suppress(Exception):  # a BMC that went away needs no logout
                self.cmd.ipmi_session.logout()
            self.cmd = None
            self._forget_sessions()
