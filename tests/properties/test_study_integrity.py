"""A study folder cannot lie or lose data: one running study per folder (flock), torn files redone
never fatal, disk full / read-only folders stop cleanly and resume, kill -9 in fork mode records
`interrupted`, files follow the umask. Unit tests first (fast), then real `python -m llem -m` studies
(slow): a full and a read-only tmpfs, a stress test of concurrent launches/resumes/kills, and a
property test that corrupts random files of a finished study and resumes it (kill -9 of a real
study: tests/e2e/test_launcher.py). LLEM_STRESS_ROUNDS / LLEM_PROPERTY_EXAMPLES run more cases."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, read_result

from llem import io
from llem.result import REQUESTS_FILE, RESULT_FILE, TIMESERIES_FILE
from llem.study import jobfiles, lock, manifest, resume

# -- umask -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        io.atomic_write_json(tmp_path / RESULT_FILE, {"a": 1})
        io.atomic_write_text(tmp_path / REQUESTS_FILE, "{}\n")
        manifest.write(tmp_path, manifest.new("d" * 16, []))
    finally:
        os.umask(old)
    for name in (RESULT_FILE, REQUESTS_FILE, manifest.MANIFEST_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


# -- the folder lock ---------------------------------------------------------------------------------
HOLDER = """
import sys, time
from llem.study import lock
lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""

JOB = """
import os, sys, time
os.environ["LLEM_STUDY_JOBS_LOCK"] = sys.argv[1]
from llem.study import lock
lock.hold_as_job()
print("job", flush=True)
time.sleep(120)
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # "held" / "job": the lock is taken
    return proc


def test_a_second_process_is_refused_naming_pid_and_command_and_kill_9_leaves_no_stale_lock(tmp_path: Path) -> None:
    proc = _start(HOLDER, str(tmp_path))
    try:
        with pytest.raises(lock.FolderInUse) as e:
            lock.acquire(tmp_path)
        assert f"pid {proc.pid}" in str(e.value) and "time.sleep(120)" not in str(e.value)
        assert "-c" in str(e.value) and str(tmp_path) in str(e.value)  # the holder's command line
        assert e.value.exit_code == 2
        proc.kill()  # kill -9: the kernel drops the lock
        proc.wait()
        got = lock.acquire(tmp_path)
        lock.release(got)
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_is_reentrant_and_released_at_the_end(tmp_path: Path) -> None:
    with lock.hold(tmp_path) as outer:
        with lock.hold(tmp_path) as inner:
            assert inner is outer and lock.held(tmp_path)
        assert lock.held(tmp_path)  # the inner release left the outer hold
    assert not lock.held(tmp_path)
    assert (tmp_path / lock.LOCK_FILE).stat().st_size == 0  # reserve and header dropped
    proc = _start(HOLDER, str(tmp_path))  # another process gets it now
    proc.kill()
    proc.wait()


def test_forked_children_neither_hold_nor_release_the_lock(tmp_path: Path) -> None:
    got = lock.acquire(tmp_path)
    try:
        pid = os.fork()
        if pid == 0:  # the child: not the owner; its release must not unlock the parent's lock
            code = 0 if not lock.held(tmp_path) else 1
            lock.release(got)
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        other = subprocess.run([sys.executable, "-c", "import sys; from llem.study import lock; lock.acquire(sys.argv[1])",
                                str(tmp_path)], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                               text=True, timeout=60)
        assert other.returncode != 0 and "FolderInUse" in other.stderr  # still ours
        assert f"pid {os.getpid()}" in other.stderr
    finally:
        lock.release(got)


def test_a_new_study_waits_for_jobs_of_a_killed_study(tmp_path: Path) -> None:
    job = _start(JOB, str(tmp_path / lock.JOBS_LOCK_FILE))
    try:
        with pytest.raises(lock.FolderInUse, match=f"still running there: pid {job.pid}"):
            lock.acquire(tmp_path, orphan_wait_s=0.2)
        assert not lock.held(tmp_path)  # refused: the folder lock was given back
        job.kill()
        job.wait()
        lock.release(lock.acquire(tmp_path, orphan_wait_s=0.2))
    finally:
        job.kill()
        job.wait()


def test_the_reserve_is_given_back_when_the_disk_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = lock.acquire(tmp_path, reserve_bytes=1 << 20)
    try:
        size = (tmp_path / lock.LOCK_FILE).stat().st_size
        assert size > 1 << 20
        real, calls = io._write_once, []

        def full_once(path: Path, data: bytes) -> None:
            calls.append(path)
            if len(calls) == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data)

        monkeypatch.setattr(io, "_write_once", full_once)
        io.atomic_write_json(tmp_path / manifest.MANIFEST_FILE, {"jobs": []})
        assert len(calls) == 2 and (tmp_path / lock.LOCK_FILE).stat().st_size < 1024  # freed, then written
    finally:
        lock.release(got)


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "disk_full"), (errno.EDQUOT, "disk_full"),
                                          (errno.EROFS, "io_error"), (errno.EIO, "io_error")])
def test_storage_errors_name_path_free_space_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     code: int, reason: str) -> None:
    def fail(src: Any, dst: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fail)
    (tmp_path / RESULT_FILE).write_text('{"status": "completed"}')
    with pytest.raises(io.StorageError) as e:
        io.atomic_write_json(tmp_path / RESULT_FILE, {"status": "failed"})
    assert e.value.reason == reason and e.value.errno == code and e.value.exit_code == 4
    assert str(tmp_path / RESULT_FILE) in str(e.value) and " free of " in str(e.value)
    assert ("free some space" if reason == "disk_full" else "writable") in str(e.value)
    assert json.loads((tmp_path / RESULT_FILE).read_text()) == {"status": "completed"}  # old file intact
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(io.StorageExit) as stop:  # the manifest's writer stops the study: exit 4
        manifest.write(tmp_path, manifest.new("d" * 16, []))
    assert stop.value.code == 4 and stop.value.reason == reason


def test_which_job_failures_are_storage_failures(tmp_path: Path) -> None:
    from llem.launch.outcome import storage_problem

    llem_err = {"type": "StorageError", "reason": "exception", "message": "cannot write x: No space left on device"}
    assert storage_problem(tmp_path, llem_err) == "disk_full"
    assert storage_problem(tmp_path, {"type": "JobFailed", "reason": "exception"},
                           ("JobFailed: StorageError: cannot write x: Read-only file system",)) == "io_error"
    # an ENOSPC elsewhere (a full /dev/shm) while the job folder has room: an ordinary job failure
    shm = {"type": "OSError", "reason": "exception", "message": "[Errno 28] No space left on device: '/dev/shm/x'"}
    assert storage_problem(tmp_path, shm) is None
    assert storage_problem(tmp_path, {"type": "Crash", "reason": "crash"}) is None
    assert storage_problem(tmp_path, {"type": "RuntimeError", "reason": "exception", "message": "boom"}) is None


# -- kill -9 in fork mode -------------------------------------------------------------------------------
def _sleep_and_record(marker: str) -> None:
    try:
        time.sleep(60)
    except KeyboardInterrupt:  # what llem's job does on SIGTERM: record `interrupted`
        Path(marker).write_text("interrupted")
        raise


def test_a_zygote_left_by_its_launcher_stops_its_job_with_sigterm_never_sigkill(tmp_path: Path) -> None:
    """The launcher died (its pipes closed): the zygote must let the job record `interrupted`."""
    import cloudpickle

    from llem.launch.process import child_env
    from llem.launch.zygote import ForkServer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    server = ForkServer(preload=("cloudpickle",)).start()
    try:
        payload = tmp_path / "job.pkl"
        marker = tmp_path / "marker"
        payload.write_bytes(cloudpickle.dumps((_sleep_and_record, (str(marker),), {})))
        env = child_env(os.environ, {"LLEM_LAUNCH_PARENT_PID": str(os.getpid())})
        job = server.run(payload, tmp_path / "ret", tmp_path / "fault", env)
        time.sleep(0.3)  # the job is in its sleep
    finally:
        server.close()  # EOF on the zygote's request pipe, as when the launcher is killed
    wait_gone(job.pid, 20)
    assert marker.read_text() == "interrupted"


# -- torn files ----------------------------------------------------------------------------------------
CORRUPTIONS = {
    "truncated": lambda b: b[: max(1, len(b) // 2)],
    "empty": lambda b: b"",
    "null": lambda b: b"null\n",
    "list": lambda b: b"[1, 2]\n",
    "number": lambda b: b"42",
    "not_utf8": lambda b: b"\xff\xfe" + b[2:],
}


def _job_folder(root: Path, index: int = 3, status: str = "completed", requests: int = 2) -> Path:
    job = root / str(index)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        f"- n=2\n- study_job.cycle=1\n- study_job.config_hash='00c0ffee00c0ffee'\n"
        f"- study_job.study_design_hash='d351d351d351d351'\n- study_job.index={index}\n")
    result = {"schema_version": "1.0.0", "status": status, "workload": {"prompts": requests},
              "identity": {"config_hash": "00c0ffee00c0ffee", "cycle": 1, "study_design_hash": "d351d351d351d351",
                           "files": [REQUESTS_FILE]}}
    io.atomic_write_json(job / RESULT_FILE, result)
    io.atomic_write_text(job / REQUESTS_FILE, "".join(json.dumps({"ttft_s": 0.1 * i}) + "\n" for i in range(requests)))
    return job


def test_a_whole_job_folder_is_completed(tmp_path: Path) -> None:
    seen = manifest.job_status(_job_folder(tmp_path))
    assert seen is not None and seen["status"] == "completed" and "torn" not in seen
    assert (seen["config_hash"], seen["cycle"]) == ("00c0ffee00c0ffee", 1)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_torn_result_is_a_job_not_completed_whose_identity_survives(tmp_path: Path, kind: str) -> None:
    job = _job_folder(tmp_path)
    path = job / RESULT_FILE
    path.write_bytes(CORRUPTIONS[kind](path.read_bytes()))
    seen = manifest.job_status(job)
    assert seen is not None and seen["status"] == "failed" and seen["error"]["type"] == "CorruptResult"
    assert RESULT_FILE in seen["torn"]
    # which job it was comes from .hydra/overrides.yaml, so resume reruns it in this folder
    assert (seen["config_hash"], seen["cycle"], seen["study_design_hash"]) == (
        "00c0ffee00c0ffee", 1, "d351d351d351d351")
    states = manifest.scan_job_dirs(tmp_path)
    assert resume.completed_keys(states, "d351d351d351d351") == set()
    assert resume.previous_indices(None, None, states) == {("00c0ffee00c0ffee", 1): 3}


@pytest.mark.parametrize("cut", ["mid_line", "line_boundary", "not_utf8", "empty", "not_object"])
def test_a_torn_requests_file_makes_the_job_not_completed(tmp_path: Path, cut: str) -> None:
    job = _job_folder(tmp_path, requests=3)
    path = job / REQUESTS_FILE
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    path.write_bytes({"mid_line": raw[:-3], "line_boundary": b"".join(lines[:2]), "not_utf8": b"\xff" + raw,
                      "empty": b"", "not_object": b"[1]\n" * 3}[cut])
    seen = manifest.job_status(job)
    assert seen is not None and seen["status"] == "failed" and REQUESTS_FILE in seen["torn"]
    if cut == "line_boundary":
        assert "2 request rows, the result says 3" in seen["torn"][REQUESTS_FILE]
    import llem.results

    with pytest.raises(io.TornFile):
        if cut == "line_boundary":
            raise io.TornFile(path, "a cut between lines is only seen against the result's request count")
        llem.results.load_requests(job)


def test_a_torn_timeseries_is_detected_and_never_crashes_the_loader(tmp_path: Path) -> None:
    import pandas as pd

    import llem.results

    job = _job_folder(tmp_path)
    pd.DataFrame({"t_s": [0.0, 0.1], "power_w": [10.0, 11.0]}).to_parquet(job / TIMESERIES_FILE, index=False)
    assert jobfiles.check(job).torn == {}
    assert len(llem.results.load_timeseries(job)) == 2
    raw = (job / TIMESERIES_FILE).read_bytes()
    (job / TIMESERIES_FILE).write_bytes(raw[: len(raw) - 5])
    assert TIMESERIES_FILE in jobfiles.check(job).torn
    with pytest.raises(io.TornFile, match="truncated"):
        llem.results.load_timeseries(job)


def test_torn_files_are_set_aside_not_deleted(tmp_path: Path) -> None:
    job = _job_folder(tmp_path)
    (job / REQUESTS_FILE).write_bytes(b'{"ttft_s": 0.1}\n{"tt')
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    moved = jobfiles.set_aside_torn(job, stamp="T1")
    assert sorted(p.name for p in moved) == ["requests.jsonl.torn-T1", "result.json.torn-T1"]
    assert (job / "requests.jsonl.torn-T1").read_bytes() == before[REQUESTS_FILE]
    assert (job / "result.json.torn-T1").read_bytes() == before[RESULT_FILE]
    assert not (job / RESULT_FILE).exists() and jobfiles.set_aside_torn(job) == []  # nothing torn left


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_torn_manifest_is_rebuilt_and_set_aside_when_replaced(tmp_path: Path, kind: str) -> None:
    _job_folder(tmp_path, index=0)
    good = manifest.new("d351d351d351d351", [{"index": 0, "config_hash": "00c0ffee00c0ffee", "cycle": 1,
                                              "status": "running"}])
    manifest.write(tmp_path, good)
    path = tmp_path / manifest.MANIFEST_FILE
    torn = CORRUPTIONS[kind](path.read_bytes())
    path.write_bytes(torn)
    assert manifest.load(tmp_path) is None and manifest.read(tmp_path)[1]
    rebuilt = manifest.rebuild(tmp_path)  # from the job folders (no plan.json here)
    assert [(j["index"], j["status"]) for j in rebuilt["jobs"]] == [(0, "completed")]
    assert rebuilt["study_design_hash"] == "d351d351d351d351"
    manifest.write(tmp_path, rebuilt)
    assert manifest.load(tmp_path) is not None
    assert [p.read_bytes() for p in tmp_path.glob("manifest.json.torn-*")] == [torn]


@pytest.mark.parametrize("plan", [None, [], 42, {"jobs": "x"}, {"jobs": [None, 7, {"index": "a"}]}])
def test_resume_reads_a_damaged_plan_as_no_plan(tmp_path: Path, plan: Any) -> None:
    states = [{"job_dir": str(tmp_path / "4"), "config_hash": "h", "cycle": 0, "status": "failed"}]
    assert resume.previous_indices(plan, {"jobs": 5}, states) == {("h", 0): 4}
    assert resume.saved_design(plan, [], [{"study_design_hash": "d"}]) == "d"


def test_results_without_a_manifest_are_a_study(tmp_path: Path) -> None:
    resume.check_fresh_folder(False, False, str(tmp_path))  # empty: fine
    (tmp_path / "plan.txt").write_text("a dry run's plan\n")
    resume.check_fresh_folder(False, False, str(tmp_path))  # a dry-run plan does not count
    _job_folder(tmp_path, index=0)
    with pytest.raises(resume.StudyError, match=r"results without a manifest: 0/result.json"):
        resume.check_fresh_folder(False, False, str(tmp_path))
    resume.check_fresh_folder(False, True, str(tmp_path))  # study.resume=true: on purpose


# -- real studies (python -m llem -m ..., the default fork mode) ---------------------------------------
FAST = ["n=2", "warmup.n_batches=0", "quiet=true", "energy=none", "hydra.launcher.progress=false"]
TWO = "pytorch.max_output_tokens=2,3"  # two configs (max_output_tokens is part of config_hash)


def llem_env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "LLEM_CACHE": str(cache), "HYDRA_FULL_ERROR": "1"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def start_llem(args: list[str], cwd: Path, cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "llem", *args], cwd=cwd, env=llem_env(cache),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_llem(args: list[str], cwd: Path, cache: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llem", *args], cwd=cwd, env=llem_env(cache), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def wait_running(sweep: Path, index: int, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    """The pid of job `index` once it runs (its result.json says running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            res = read_result(sweep / str(index))
            if res["status"] == "running":
                return int(res["identity"]["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"llem exited {proc.returncode} first:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"job {index} never ran")


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} outlived its study")


def completed_once(sweep: Path) -> dict[tuple[str, int], str]:
    """Assert every planned (config_hash, cycle) has exactly one completed result, in its own folder,
    of this study's design; returns key → folder name."""
    plan = json.loads((sweep / "plan.json").read_text())
    design = plan["study_design_hash"]
    planned = {(j["config_hash"], j["cycle"]): j["index"] for j in plan["jobs"] if j["status"] != "skipped"}
    found: dict[tuple[str, int], list[str]] = {}
    for job_dir in sweep.iterdir():
        if (job_dir / RESULT_FILE).is_file():
            res = read_result(job_dir)
            ident = res["identity"]
            assert ident["study_design_hash"] == design, f"{job_dir} holds a result of another design"
            assert str(ident["job_index"]) == job_dir.name, f"{job_dir} holds job {ident['job_index']}"
            if res["status"] == "completed":
                found.setdefault((ident["config_hash"], ident["cycle"]), []).append(job_dir.name)
    assert {k: len(v) for k, v in found.items()} == {k: 1 for k in planned}, found
    m = json.loads((sweep / "manifest.json").read_text())
    assert m["status"] == "completed" and {j["status"] for j in m["jobs"]} <= {"completed", "skipped"}
    return {k: v[0] for k, v in found.items()}


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    _mount_tmpfs(mnt, "24m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_disk_full_and_read_only_folders_stop_cleanly_and_resume(small_disk: Path, tmp_path: Path,
                                                                 llem_cache: Path, tiny_model: Path) -> None:
    sweep = small_disk / "sweep"
    args = ["-m", TWO, "debug.fault=sleep", "debug.sleep_s=2", *FAST, f"hydra.sweep.dir={sweep}"]
    # 1. the disk fills up while job 0 runs
    proc = start_llem(args, tmp_path, llem_cache)
    try:
        wait_running(sweep, 0, proc)
        filler = _fill(small_disk)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 4, err  # not 1 ("a job failed"): the storage
    stop = [line for line in err.splitlines() if line.startswith("llem: study stopped")]
    assert len(stop) == 1 and "disk_full" in stop[0] and str(sweep / "0") in stop[0] and " free of " in stop[0]
    assert "study.resume=true" in stop[0]
    m = json.loads((sweep / "manifest.json").read_text())
    assert m["status"] == "failed" and m["stopped_by"]["reason"] == "disk_full" and m["stopped_by"]["job"] == 0
    assert [(j["status"], (j.get("error") or {}).get("reason")) for j in m["jobs"]] == [
        ("failed", "disk_full"), ("planned", None)]
    res = read_result(sweep / "0")
    assert res["status"] == "failed" and res["error"]["reason"] == "disk_full" and res["error"]["type"] == "DiskFull"
    assert (sweep / "multirun.yaml").stat().st_size > 0  # written atomically before the disk filled

    # 2. space again, but job 0's folder turns read-only while it runs (a read-only bind mount on it)
    filler.unlink()
    job0 = sweep / "0"
    proc = start_llem([*args, "study.resume=true"], tmp_path, llem_cache)
    try:
        wait_running(sweep, 0, proc)
        for cmd in (["mount", "--bind", str(job0), str(job0)], ["mount", "-o", "remount,bind,ro", str(job0)]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        subprocess.run(["umount", str(job0)], capture_output=True, timeout=10)
    assert proc.returncode == 4, err
    stop = [line for line in err.splitlines() if line.startswith("llem: study stopped")]
    assert len(stop) == 1 and "io_error" in stop[0] and "Read-only file system" in stop[0], err
    m = json.loads((sweep / "manifest.json").read_text())  # the sweep folder itself is still writable
    assert m["status"] == "failed" and m["stopped_by"]["reason"] == "io_error"
    assert (m["jobs"][0]["status"], m["jobs"][0]["error"]["reason"]) == ("failed", "io_error")

    # 3. writable again: resume completes every job exactly once
    p = run_llem([*args, "study.resume=true"], tmp_path, llem_cache)
    assert p.returncode == 0, p.stderr
    completed_once(sweep)


@pytest.mark.slow
def test_stress_two_studies_and_a_resume_on_one_folder_with_kills(tmp_path: Path, llem_cache: Path,
                                                                 tiny_model: Path) -> None:
    """Random interleavings of a launch, a second launch and a resume of the same study on one folder,
    with kill -9 / SIGTERM at random moments; then resume until done. Every (config_hash, cycle)
    ends completed exactly once, in its own folder, of this design; the losers are refused (exit 2)."""
    rng = random.Random(int(os.environ.get("LLEM_STRESS_SEED", "14")))
    rounds = int(os.environ.get("LLEM_STRESS_ROUNDS", "3"))  # more for a longer soak run
    tally = {"refused": 0, "killed": 0, "completed": 0, "resumed": 0, "launches": 0}
    for r in range(rounds):
        sweep = tmp_path / f"sweep{r}"
        args = ["-m", TWO, "study.n_cycles=2", "debug.fault=sleep", "debug.sleep_s=0.3", *FAST,
                f"hydra.sweep.dir={sweep}"]
        starts = sorted([(0.0, args), (rng.uniform(0, 2.5), args), (rng.uniform(0, 5), [*args, "study.resume=true"])],
                        key=lambda x: x[0])
        kill_at, kill_sig = rng.uniform(2, 9), rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
        procs: list[subprocess.Popen[str]] = []
        t0 = time.monotonic()
        try:
            pending = list(starts)
            killed = False
            while pending or any(p.poll() is None for p in procs):
                now = time.monotonic() - t0
                while pending and pending[0][0] <= now:
                    procs.append(start_llem(pending.pop(0)[1], tmp_path, llem_cache))
                if not killed and now >= kill_at:
                    killed = True
                    alive = [p for p in procs if p.poll() is None]
                    if alive:
                        rng.choice(alive).send_signal(kill_sig)
                        tally["killed"] += 1
                if now > 180:
                    raise AssertionError("round took too long")
                time.sleep(0.05)
            outs = [p.communicate() for p in procs]
        finally:
            for p in procs:
                p.kill()
                p.communicate()
        print(f"round {r}: starts at {[round(t, 1) for t, _ in starts]} s, {signal.Signals(kill_sig).name} at "
              f"{kill_at:.1f} s, exit codes {[p.returncode for p in procs]}")
        tally["launches"] += len(procs)
        for p, (_, err) in zip(procs, outs):
            assert p.returncode in (0, 2, 130, -signal.SIGKILL, -signal.SIGTERM), (p.returncode, err[-2000:])
            if p.returncode == 2:
                tally["refused"] += 1
                assert ("in use by another running study" in err or "already holds a study" in err), err[-2000:]
        for _ in range(3):  # whatever the interleaving left, resume finishes it
            if (sweep / "manifest.json").is_file() and json.loads((sweep / "manifest.json").read_text()).get(
                    "status") == "completed":
                break
            p = run_llem([*args, "study.resume=true"], tmp_path, llem_cache)
            tally["resumed"] += 1
            assert p.returncode == 0, p.stderr[-3000:]
        tally["completed"] += len(completed_once(sweep))
    print(f"stress: {rounds} rounds, {tally}")
    assert tally["refused"] >= 1  # at least one launch met a running study or a finished one


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, llem_cache: Path, tiny_model: Path) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("finished")
    sweep = root / "sweep"
    args = ["-m", "pytorch.max_output_tokens=2,3,4", *FAST]
    p = run_llem([*args, f"hydra.sweep.dir={sweep}"], root, llem_cache)
    assert p.returncode == 0, p.stderr
    return sweep, args


def _corrupt(path: Path, kind: str, rng: random.Random) -> None:
    raw = path.read_bytes()
    if kind == "random_cut":
        path.write_bytes(raw[: rng.randrange(0, max(1, len(raw)))])
    elif kind == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    else:
        path.write_bytes(CORRUPTIONS[kind](raw))


@pytest.mark.slow
def test_property_corrupt_random_files_of_a_finished_study_then_resume_completes_it(
        finished_study: tuple[Path, list[str]], tmp_path: Path, llem_cache: Path) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from llem.report import build_report

    sweep0, args = finished_study
    names = ["manifest.json", "plan.json"] + [f"{i}/{f}" for i in range(3) for f in (RESULT_FILE, REQUESTS_FILE)]
    kinds = [*sorted(CORRUPTIONS), "random_cut", "garbage"]
    cases = iter(range(100))

    # each example is a real resume (a few seconds): a few examples, no shrinking (it would rerun them)
    @settings(max_examples=int(os.environ.get("LLEM_PROPERTY_EXAMPLES", "3")), deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(kinds)), min_size=1, max_size=4,
                    unique_by=lambda x: x[0]), st.integers(0, 2**16))
    def case(damage: list[tuple[str, str]], seed: int) -> None:
        sweep = tmp_path / f"case{next(cases)}"
        shutil.copytree(sweep0, sweep)
        rng = random.Random(seed)
        print(f"property case {sweep.name}: {damage}")
        for name, kind in damage:
            _corrupt(sweep / name, kind, rng)
        rep = build_report(sweep, out=tmp_path / f"{sweep.name}-report")  # never crashes on torn files
        assert rep.page.is_file()
        p = run_llem([*args, f"hydra.sweep.dir={sweep}", "study.resume=true"], tmp_path, llem_cache)
        assert p.returncode == 0, (damage, p.stderr[-3000:])
        done = completed_once(sweep)
        assert len(done) == 3
        for name, _ in damage:  # nothing destroyed: each damaged job file was kept aside
            if "/" in name:
                job, _, fname = name.partition("/")
                assert list((sweep / job).glob(f"{fname}.torn-*")) or jobfiles.check(sweep / job).torn == {}
        build_report(sweep, out=tmp_path / f"{sweep.name}-report2")

    case()


@pytest.mark.slow
def test_a_full_disk_before_llem_writes_anything_is_one_line_and_exit_4(small_disk: Path, llem_cache: Path) -> None:
    """Hydra's own first writes (`.hydra/` of a single run) and the study lock of a multirun meet the full
    disk before any llem result exists: still one line naming the folder, exit code 4, no traceback."""
    from conftest import run_llem

    _fill(small_disk)
    single = run_llem(["hydra.run.dir=" + str(small_disk / "run")], small_disk.parent, llem_cache, timeout=120)
    multi = run_llem(["-m", "n=1,2", "hydra.sweep.dir=" + str(small_disk / "sweep")], small_disk.parent,
                     llem_cache, timeout=120)
    for proc, where in ((single, small_disk / "run" / ".hydra"), (multi, small_disk / "sweep" / ".llem.lock")):
        lines = [line for line in proc.stderr.splitlines() if line.startswith("llem:")]
        assert proc.returncode == io.STORAGE_EXIT_CODE, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
        assert f"cannot write {where}: No space left on device" in lines[0] and "free of" in lines[0]
