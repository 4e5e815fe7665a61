"""The dispatch loop: one fresh process per job, gaps, health checks, timeouts, Ctrl-C, manifest.

No Hydra here: the plugin (hydra_plugins/llem_launcher) turns each Hydra job into a `JobPlan` (its
folder, manifest index, cycle and a pickled callable the child process runs) and this loop does the
rest. Between jobs it prints and waits; while a job runs it blocks in the kernel (process.Waiter).
Jobs are forked by a zygote that has torch & co. imported (llem.launch.zygote; hydra.launcher.fresh_process),
or spawned as `python -m llem.launch.child` where forking is off or the zygote cannot serve.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO, Union

import psutil

from llem import io
from llem.device import process_tree
from llem.errors import UserError
from llem.launch import health as health_mod
from llem.launch.child import PARENT_PID_ENV
from llem.launch.console import fmt_s, progress_text
from llem.launch.contract import Ledger, NoGaps, Pacing
from llem.launch.outcome import (
    EXIT_INTERRUPTED,
    Outcome,
    classify,
    finalize_result,
    read_result,
    storage_outcome,
    storage_problem,
)
from llem.launch.process import JobProcess, Waiter, child_argv, child_env, kill_tree, reap, signal_name, spawn
from llem.launch.settings import LaunchSettings
from llem.launch.slots import Slot, parse_visible, slot_env
from llem.launch.zygote import ForkServer, ForkServerGone, wanted
from llem.result import now_iso

EXIT_ABORTED = 3


class LaunchInterrupted(SystemExit):
    """Ctrl-C / SIGTERM during a study: running jobs were stopped and marked; exit code 130.
    A SystemExit, so `except Exception` in callers lets it through; callers may re-aggregate in
    `finally` and must re-raise."""

    def __init__(self, signame: str) -> None:
        super().__init__(EXIT_INTERRUPTED)
        self.signame = signame


class LaunchAborted(SystemExit):
    """A health check failed with hydra.launcher.on_unhealthy=abort; exit code 3."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_ABORTED)
        self.message = message


class _Terminated(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signame = signal_name(signum)


@dataclass
class JobPlan:
    """One job, ready to start."""

    num: int  # Hydra job number
    index: int  # manifest index
    cycle: int
    job_dir: Path
    label: str  # overrides text for progress lines
    payload: bytes  # pickled (function, args, kwargs) the child calls
    identity: dict[str, Any]  # fallback identity for a result.json the job never wrote
    fields: dict[str, Any] = field(default_factory=dict)  # extra manifest fields (config_hash, overrides)
    gpu: Optional[dict[str, Any]] = None  # the job's gpu.* (llem.gpu: applied before it starts, restored after)


@dataclass
class Finished:
    num: int
    index: int
    outcome: Outcome
    plan: Optional[JobPlan] = None
    returned: Optional[bytes] = None  # the child's pickled return value
    duration_s: float = 0.0
    pid: Optional[int] = None


@dataclass
class _SlotState:
    gpus: Slot
    busy: bool = False
    free_at: float = 0.0
    prev_cycle: Optional[int] = None
    retry_at: float = 0.0  # health wait: not before


@dataclass
class _Running:
    plan: JobPlan
    proc: JobProcess
    slot: _SlotState
    t0: float
    deadline: Optional[float]
    cpu0: float
    work: Path
    zygote_cpu0: Optional[float] = None  # None: spawned


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _process_cpu_s(pid: Optional[int]) -> Optional[float]:
    if pid is None:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


PrepareFn = Callable[[], Union[JobPlan, Finished]]


class Supervisor:
    def __init__(self, settings: LaunchSettings, sweep_dir: Path, slots: Sequence[Slot], gaps: Optional[Pacing] = None,
                 out: Optional[TextIO] = None, probe: Callable[..., Any] = health_mod.probe,
                 fork_server: Optional[ForkServer] = None, ledger: Optional[Ledger] = None) -> None:
        """`fork_server`: a zygote started earlier (the plugin starts it before planning); without
        one, `run` starts its own when settings.fresh_process allows forking, and closes it.
        `gaps` and `ledger` come from the study above (llem.launch.contract); none: no gaps, no records."""
        self.settings = settings
        self.sweep_dir = Path(sweep_dir)
        self.slots = [_SlotState(tuple(s)) for s in slots]
        self.gaps: Pacing = gaps if gaps is not None else NoGaps()
        self.ledger = ledger if ledger is not None else Ledger()
        self.out = out or sys.stdout
        self.probe = probe
        self.finished: list[Finished] = []
        self.running: dict[int, _Running] = {}
        self.waiter = Waiter()
        self._health_since: Optional[float] = None
        self.fork_server = fork_server if settings.fresh_process != "spawn" else None
        self._fork_warned = False
        self._stopped = False  # stopped for a storage failure (said once)
        from llem.gpu.launch import GpuKeeper

        self.gpu = GpuKeeper(self.gaps, self.out)  # gpu.* applied per job and restored; adaptive gaps

    # -- the study's records (llem: its manifest) ------------------------------------------------------
    def _mark(self, index: int, status: str, **fields: Any) -> None:
        self.ledger.mark(index, status, **fields)

    def _say(self, text: str) -> None:
        if self.settings.progress:
            print(text, file=self.out, flush=True)

    # -- one job -----------------------------------------------------------------------------------
    def _health(self, slot: _SlotState) -> dict[str, Any]:
        refs: Optional[list[str]] = list(slot.gpus) if slot.gpus else parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES"))
        own = {os.getpid()}
        if self.fork_server is not None and self.fork_server.pid is not None:
            own.add(self.fork_server.pid)
        for r in self.running.values():
            own.update(process_tree(r.proc.pid))
        s = self.settings
        return health_mod.check(refs, s.health_max_memory_used_mib, s.health_check_processes, own, self.probe)

    def _start(self, plan: JobPlan, slot: _SlotState, report: dict[str, Any], work_root: Path,
               done: int, total: int, t_study: float) -> None:
        work = work_root / str(plan.num)
        work.mkdir(parents=True, exist_ok=True)
        payload = work / "job.pkl"
        payload.write_bytes(plan.payload)
        plan.job_dir.mkdir(parents=True, exist_ok=True)
        try:
            gpu_env = self.gpu.before(plan.num, plan.gpu, slot.gpus, f"llem study {self.sweep_dir} job {plan.index}")
        except UserError as e:  # e.g. another llem run took the GPU since planning: this job fails, unstarted
            err = {"type": type(e).__name__, "message": str(e), "reason": "gpu_settings"}
            self._mark(plan.index, "failed", finished_at=now_iso(), error=err)
            print(f"llem: job {plan.index} not started: {e}", file=sys.stderr, flush=True)
            self.finished.append(Finished(plan.num, plan.index, Outcome("failed", "gpu_settings", err, None, None,
                                                                        rewrite=False), plan))
            return
        env = child_env(os.environ, {PARENT_PID_ENV: str(os.getpid()), **slot_env(slot.gpus, os.environ),
                                     **health_mod.to_env(report), **gpu_env,
                                     **self.ledger.job_env()})
        failed = sum(f.outcome.status == "failed" for f in self.finished)
        gpus = f" on GPU {','.join(slot.gpus)}" if slot.gpus else ""
        self._say(progress_text(done, total, failed, time.monotonic() - t_study,
                                f"{plan.label} (cycle {plan.cycle}){gpus}", plan.index,
                                [f.duration_s for f in self.finished if f.plan is not None]))
        for problem in report["problems"]:
            print(f"llem: warning: job {plan.index}: {problem}", file=sys.stderr, flush=True)
        proc, zygote_pid = self._launch(plan, payload, work, env)
        t0 = time.monotonic()
        timeout = self.settings.timeout_s
        self.waiter.add(proc)
        slot.busy = True
        self.running[proc.pid] = _Running(plan, proc, slot, t0, t0 + timeout if timeout else None, _cpu_s(), work,
                                          _process_cpu_s(zygote_pid))
        stamp = now_iso()  # launched_at survives the sweeper's rebuild (started_at becomes the job's own)
        self._mark(plan.index, "running", started_at=stamp, launched_at=stamp, pid=proc.pid, job_dir=str(plan.job_dir),
                   start_method="fork" if zygote_pid is not None else "spawn",
                   num=plan.num, cycle=plan.cycle, gpus=list(slot.gpus) or None, finished_at=None, error=None,
                   health={"ok": report["ok"], "checked": report["checked"], "problems": report["problems"]},
                   **plan.fields)

    def _launch(self, plan: JobPlan, payload: Path, work: Path, env: dict[str, str]) -> tuple[JobProcess, Optional[int]]:
        """Fork the job from the zygote, or spawn it: (process, zygote pid or None)."""
        server = self.fork_server
        if server is not None and server.ready():
            try:
                return server.run(payload, work / "return.pkl", work / "fault.txt", env), server.pid
            except ForkServerGone as e:
                if server.problem is None:  # this fork failed; the zygote still serves the next job
                    print(f"llem: warning: job {plan.index}: fork failed ({e}): spawning it instead",
                          file=sys.stderr, flush=True)
        if server is not None and server.problem is not None:
            self._fork_unavailable(f"the fork server (zygote) is unavailable: {server.problem}")
        return spawn(child_argv(payload, work / "return.pkl", work / "fault.txt"), env), None

    def _fork_unavailable(self, why: str) -> None:
        """One warning, then spawn every remaining job (each re-imports torch & co.: slower, same results)."""
        self.fork_server = None
        if not self._fork_warned:
            self._fork_warned = True
            print(f"llem: warning: {why}; each job now starts a fresh Python interpreter "
                  "(as with hydra.launcher.fresh_process=spawn)", file=sys.stderr, flush=True)

    def _finish(self, run: _Running, timed_out: bool = False, interrupted: Optional[str] = None) -> Finished:
        proc, plan = run.proc, run.plan
        zygote_cpu = None
        if run.zygote_cpu0 is not None and self.fork_server is not None:
            now_cpu = _process_cpu_s(self.fork_server.pid)
            zygote_cpu = None if now_cpu is None else round(now_cpu - run.zygote_cpu0, 4)
        if proc.returncode is None:
            if timed_out or interrupted:
                kill_tree(proc, self.settings.kill_grace_s)
            else:
                reap(proc)
        self.waiter.remove(proc)
        self.running.pop(proc.pid, None)
        self.gpu.after(plan.num)  # the job's process is gone, whatever ended it: its GPU settings go back
        duration = time.monotonic() - run.t0
        cpu = _cpu_s() - run.cpu0
        fault = ""
        with suppress(OSError):
            fault = (run.work / "fault.txt").read_text().strip()
        result = read_result(plan.job_dir)
        if result is not None and (result.get("identity") or {}).get("pid") != proc.pid:
            result = None  # an older run's result.json in this folder (resume): not this job's
        outcome = classify(proc.returncode, result, timed_out=timed_out, interrupted=interrupted is not None,
                           timeout_s=self.settings.timeout_s, grace_s=self.settings.kill_grace_s,
                           fault_text=fault, interrupt_signal=interrupted or "SIGINT")
        if getattr(proc, "orphaned", False) and outcome.error is not None:
            outcome.error["message"] += " (its parent, the fork server, died first: the job got SIGTERM)"
        returned = None
        with suppress(OSError):
            returned = (run.work / "return.pkl").read_bytes()
        storage = None
        if outcome.status == "failed":  # did it fail on its disk? (the returned JobFailed names StorageError)
            storage = storage_problem(plan.job_dir, outcome.error,
                                      (fault, (returned or b"").decode("utf-8", "replace")))
            if storage:
                outcome = storage_outcome(outcome, storage, plan.job_dir)
        try:
            finalize_result(plan.job_dir, outcome, result, {**plan.identity, "pid": proc.pid})
        except io.StorageError as e:  # the job's folder cannot be written (even with the reserve)
            outcome = storage_outcome(outcome, e.reason, plan.job_dir) if not storage else outcome
            storage = e.reason
            if outcome.error is not None:
                outcome.error["message"] = str(e)
        try:
            self._mark(plan.index, outcome.status, finished_at=now_iso(), duration_s=round(duration, 3),
                       error=outcome.error, exit_code=outcome.exit_code, exit_signal=outcome.exit_signal,
                       parent_cpu_s=round(cpu, 4), **({"zygote_cpu_s": zygote_cpu} if zygote_cpu is not None else {}))
        except io.StorageExit as e:  # nor the manifest: the job folders still say what is not done
            storage = storage or e.reason
        run.slot.busy = False
        run.slot.free_at = time.monotonic()
        run.slot.prev_cycle = plan.cycle
        if outcome.status == "completed":
            self._say(f"[llem] job {plan.index} completed in {duration:.1f} s")
        else:
            err = outcome.error or {}
            print(f"llem: job {plan.index} {outcome.status} ({outcome.reason}) after {duration:.1f} s: "
                  f"{err.get('type', '')}: {str(err.get('message', '')).splitlines()[0] if err.get('message') else ''}",
                  file=sys.stderr, flush=True)
        fin = Finished(plan.num, plan.index, outcome, plan, returned, duration, proc.pid)
        self.finished.append(fin)
        if storage:
            self._storage_stop(str((outcome.error or {}).get("message") or storage), storage, plan.index)
        return fin

    def _storage_stop(self, message: str, reason: str, index: Optional[int]) -> None:
        """Disk full / not writable: mark the study failed with the reason (best effort: the
        reserve may have given the space for it), say so in one line, stop (exit code 4)."""
        line = f"llem: study stopped ({reason}): {message} (to resume: hydra.sweep.dir={self.sweep_dir})"
        self._stopped = True
        with suppress(OSError, SystemExit):
            self.ledger.study_status("failed", finished_at=now_iso(),
                                     stopped_by={"reason": reason, "job": index, "message": message})
        print(line, file=sys.stderr, flush=True)
        raise io.StorageExit(line, reason)

    # -- the loop ----------------------------------------------------------------------------------
    def _ready_at(self, slot: _SlotState, cycle: int) -> tuple[float, str]:
        if self.gaps.adaptive and slot.prev_cycle is not None and slot.retry_at <= time.monotonic():
            ready, label = self.gpu.ready(slot.gpus, slot.free_at)  # until the GPUs are back near idle
            if not ready:
                return time.monotonic() + self.gpu.cool.poll_s, label
        gap = self.gaps.before(slot.prev_cycle, cycle)
        label = "cycle gap" if self.gaps.starts_cycle(slot.prev_cycle, cycle) else "config gap"
        at = slot.free_at + gap if slot.prev_cycle is not None else 0.0
        if slot.retry_at > at:
            return slot.retry_at, "waiting for the GPU to become healthy"
        return at, label

    def run(self, requests: Sequence[PrepareFn]) -> list[Finished]:
        total = len(requests)
        pending = deque(requests)
        nxt: Optional[JobPlan] = None
        t_study = time.monotonic()
        with self.ledger.hold():  # llem: one running study per folder (a no-op under llem's sweeper)
            return self._run(requests, total, pending, nxt, t_study)

    def _run(self, requests: Sequence[PrepareFn], total: int, pending: deque[PrepareFn], nxt: Optional[JobPlan],
             t_study: float) -> list[Finished]:
        work_root = Path(tempfile.mkdtemp(prefix="llem-launch-"))
        own_server = self._own_fork_server()
        self.gpu.study_start([s.gpus for s in self.slots])  # adaptive gaps: the idle reference
        try:
            with self._signals():
                try:
                    while pending or nxt is not None or self.running:
                        wake: Optional[tuple[float, str]] = None
                        while (pending or nxt is not None) and any(not s.busy for s in self.slots):
                            if nxt is None:
                                got = pending.popleft()()
                                if isinstance(got, Finished):  # could not even be prepared
                                    self.finished.append(got)
                                    continue
                                nxt = got
                            now = time.monotonic()
                            slot, (at, label) = min(((s, self._ready_at(s, nxt.cycle)) for s in self.slots
                                                     if not s.busy), key=lambda x: x[1][0])
                            if at > now:
                                wake = (at, label)
                                break
                            if self.fork_server is not None:
                                self.fork_server.ready()  # first job only: the zygote's imports, never during a job
                            report = self._health(slot)
                            if not self._healthy_enough(report, slot, nxt):
                                wake = self._ready_at(slot, nxt.cycle)
                                break
                            self._health_since = None
                            slot.retry_at = 0.0
                            self._start(nxt, slot, report, work_root, len(self.finished), total, t_study)
                            nxt = None
                        if not self.running:
                            if wake is not None:
                                self.gpu.countdown(wake[0] - time.monotonic(), wake[1])
                            continue
                        self._wait_once(wake)
                except (KeyboardInterrupt, _Terminated) as e:
                    signame = e.signame if isinstance(e, _Terminated) else "SIGINT"
                    self._stop_all(signame)
                    self.ledger.study_status("interrupted", interrupted_at=now_iso(), interrupt_signal=signame)
                    print(f"\nllem: study interrupted ({signame}): running job(s) stopped and marked "
                          f"interrupted; results so far are kept in {self.sweep_dir}", file=sys.stderr, flush=True)
                    raise LaunchInterrupted(signame) from None
                except (io.StorageError, io.StorageExit) as e:  # the launcher's own writes (manifest, job folder)
                    if self._stopped:
                        raise
                    with suppress(io.StorageError, io.StorageExit):  # the others' folders may be as full
                        self._stop_all("SIGTERM")
                    self._storage_stop(str(e) if isinstance(e, io.StorageError) else e.message, e.reason,
                                       nxt.index if nxt is not None else None)
                except BaseException:
                    self._stop_all("SIGTERM")  # never leave a job running behind a launcher error
                    raise
        finally:
            self.gpu.restore_all()  # never leave a GPU changed behind a launcher error
            self.waiter.close()
            if own_server is not None:
                own_server.close()
                self.fork_server = None
            shutil.rmtree(work_root, ignore_errors=True)
        return self.finished

    def _own_fork_server(self) -> Optional[ForkServer]:
        """Start a zygote now (preloading overlaps the first job's preparation) unless one was given."""
        if self.fork_server is not None:
            return None
        if not wanted(self.settings.fresh_process):
            if self.settings.fresh_process == "fork":
                self._fork_unavailable(f"hydra.launcher.fresh_process=fork needs Linux with pidfds (this is {sys.platform})")
            return None
        self.fork_server = ForkServer().start()
        return self.fork_server

    def _healthy_enough(self, report: dict[str, Any], slot: _SlotState, plan: JobPlan) -> bool:
        """Apply hydra.launcher.on_unhealthy; True when the job may start now."""
        if report["ok"]:
            return True
        s = self.settings
        if s.on_unhealthy == "abort":
            message = f"job {plan.index}: GPU not healthy: " + "; ".join(report["problems"])
            self.ledger.study_status("aborted", aborted_at=now_iso(), abort_reason=message)
            print(f"llem: study aborted (hydra.launcher.on_unhealthy=abort): {message}", file=sys.stderr, flush=True)
            raise LaunchAborted(message)
        if s.on_unhealthy == "wait":
            now = time.monotonic()
            if self._health_since is None:
                self._health_since = now
            waited = now - self._health_since
            report["waited_s"] = round(waited, 1)
            if waited < s.health_wait_max_s:
                slot.retry_at = now + min(s.health_poll_s, s.health_wait_max_s - waited)
                return False
            report["problems"].append(f"still unhealthy after waiting {fmt_s(waited)} "
                                      f"(hydra.launcher.health_wait_max_s={s.health_wait_max_s:g}); running anyway")
        return True

    def _wait_once(self, wake: Optional[tuple[float, str]]) -> None:
        now = time.monotonic()
        limits = [r.deadline - now for r in self.running.values() if r.deadline is not None]
        if wake is not None:
            limits.append(wake[0] - now)
        exited = self.waiter.wait(max(min(limits), 0.0) if limits else None)
        for proc in exited:
            run = self.running.get(proc.pid)
            if run is not None:
                self._finish(run)
        now = time.monotonic()
        for run in list(self.running.values()):
            if run.deadline is not None and now >= run.deadline:
                print(f"llem: job {run.plan.index} ran past hydra.launcher.timeout_s={self.settings.timeout_s:g} s: "
                      "stopping it", file=sys.stderr, flush=True)
                self._finish(run, timed_out=True)

    def _stop_all(self, signame: str) -> None:
        """Kill every running job's tree and mark it interrupted; a second Ctrl-C cannot cut this short."""
        if not self.running:
            return
        old = self._ignore_signals()
        try:
            for run in list(self.running.values()):
                self._finish(run, interrupted=signame)
        finally:
            self._restore_signals(old)

    # -- signals -----------------------------------------------------------------------------------
    @staticmethod
    def _ignore_signals() -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    @staticmethod
    def _restore_signals(old: dict[int, Any]) -> None:
        for s, handler in old.items():
            signal.signal(s, handler)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGHUP on the launcher behave like Ctrl-C: stop the jobs, mark, exit 130."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            raise _Terminated(signum)

        # a signal the launcher was started with ignored stays ignored (nohup: SIGHUP), as in a single run
        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)
               if signal.getsignal(s) != signal.SIG_IGN}
        try:
            yield
        finally:
            self._restore_signals(old)
