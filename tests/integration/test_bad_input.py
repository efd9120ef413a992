"""Bad input: each is a clear error (type, message naming the cause and the fix) raised
before anything is half-started: no worker process, no worker registered, no start key.

Against the session's real redis-server; a port that is not Redis is a real HTTP server
(and a raw TCP server) on loopback, stopped at the end. Items covered elsewhere: wrong
password (tests/security/test_tls.py, test_acl.py), malformed network ids and a missing
password (tests/unit/test_config_units.py), a worker configuration over the size limit and a lock as
an argument (tests/integration/test_workers.py), task values JSON cannot hold (tests/integration/test_tasks.py), a
wrong start id (tests/faults/test_defects.py).
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading

import cloudpickle
import pytest

import rushhpc
from rushhpc import RushConfigError, RushPayloadError, queue_loop, redis_config, rush_plan
from rushhpc.manager.plan import load_plan_file

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def nothing_started(rush) -> None:
    """No worker registered or launched, no start key, no worker process (no log files)."""
    assert rush.n_workers == 0 and rush.records() == {}
    assert not list(rush.connector.scan_iter(match=f"{{{rush.network_id}}}:start:*"))
    assert not list(rush.connector.scan_iter(match=f"{{{rush.network_id}}}:worker:*"))
    assert not (rush.run_dir / "workers").exists() or not list((rush.run_dir / "workers").iterdir())


# ---------------------------------------------------------------- where Redis is
class _KeepAliveHttp(threading.Thread):
    """Answers every request with an HTTP 400 and keeps the connection open (a proxy, a web app)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stopped = False

    def run(self):
        conns = []
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            conns.append(conn)
            try:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
            except OSError:
                pass
        for c in conns:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()
        self.join(5)


@pytest.fixture(params=["http.server", "keep-alive"])
def not_redis_port(request):
    if request.param == "http.server":
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        yield srv.server_address[1]
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    else:
        srv2 = _KeepAliveHttp()
        srv2.start()
        yield srv2.port
        srv2.stop()


@pytest.mark.parametrize("password", [None, "secret"])
def test_a_port_that_answers_but_is_not_redis(not_redis_port, password):
    cfg = redis_config(host="127.0.0.1", port=not_redis_port, password=password)
    with pytest.raises(RushConfigError) as e:
        rushhpc.rsh("not-redis", config=cfg)
    msg = str(e.value)
    assert f"127.0.0.1:{not_redis_port} answers, but it is not Redis" in msg and "Check the port" in msg
    assert "HTTP" in msg or "DOCTYPE" in msg  # what it answered
    assert "secret" not in msg


@pytest.mark.parametrize("password", [None, "secret"])
def test_a_typo_in_the_host_is_a_dns_error(password):
    url = "redis://no-such-host.invalid:6379" if password is None else f"redis://:{password}@no-such-host.invalid:6379"
    with pytest.raises(RushConfigError) as e:
        rushhpc.rsh("typo", config=url)
    msg = str(e.value)
    assert msg.startswith("cannot reach Redis at no-such-host.invalid:6379: the host name 'no-such-host.invalid' "
                          "does not resolve") and "Check its spelling" in msg
    assert "no password" not in msg and "secret" not in msg


def test_a_db_index_the_server_does_not_have(redis_server):
    cfg = redis_config(port=redis_server.port, password=redis_server.password, db=99)
    with pytest.raises(RushConfigError, match=rf"Redis at 127.0.0.1:{redis_server.port} has no database 99 .*"
                                              r"redis_config\(db=\.\.\.\)"):
        rushhpc.rsh("db99", config=cfg)


# ---------------------------------------------------------------- finish_tasks / fail_tasks
def test_finish_and_fail_tasks_refuse_bad_keys_and_lengths_writing_nothing(rush, worker):
    k1, k2 = worker.push_running_tasks([{"x": 1}, {"x": 2}])

    def unchanged():
        assert rush.n_running_tasks == 2 and rush.n_finished_tasks == 0 and rush.n_failed_tasks == 0
        assert not rush.connector.exists(rush.keys.task("no-such-key"))

    cases = [
        (lambda: worker.finish_tasks([k1, k1], [{"y": 1}, {"y": 2}]), f"finish_tasks: task key(s) given more than once: {k1}"),
        (lambda: worker.fail_tasks([k2, k1, k2], ["a", "b", "c"]), f"fail_tasks: task key(s) given more than once: {k2}"),
        (lambda: worker.finish_tasks([k1, "no-such-key"], [{"y": 1}, {"y": 2}]),
         f"finish_tasks: unknown task key(s) no-such-key: no such task in network {rush.network_id!r}"),
        (lambda: worker.fail_tasks(["no-such-key"], ["boom"]), "fail_tasks: unknown task key(s) no-such-key"),
        (lambda: worker.finish_tasks([k1, k2], [{"y": 1}]), "yss has 1 elements, expected 2 (one per task)"),
        # one extra or condition is recycled to every task, as in rush; any other length is refused
        (lambda: worker.finish_tasks([k1, k2], [{"y": 1}, {"y": 2}], [{"e": 1}, {"e": 2}, {"e": 3}]),
         "yss_extra has 3 elements, expected 2 (one per task) or 1"),
        (lambda: worker.fail_tasks([k1, k2], ["a", "b", "c"]), "conditions has 3 elements, expected 2 (one per task) or 1"),
    ]
    for call, message in cases:
        with pytest.raises(RushPayloadError) as e:
            call()
        assert message in str(e.value) and "nothing was written" in str(e.value), str(e.value)
        unchanged()
    # the worker is unharmed: a correct call works
    assert worker.finish_tasks([k1, k2], [{"y": 1}, {"y": 2}]) == []
    assert sorted(rush.fetch_finished_tasks()["y"]) == [1, 2]


def test_push_finished_tasks_with_mismatched_lengths_writes_nothing(rush):
    with pytest.raises(RushPayloadError, match="yss has 1 elements, expected 2 .*nothing was written"):
        rush.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}])
    assert rush.n_tasks == 0


# ---------------------------------------------------------------- start arguments
@pytest.mark.parametrize(("period", "expire", "message"), [
    (0, None, "heartbeat_period must be > 0 seconds, got 0"),
    (-1, None, "heartbeat_period must be > 0 seconds, got -1"),
    (None, 0, "heartbeat_expire must be > 0 seconds, got 0"),
    (1, -5, "heartbeat_expire must be > 0 seconds, got -5"),
    (10, 5, "heartbeat_expire (5 s) must be larger than heartbeat_period (10 s)"),
    (5, 5, "heartbeat_expire (5 s) must be larger than heartbeat_period (5 s)"),
])
def test_bad_heartbeat_settings_start_nothing(rush, period, expire, message):
    hb = {k: v for k, v in (("heartbeat_period", period), ("heartbeat_expire", expire)) if v is not None}
    with pytest.raises(RushConfigError) as e:
        rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **hb)
    assert message in str(e.value)
    nothing_started(rush)
    with pytest.raises(RushConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rush_plan(**hb)


def test_a_worker_process_with_a_bad_heartbeat_exits_cleanly(rush):
    cmd = rush.worker_script(queue_loop, fun=abs)
    out = subprocess.run([*cmd.split(), "--heartbeat-period", "-1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "heartbeat_period must be > 0 seconds, got -1" in out.stderr
    assert "Traceback" not in out.stderr and rush.n_workers == 0


def _gen():
    yield 1


def _any_args_loop(rush, **kw):  # takes any argument: queue_loop's would be refused first (issue 20 defect 5b)
    pass


@pytest.mark.parametrize("what", ["loop closing over a lock", "generator argument", "socket argument",
                                  "not a function"])
def test_an_unpicklable_loop_or_argument_starts_nothing(rush, what):
    lock = threading.Lock()
    args: dict = {}
    loop = queue_loop
    if what == "loop closing over a lock":
        loop = lambda rush, **kw: lock.acquire()  # noqa: E731
    elif what == "generator argument":
        loop, args = _any_args_loop, {"fun": abs, "points": _gen()}
    elif what == "socket argument":
        loop, args = _any_args_loop, {"fun": abs, "conn": socket.socket()}
    else:
        loop = "queue_loop"  # type: ignore[assignment]
    try:
        with pytest.raises(RushPayloadError) as e:
            rush.start_local_workers(loop, n_workers=2, **args)
    finally:
        if "conn" in args:
            args["conn"].close()
    msg = str(e.value)
    if what == "not a function":
        assert "worker_loop must be a function loop(rush, **args), got str" in msg
    else:
        assert msg.startswith("cannot send the worker loop and its arguments to workers")
        assert "create them inside the worker loop" in msg
    nothing_started(rush)


# ---------------------------------------------------------------- batch templates
@pytest.fixture
def pbs_env(monkeypatch, tmp_path):
    from support.batch_backends import PbsBackend, require

    require("pbs", PbsBackend.available(), "tests/pbs_emulator is needed")
    monkeypatch.setenv("PATH", f"{PbsBackend.bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_EMU_HOME", str(tmp_path / "pbs-emu"))
    yield PbsBackend
    out = subprocess.run(["qstat"], capture_output=True, text=True)
    assert out.stdout.strip() == "", "a job was submitted"


@pytest.mark.parametrize(("body", "message", "line"), [
    ("#PBS -N {{ r.job_name }}\necho {{ no_such_variable }}\n{{ command }}\n", "'no_such_variable' is undefined", 3),
    ("#PBS -N {{ r.job_name }}\n\n#PBS -l {{ r.no_such_resource }}\n{{ command }}\n",
     "has no attribute 'no_such_resource'", 4),
    ("#PBS -N {{ r.job_name }}\n{% if n %}\n{{ command }}\n", "Unexpected end of template", None),
])
def test_a_template_with_an_unknown_variable_submits_nothing(rush, tmp_path, pbs_env, body, message, line):
    template = tmp_path / "my-pbs.sh.j2"
    template.write_text("#!/bin/sh\n" + body)
    rush_plan(worker_type="pbs", launcher_options={"template": str(template)})
    r = rushhpc.rsh(rush.network_id, config=rush.config)
    for start in (lambda: r.render_script(queue_loop, n_workers=2, fun=abs),
                  lambda: r.start_workers(queue_loop, n_workers=2, fun=abs)):
        with pytest.raises(RushConfigError) as e:
            start()
        msg = str(e.value)
        assert msg.startswith(f"batch template {template}") and message in msg, msg
        if line is not None:
            assert f"line {line}:" in msg and "nothing was submitted" in msg and "r.NAME" in msg
        nothing_started(r)
    r.close()


# ---------------------------------------------------------------- plan files
@pytest.mark.parametrize(("text", "where"), [
    ("n_workers: 2\nlauncher_options: [1\n", "line 3, column 1"),
    ("n_workers: 2\nworker_type: local\n  heartbeat_period: 3\n", "line 3, column 19"),
])
def test_a_broken_plan_file_names_the_file_and_line(tmp_path, monkeypatch, text, where):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    with pytest.raises(RushConfigError) as e:
        load_plan_file(plan)
    assert str(e.value).startswith(f"plan file {plan}, {where} is not valid YAML: ")
    assert "<unicode string>" not in str(e.value)
    monkeypatch.setenv("RUSHHPC_CONFIG", str(plan))
    with pytest.raises(RushConfigError, match="line 3"):
        rushhpc.rsh("plan-broken")


