"""Real BMC servers on 127.0.0.1 for the node-power tests, started by the tests themselves.

- Redfish: sushy-tools' `sushy-static -m DIR` serving DMTF-style mockups written here (files are read
  per request, so `RedfishMockup.set_power` changes the reading while a job runs).
- Redfish that needs credentials: a small http.server answering 401 without the right basic auth,
  else serving the same mockup tree (sushy-static has no authentication).
- A BMC that never answers: a listening socket nobody accepts on.
- IPMI: tests/fakes/ipmi_bmc_sim.py (pyghmi's server-side Bmc answering DCMI Get Power Reading).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http import server as http_server
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomically (temp + rename): the server never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


class RedfishMockup:
    """A DMTF-style mockup tree: ServiceRoot, Chassis collection, one chassis `1U` (plus an enclosure
    `Enclosure` without power readings listed first) with `style`:
    - "environment": EnvironmentMetrics (PowerWatts, EnergykWh) and PowerSubsystem links (Redfish 2020.4+),
    - "legacy": the deprecated Power resource (PowerControl[].PowerConsumedWatts),
    - "none": both resources present, readings null."""

    def __init__(self, root: Path, style: str = "environment", power_w: float = 300.0,
                 energy_kwh: float | None = 12.5) -> None:
        self.root, self.style = root, style
        self.energy_kwh = energy_kwh
        v1 = root
        _write_json(v1 / "index.json", {
            "@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot", "Id": "RootService",
            "Name": "Root Service", "RedfishVersion": "1.17.0", "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
            "Systems": {"@odata.id": "/redfish/v1/Systems"}})
        _write_json(v1 / "Chassis" / "index.json", {
            "@odata.id": "/redfish/v1/Chassis", "@odata.type": "#ChassisCollection.ChassisCollection",
            "Name": "Chassis Collection", "Members@odata.count": 2,
            "Members": [{"@odata.id": "/redfish/v1/Chassis/Enclosure"}, {"@odata.id": "/redfish/v1/Chassis/1U"}]})
        _write_json(v1 / "Chassis" / "Enclosure" / "index.json", {
            "@odata.id": "/redfish/v1/Chassis/Enclosure", "@odata.type": "#Chassis.v1_23_0.Chassis",
            "Id": "Enclosure", "Name": "Rack enclosure", "ChassisType": "Enclosure"})
        chassis: dict[str, Any] = {
            "@odata.id": "/redfish/v1/Chassis/1U", "@odata.type": "#Chassis.v1_23_0.Chassis", "Id": "1U",
            "Name": "Computer System Chassis", "ChassisType": "RackMount", "Manufacturer": "Contoso",
            "PowerState": "On", "Status": {"State": "Enabled", "Health": "OK"}}
        if style in ("environment", "none"):
            chassis["EnvironmentMetrics"] = {"@odata.id": "/redfish/v1/Chassis/1U/EnvironmentMetrics"}
            chassis["PowerSubsystem"] = {"@odata.id": "/redfish/v1/Chassis/1U/PowerSubsystem"}
            _write_json(v1 / "Chassis" / "1U" / "PowerSubsystem" / "index.json", {
                "@odata.id": "/redfish/v1/Chassis/1U/PowerSubsystem",
                "@odata.type": "#PowerSubsystem.v1_1_0.PowerSubsystem", "Id": "PowerSubsystem",
                "Name": "Power Subsystem for Chassis", "CapacityWatts": 2000,
                "PowerSupplies": {"@odata.id": "/redfish/v1/Chassis/1U/PowerSubsystem/PowerSupplies"}})
        if style in ("legacy", "none"):
            chassis["Power"] = {"@odata.id": "/redfish/v1/Chassis/1U/Power"}
        _write_json(v1 / "Chassis" / "1U" / "index.json", chassis)
        _write_json(v1 / "Chassis" / "1U" / "Sensors" / "TotalPower" / "index.json", {
            "@odata.id": "/redfish/v1/Chassis/1U/Sensors/TotalPower", "@odata.type": "#Sensor.v1_7_0.Sensor",
            "Id": "TotalPower", "Name": "Total Power", "ReadingType": "Power", "ReadingUnits": "W",
            "SensingInterval": "PT0.5S", "PhysicalContext": "Chassis"})
        self.set_power(None if style == "none" else power_w)

    def set_power(self, power_w: float | None, energy_kwh: float | None = None) -> None:
        if energy_kwh is not None:
            self.energy_kwh = energy_kwh
        c = self.root / "Chassis" / "1U"
        if self.style in ("environment", "none"):
            doc: dict[str, Any] = {
                "@odata.id": "/redfish/v1/Chassis/1U/EnvironmentMetrics",
                "@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics", "Id": "EnvironmentMetrics",
                "Name": "Chassis Environment Metrics",
                "PowerWatts": {"DataSourceUri": "/redfish/v1/Chassis/1U/Sensors/TotalPower", "Reading": power_w}}
            if self.energy_kwh is not None:
                doc["EnergykWh"] = {"DataSourceUri": "/redfish/v1/Chassis/1U/Sensors/TotalEnergy",
                                    "Reading": None if power_w is None else self.energy_kwh}
            _write_json(c / "EnvironmentMetrics" / "index.json", doc)
        if self.style in ("legacy", "none"):
            _write_json(c / "Power" / "index.json", {
                "@odata.id": "/redfish/v1/Chassis/1U/Power", "@odata.type": "#Power.v1_7_1.Power", "Id": "Power",
                "Name": "Power", "PowerControl": [{
                    "@odata.id": "/redfish/v1/Chassis/1U/Power#/PowerControl/0", "MemberId": "0",
                    "Name": "System Power Control", "PowerConsumedWatts": power_w, "PowerCapacityWatts": 2000,
                    "PowerMetrics": {"IntervalInMin": 1, "AverageConsumedWatts": power_w}}],
                "PowerSupplies": []})


def _wait_port(port: int, proc: subprocess.Popen[Any] | None = None, udp: bool = False, bound_s: float = 20) -> None:
    t_end = time.monotonic() + bound_s
    while time.monotonic() < t_end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        if udp:
            line = proc.stdout.readline() if proc and proc.stdout else ""
            if "ready" in line:
                return
            continue
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on 127.0.0.1:{port} did not come up within {bound_s} s")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (as BMCs ship), made with `cryptography`."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmc.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "bmc.crt", folder / "bmc.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@contextlib.contextmanager
def sushy_static(mockup_dir: Path, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """sushy-tools' `sushy-static -m DIR` on 127.0.0.1 (HTTPS with `tls=(cert, key)`); yields its address."""
    port = free_port()
    extra = ["-c", str(tls[0]), "-k", str(tls[1])] if tls else []
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from sushy_tools.static.main import main; "
                             "sys.exit(main())", "-i", "127.0.0.1", "-p", str(port), "-m", str(mockup_dir), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def redfish_with_auth(mockup_dir: Path, user: str, password: str, delay_s: float = 0.0) -> Iterator[str]:
    """A Redfish server that answers 401 to any request without `user:password` basic auth (except the
    service root, which Redfish leaves open), else the mockup's files, each `delay_s` late (a slow BMC)."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(http_server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.rstrip("/")
            if path != "/redfish/v1" and self.headers.get("Authorization") != expected:
                body = json.dumps({"error": {"code": "Base.1.8.NoValidSession", "message": "unauthorized"}})
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="BMC"')
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())
                return
            time.sleep(delay_s)
            f = mockup_dir / path.replace("/redfish/v1", "").lstrip("/") / "index.json"
            if not f.is_file():
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(f.read_bytes())

    httpd = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def silent_bmc() -> Iterator[str]:
    """Accepts TCP connections (the kernel's backlog) and never answers: every request times out."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


class IpmiPower:
    """The power file the IPMI simulator answers from."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, current_w: float, average_w: float | None = None, inactive: bool = False) -> None:
        _write_json(self.path, {"current": current_w, "min": current_w, "max": current_w,
                                "average": current_w if average_w is None else average_w, "period_ms": 1000,
                                "inactive": inactive})


@contextlib.contextmanager
def ipmi_bmc(tmp: Path, user: str, password: str, power_w: float = 250.0) -> Iterator[tuple[int, IpmiPower]]:
    """tests/fakes/ipmi_bmc_sim.py on 127.0.0.1 (UDP); yields (port, power file)."""
    power = IpmiPower(tmp / "ipmi-power.json")
    power.set(power_w)
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, str(HERE / "ipmi_bmc_sim.py"), str(port), user, password,
                             str(power.path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_port(port, proc, udp=True)
        yield port, power
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
