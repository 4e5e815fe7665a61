"""Checks of `energy.codecarbon.*` before any model loads (pure). Whether CodeCarbon knows a well-formed
country code is its own list's business: an unknown one is refused when the meter runs."""

from __future__ import annotations

import math
import re
from typing import Any

COUNTRY = re.compile(r"[A-Z]{3}")
COUNTRY_ALLOWED = "a 3-letter ISO 3166 code in capitals, e.g. USA, FRA, DEU"


def problems(energy: Any) -> list[tuple[str, Any, str]]:
    cc = energy.codecarbon
    out: list[tuple[str, Any, str]] = []
    if not (isinstance(cc.country_iso_code, str) and COUNTRY.fullmatch(cc.country_iso_code)):
        out.append(("energy.codecarbon.country_iso_code", cc.country_iso_code, COUNTRY_ALLOWED))
    s = cc.measure_power_s
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
        out.append(("energy.codecarbon.measure_power_s", s, "a finite number > 0 (seconds)"))
    return out
