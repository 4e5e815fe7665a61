"""A real IPMI-over-LAN (RMCP+, lanplus) BMC on 127.0.0.1 for the node-power tests: pyghmi's
server-side `Bmc` (the one virtualbmc uses), answering DCMI "Get Power Reading" (NetFn 0x2C, cmd
0x02, group extension 0xDC) from a JSON file read per request, so a test can change the power while
a job runs. Run: python tests/fakes/ipmi_bmc_sim.py PORT USER PASSWORD POWER_JSON

The file holds {"current": W, "min": W, "max": W, "average": W, "period_ms": ms}; a missing file or
"inactive": true answers with the "power measurement active" bit cleared.
"""

from __future__ import annotations

import json
import struct
import sys
import time

import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.serversession as serversession

_open_session = serversession.ServerSession.create_open_session_response


def _suite3_only(self, request):  # noqa: ANN001, ANN202
    """pyghmi's server speaks cipher suite 3 (HMAC-SHA1) only but answers a SHA-256 proposal as if it had
    accepted it; pyghmi's client proposes SHA-256 first. A real suite-3 BMC rejects the proposal with
    RMCP+ status 0x11 (no cipher suite match), and the client retries with SHA-1: do that."""
    if len(request) > 12 and request[12] != 1:
        return bytearray([request[0], 0x11, 0, 0]) + request[4:8]
    return _open_session(self, request)


serversession.ServerSession.create_open_session_response = _suite3_only


class PowerBmc(bmc.Bmc):
    def __init__(self, authdata: dict[str, str], port: int, power_file: str) -> None:
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.power_file = power_file

    def get_power_state(self) -> str:
        return "on"

    def handle_raw_request(self, request, session):  # noqa: ANN001
        if request["netfn"] == 0x2C and request["command"] == 0x02:
            data = bytes(request.get("data") or b"")
            if not data or data[0] != 0xDC:
                return session.send_ipmi_response(code=0xCC)  # invalid data field
            try:
                with open(self.power_file) as f:
                    p = json.load(f)
            except (OSError, ValueError):
                p = {"inactive": True}
            cur = int(round(p.get("current", 0)))
            body = struct.pack("<BHHHHIIB", 0xDC, cur, int(p.get("min", cur)), int(p.get("max", cur)),
                               int(p.get("average", cur)), int(time.time()) & 0xFFFFFFFF,
                               int(p.get("period_ms", 1000)), 0x00 if p.get("inactive") else 0x40)
            return session.send_ipmi_response(data=list(body))
        return super().handle_raw_request(request, session)


def main() -> None:
    port, user, password, power_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    server = PowerBmc({user: password}, port, power_file)
    print("ready", flush=True)
    server.listen()


if __name__ == "__main__":
    main()
