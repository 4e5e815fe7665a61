"""Adding the node meter to a job's meter selection (kept out of llem/energy/__init__.py)."""

from __future__ import annotations

import contextlib
from typing import Any

from llem.energy.base import MeterUnavailable


def add_node_meter(selection: Any, cfg: Any) -> Any:
    """Append the BMC meter (probed now, before the model loads) to `selection`; an asked-for node meter
    that cannot measure closes the other meters and raises MeterUnavailable (exit 2, one line)."""
    from llem.energy.meters.node import make_node_meter

    meter = make_node_meter(cfg)
    if meter is None:
        return selection
    try:
        meter.probe()
    except MeterUnavailable as e:
        meter.close()
        for m in selection.meters:
            with contextlib.suppress(Exception):
                m.close()
        raise MeterUnavailable(f"energy.node.source={cfg.node.source}: {e}") from None
    selection.meters.append(meter)  # last: started closest to the window's clock, stopped first
    selection.notes.append(f"{meter.describe()}: added by energy.node.source (beside the meters above; "
                           "node energy is never summed with them)")
    return selection
