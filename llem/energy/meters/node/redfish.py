"""Node power over Redfish (DMTF): the chassis' power reading, over HTTPS with basic auth.

Discovery (once, in `probe`): service root → `Chassis` collection → each member (or
`energy.node.chassis`). Per chassis, the newer `EnvironmentMetrics` resource (Redfish 2020.4+) gives
`PowerWatts.Reading` (W) and, where the BMC keeps one, `EnergykWh.Reading` (a kWh counter); older BMCs
have only the deprecated `Power` resource, `PowerControl[].PowerConsumedWatts` (the first entry
with a value: the chassis' whole-domain figure). The first chassis with a non-null reading is used,
and only that one resource is fetched per sample. Standard library HTTP only (no client package).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

from llem.energy.base import MeterUnavailable
from llem.energy.meters.node.config import credentials


class RedfishClient:
    source = "redfish"

    def __init__(self, node: Any) -> None:
        self.address = str(node.address).rstrip("/")
        self.node = node
        self.timeout_s = float(node.timeout_s)
        self.chassis_id: str | None = node.chassis
        self.resource: str | None = None  # the one URI read per sample
        self.kind: str | None = None  # environment_metrics | power_control
        self.sensing_interval_s: float | None = None  # the sensor's SensingInterval, where the BMC says
        self._auth: str | None = None
        self._ctx: ssl.SSLContext | None = None

    # -- HTTP ---------------------------------------------------------------------------------------
    def _get(self, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.address + path, headers={"Accept": "application/json"})
        if self._auth:
            req.add_header("Authorization", self._auth)
        with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ctx) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _get_checked(self, path: str) -> dict[str, Any]:
        """GET for discovery: every failure becomes MeterUnavailable naming what to fix."""
        where = f"Redfish BMC at energy.node.address={self.address}"
        try:
            return self._get(path)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise MeterUnavailable(
                    f"{where} answered {e.code} {e.reason} for {path}: wrong or missing credentials (check the env "
                    f"vars named by energy.node.username_env={self.node.username_env} / "
                    f"password_env={self.node.password_env})") from None
            raise MeterUnavailable(f"{where} answered {e.code} {e.reason} for {path}") from None
        except TimeoutError:
            raise MeterUnavailable(f"{where}: no answer within energy.node.timeout_s={self.timeout_s:g} s "
                                   f"(GET {path})") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise MeterUnavailable(f"{where}: no answer within energy.node.timeout_s={self.timeout_s:g} s "
                                       f"(GET {path})") from None
            if isinstance(reason, ssl.SSLError):
                hint = ("; a self-signed BMC certificate needs energy.node.verify_tls=false"
                        if self.node.verify_tls else "")
                raise MeterUnavailable(f"{where}: TLS failed ({reason}){hint}") from None
            raise MeterUnavailable(f"{where} is unreachable ({reason})") from None
        except (ValueError, OSError) as e:
            raise MeterUnavailable(f"{where}: bad answer to GET {path} ({type(e).__name__}: {e})") from None

    # -- discovery ----------------------------------------------------------------------------------
    def probe(self) -> None:
        user, password = credentials(self.node)
        if user is not None or password is not None:
            token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
            self._auth = f"Basic {token}"
        if self.address.startswith("https://"):
            self._ctx = ssl.create_default_context()
            if not self.node.verify_tls:
                self._ctx.check_hostname = False
                self._ctx.verify_mode = ssl.CERT_NONE
        root = self._get_checked("/redfish/v1")
        coll = (root.get("Chassis") or {}).get("@odata.id") or "/redfish/v1/Chassis"
        members = [m.get("@odata.id") for m in self._get_checked(coll).get("Members", []) if m.get("@odata.id")]
        if self.chassis_id is not None:
            members = [m for m in members if m.rstrip("/").rsplit("/", 1)[-1] == self.chassis_id]
            if not members:
                raise MeterUnavailable(f"energy.node.chassis={self.chassis_id}: no such chassis at {self.address} "
                                       f"({coll} lists {self._ids(coll)})")
        if not members:
            raise MeterUnavailable(f"Redfish BMC at {self.address}: {coll} lists no chassis")
        looked = []
        for uri in members:
            chassis = self._get_checked(uri)
            for key, kind in (("EnvironmentMetrics", "environment_metrics"), ("Power", "power_control")):
                link = (chassis.get(key) or {}).get("@odata.id")
                if not link:
                    continue
                looked.append(f"{link}")
                doc = self._get_checked(link)
                if _power(kind, doc)[0] is not None:
                    self.chassis_id = chassis.get("Id") or uri.rstrip("/").rsplit("/", 1)[-1]
                    self.resource, self.kind = link, kind
                    self.sensing_interval_s = self._sensing_interval(doc)
                    return
        raise MeterUnavailable(f"Redfish BMC at {self.address}: no chassis reports power (looked at "
                               f"{', '.join(looked) or 'no EnvironmentMetrics or Power resource in ' + ', '.join(members)}"
                               "); this BMC cannot give node power over Redfish (try energy.node.source=ipmi)")

    def _sensing_interval(self, doc: dict[str, Any]) -> float | None:
        """The power sensor's `SensingInterval` (how often the BMC updates it), where it links one."""
        uri = (doc.get("PowerWatts") or {}).get("DataSourceUri")
        if not uri:
            return None
        try:
            return iso_seconds(self._get(uri).get("SensingInterval"))
        except Exception:  # optional: a BMC without Sensor resources still measures
            return None

    def _ids(self, coll: str) -> list[str]:
        try:
            return [m["@odata.id"].rstrip("/").rsplit("/", 1)[-1] for m in self._get(coll).get("Members", [])]
        except Exception:
            return []

    def read(self) -> dict[str, Any]:
        assert self.resource is not None and self.kind is not None, "read() before probe()"
        power, counter_kwh = _power(self.kind, self._get(self.resource))
        return {"power_w": power, "counter_j": None if counter_kwh is None else counter_kwh * 3.6e6}

    def info(self) -> dict[str, Any]:
        return {"address": self.address, "chassis": self.chassis_id, "resource": self.resource,
                "bmc_sensing_interval_s": self.sensing_interval_s,
                "reading": {"environment_metrics": "EnvironmentMetrics.PowerWatts.Reading",
                            "power_control": "Power.PowerControl[].PowerConsumedWatts"}.get(self.kind or "")}

    def identity(self) -> str:
        return f"redfish:{self.address}:{self.chassis_id}"

    def close(self) -> None:
        pass


def iso_seconds(text: Any) -> float | None:
    """An ISO 8601 duration as Redfish writes it (`PT1S`, `PT0.5S`, `PT1M30S`) in seconds; None if not one."""
    m = re.fullmatch(r"P(?:(\d+(?:\.\d+)?)D)?T?(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?",
                     str(text or ""))
    if not m or not any(m.groups()):
        return None
    d, h, mi, sec = (float(x) if x else 0.0 for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + sec


def _power(kind: str, doc: dict[str, Any]) -> tuple[float | None, float | None]:
    """(watts, kWh counter) from an EnvironmentMetrics or legacy Power document; None where absent."""
    if kind == "environment_metrics":
        watts = (doc.get("PowerWatts") or {}).get("Reading")
        kwh = (doc.get("EnergykWh") or {}).get("Reading")
        return (None if watts is None else float(watts)), (None if kwh is None else float(kwh))
    for pc in doc.get("PowerControl") or []:
        if pc.get("PowerConsumedWatts") is not None:
            return float(pc["PowerConsumedWatts"]), None
    return None, None
