"""Hub-backed datasets (`dataset=hf`, `dataset=aienergyscore` without a path) when the Hub is away.

`datasets.load_dataset` retries an unreachable Hub for about half a minute, with a warning per try. Here
the Hub is probed first (one TCP connect, `HUB_PROBE_TIMEOUT_S`, as for Hub models): a dataset that is
neither in the Hugging Face cache nor reachable is one DatasetError line in seconds; a cached one is
read with the Hub switched off for the call, so no retries either.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def cached(hub_id: str) -> bool:
    """Whether any copy of the Hub dataset `hub_id` is on disk (hub cache or datasets' own cache)."""
    from huggingface_hub import constants

    roots = [Path(constants.HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}"]
    ds_cache = os.environ.get("HF_DATASETS_CACHE") or str(Path(constants.HF_HOME) / "datasets")
    roots.append(Path(ds_cache) / hub_id.replace("/", "___"))
    return any(p.is_dir() and any(p.iterdir()) for p in roots)


@contextlib.contextmanager
def offline_unless_reachable(hub_id: str) -> Iterator[None]:
    from huggingface_hub import constants

    from llem.config.preflight import hub_unreachable
    from llem.datasets import DatasetError

    if Path(hub_id).expanduser().exists():  # a local dataset folder or script: no Hub involved
        yield
        return
    here = cached(hub_id)
    if constants.HF_HUB_OFFLINE:
        if not here:
            raise DatasetError(f"dataset.hub_id={hub_id}: not in the Hugging Face cache and HF_HUB_OFFLINE=1; "
                               "allowed a cached Hub dataset or a local file (dataset=jsonl dataset.path=...)")
        yield
        return
    problem = hub_unreachable(constants.ENDPOINT)
    if problem is None:
        yield
        return
    if not here:
        raise DatasetError(f"dataset.hub_id={hub_id}: not in the Hugging Face cache and the Hub ({constants.ENDPOINT}) "
                           f"is unreachable ({problem}); allowed a cached Hub dataset or a local file "
                           "(dataset=jsonl dataset.path=...)")
    import datasets.config as dconfig

    saved = (constants.HF_HUB_OFFLINE, getattr(dconfig, "HF_HUB_OFFLINE", None))
    constants.HF_HUB_OFFLINE = True
    dconfig.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved[0]
        dconfig.HF_HUB_OFFLINE = saved[1]
