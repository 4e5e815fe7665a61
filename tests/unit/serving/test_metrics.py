"""RequestColumns: serving's per-request columns for requests.jsonl, written only where today's rows have them."""

from __future__ import annotations

from llem.serving.metrics import RequestColumns


def test_columns_keep_their_order_and_appear_only_when_known() -> None:
    assert RequestColumns(None, "server").as_dict() == {"meets_slo": None, "failure": "server"}
    got = RequestColumns(True, None, prefill_energy_j=1.5, decode_energy_j=2.0, mlenergy_energy_j=3.0)
    assert got.energy_j == 3.5
    assert list(got.as_dict()) == ["meets_slo", "failure", "energy_j", "prefill_energy_j", "decode_energy_j",
                                   "mlenergy_energy_j"]
    zero = RequestColumns(False, None, prefill_energy_j=0.0, decode_energy_j=0.0).as_dict()
    assert zero["energy_j"] == 0.0 and "mlenergy_energy_j" not in zero  # 0 J is a figure, not a missing one
