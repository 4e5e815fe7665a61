"""The measurement window: the only span whose time and energy llem reports as the job's figures.

    with MeasurementWindow(meters, sync=backend.sync) as window:
        output = backend.run(workload)   # nothing else of llem's runs in here

Edges: sync the device (queued kernels finish), start meters, read the clock ... sync, read the
clock, stop meters. No logging or printing inside; meters do their I/O only in start/stop (or in
their own sampler thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType

from llem.energy.base import EnergyReading, Meter


class MeasurementWindow:
    def __init__(self, meters: Sequence[Meter], sync: Callable[[], None] = lambda: None) -> None:
        self.meters = list(meters)
        self.sync = sync
        self.t_start = 0.0  # perf_counter seconds
        self.t_end = 0.0
        self.wall_start = 0.0  # unix seconds, to place the window in timeseries and logs
        self.readings: list[EnergyReading] = []
        self._started: list[Meter] = []

    @property
    def duration_s(self) -> float:
        return self.t_end - self.t_start

    def __enter__(self) -> MeasurementWindow:
        self.sync()
        for meter in self.meters:
            meter.start()
            self._started.append(meter)
        self.wall_start = time.time()
        self.t_start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.sync()
        self.t_end = time.perf_counter()
        # Stop in reverse order so the first-started meter brackets the others.
        self.readings = [meter.stop() for meter in reversed(self._started)][::-1]
