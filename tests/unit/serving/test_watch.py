"""llem.serving.watch on known inputs: a killed server whose socket closes before its exit is seen is
reported as exited (the race of c3ae6c4), health is asked at most once per period, cut-off records."""

from __future__ import annotations

import asyncio

from llem.measure.latency import RequestRecord
from llem.serving.watch import ServerWatch, cut_off


class DyingServer:
    """exited() answers None for the first `alive_polls` calls, then the exit (as a reaped SIGKILL)."""

    def __init__(self, alive_polls: int) -> None:
        self.polls, self.alive_polls = 0, alive_polls

    def exited(self) -> str | None:
        self.polls += 1
        return None if self.polls <= self.alive_polls else "the server (pid 42) exited with code -9"


def _rec(i: int, failure: str | None) -> RequestRecord:
    return RequestRecord(index=i, input_tokens=1, output_tokens=0 if failure else 3, t_submit=0.0,
                         t_first_token=None, t_end=0.0, error="x" if failure else None, failure=failure)


def test_a_server_whose_socket_closes_before_its_exit_is_seen_is_reported_as_exited() -> None:
    asked = []

    async def health() -> tuple[bool, str]:
        asked.append(1)
        return False, "GET /health: no answer"

    async def main() -> tuple[str | None, str | None]:
        dying = ServerWatch(DyingServer(alive_polls=3), health, "http://127.0.0.1:1/v1")
        external = ServerWatch(None, health, "http://127.0.0.1:1/v1")
        return await dying.gone(), await external.gone()

    dying, external = asyncio.run(main())
    assert dying == "the server (pid 42) exited with code -9"  # not "fails its health check"
    assert external == "the server at http://127.0.0.1:1/v1 fails its health check (GET /health: no answer)"
    assert len(asked) == 2


def test_health_is_asked_once_per_period_and_only_for_failures_a_dead_server_causes() -> None:
    asked = []

    async def health() -> tuple[bool, str]:
        asked.append(1)
        return True, "GET /health: 200"

    async def main() -> ServerWatch:
        w = ServerWatch(None, health, "http://127.0.0.1:1/v1", every_s=3600.0)
        for rec in (_rec(0, None), _rec(1, "http_5xx"), _rec(2, "connection"), _rec(3, "timeout")):
            await w.after(rec)
        return w

    w = asyncio.run(main())
    assert len(asked) == 1 and w.why is None and not w.abort.is_set()  # one check; the server is there


def test_cut_off_keeps_the_measured_and_marks_in_flight_and_unsent() -> None:
    done = {0: _rec(0, None)}
    recs = cut_off(done, sent={0, 1}, offsets=[0.0, 0.5, 1.0], t0=100.0, why="gone")
    assert [r.failure for r in recs] == [None, "connection", "skipped"]
    assert [r.t_due for r in recs] == [100.0, 100.5, 101.0]
    assert recs[1].error == "gone (cut off in flight)" and recs[2].error == "gone (never sent)"
