"""rushhpc on a real Redis Cluster (tests/support/redis_cluster.py: 3 primaries on loopback, with a password).

Several networks run end to end at once, each in its own slot on its own primary: local workers with
queue tasks and worker-created (rush-style) tasks, results, worker_info, lost workers after SIGKILL and
SIGSTOP, the CLI, and reset of one network leaving the others whole. Every process here (the workers,
their heartbeats) runs the scripts with ``RUSHHPC_STRICT_SCRIPTS=1``: Redis 7 then refuses any key a
script touches outside the slot of its declared KEYS. A static check reads every Lua file for the rule
the scripts keep: fixed keys only from KEYS, per-item keys only from KEYS[1]'s hash tag.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from importlib import resources

import cloudpickle
import pytest
import redis
from redis.crc import key_slot
from support import wait_until

import rushhpc
from rushhpc import RushConfigError, queue_loop
from rushhpc.network.view import list_networks
from rushhpc.store.connection import node_client, redis_config
from rushhpc.store.keys import Keys
from rushhpc.store.protocol import _INCLUDES, STRICT_ENV, source

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.5, "heartbeat_expire": 2}
PER_ITEM = ("task:", "worker:", "heartbeat:", "pending:", "worker_tasks:", "released:")


# ------------------------------------------------------------------ static: the scripts' key rule
def _lua(name: str) -> str:
    return resources.files("rushhpc.store.lua").joinpath(f"{name}.lua").read_text()


def test_every_script_builds_keys_only_from_its_declared_keys():
    """Fixed keys come in KEYS; a key built inside a script is ``P .. '<per-item family>:'`` with P
    the hash tag of KEYS[1]; nothing else makes a key name."""
    names = sorted(set(_INCLUDES) | {inc for incs in _INCLUDES.values() for inc in incs})
    assert {f.name[:-4] for f in resources.files("rushhpc.store.lua").iterdir() if f.name.endswith(".lua")} == set(names)
    base = _lua("base")
    assert "local P = string.match(KEYS[1], '^{[^}]+}:')" in base
    for name in names:
        # without comments, and without the lines making an error message (the prefix in a text)
        lines = [line.split("--", 1)[0] for line in _lua(name).splitlines()]
        code = "\n".join(line for line in lines if "error_reply" not in line)
        assert "local P =" not in code or name == "base", f"{name}.lua defines its own prefix"
        assert not re.search(r"ARGV\[\d+\]\s*\.\.", code), f"{name}.lua builds a string from ARGV (a key?)"
        literals = [a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", code)]
        tags = [t for t in literals if ("}:" in t or t == "{") and t != "^{[^}]+}:"]
        assert tags == [], f"{name}.lua writes a hash tag by hand"
        for m in re.finditer(r"\bP\s*\.\.\s*(?:'([^']*)'|\"([^\"]*)\")?", code):
            family = m.group(1) or m.group(2)
            assert family in PER_ITEM, f"{name}.lua builds {family!r} from the prefix: declare it in KEYS"
        assert not re.search(r"\bP\s*[,)]", code), f"{name}.lua passes the bare prefix on"


def test_every_script_has_its_helpers_and_keys1_is_a_network_key():
    for name in _INCLUDES:
        src = source(name)
        if "base" in _INCLUDES[name]:
            assert src.index("local P = string.match(KEYS[1]") < src.index(_lua(name))


# ------------------------------------------------------------------ the cluster
def _spread_networks(cluster, n_per_node: int = 1) -> list[str]:
    """Network ids whose slots land on different primaries (n_per_node on each)."""
    by_node: dict[int, list[str]] = {p: [] for p in cluster.ports}
    stem = uuid.uuid4().hex[:6]
    i = 0
    while any(len(v) < n_per_node for v in by_node.values()):
        nid = f"cl-{stem}-{i}"
        i += 1
        port = cluster.slot_owner(key_slot(Keys(nid).meta.encode()))
        if len(by_node[port]) < n_per_node:
            by_node[port].append(nid)
    return [nid for v in by_node.values() for nid in v]


@pytest.fixture
def strict_scripts(monkeypatch):
    """Workers and heartbeats (and this process) run every script with a #!lua shebang (Redis 7)."""
    from support import redis_cluster as rc

    server, _ = rc.binaries()
    if int(rc.version(server).split(".")[0]) < 7:
        if os.environ.get("RUSHHPC_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"the strict-script check needs Redis 7, {server} is {rc.version(server)}")
        pytest.skip(f"the strict-script check needs Redis 7, {server} is {rc.version(server)}")
    monkeypatch.setenv(STRICT_ENV, "1")


@pytest.fixture
def networks(redis_cluster, cluster_config, strict_scripts):
    """Three managers, one network on each primary; reset and closed at the end."""
    rushes = [rushhpc.Rush(nid, config=cluster_config) for nid in _spread_networks(redis_cluster)]
    yield rushes
    for r in rushes:
        r.reset()
        r.close()
    left = [k for r in rushes for k in r.connector.scan_iter(match=r.keys.pattern)]
    assert left == [], f"reset left keys behind: {left[:5]}"


def random_search_loop(rush, n_tasks: int = 20):
    import random

    while not rush.terminated and rush.n_finished_tasks < n_tasks:
        xs = {"x1": random.uniform(-5, 10), "x2": random.uniform(0, 15)}
        keys = rush.push_running_tasks([xs])
        rush.finish_tasks(keys, [{"y": xs["x1"] + xs["x2"]}])


def sleepy_loop(rush, seconds: float = 60):
    keys = rush.push_running_tasks([{"x": 1}])
    deadline = time.monotonic() + seconds
    while not rush.terminated and time.monotonic() < deadline:
        time.sleep(0.05)
    if rush.terminated:
        rush.finish_tasks(keys, [{"y": 1}])


def test_strict_scripts_refuse_a_key_outside_the_declared_slot(redis_cluster, cluster_config, strict_scripts):
    from rushhpc.store.protocol import Protocol

    assert source("counts").startswith("#!lua\n") and source("heartbeat").startswith("#!lua\n")
    client = cluster_config.connect()
    try:
        home = redis_cluster.slot_owner(key_slot(b"{a}:meta"))
        other = next(f"t{i}" for i in range(1000)
                     if redis_cluster.slot_owner(key_slot(f"{{t{i}}}:meta".encode())) == home)
        bad = client.register_script(f"#!lua\nreturn redis.call('EXISTS', '{{{other}}}:meta')")
        with pytest.raises(redis.ResponseError, match="do not hash to the same slot"):
            bad(keys=["{a}:meta"])
        # without the shebang Redis lets a script touch another slot of the same node: hence the strict mode
        assert client.eval(f"return redis.call('EXISTS', '{{{other}}}:meta')", 1, "{a}:meta") == 0
        p = Protocol(client, Keys("a"))
        assert p.counts() == [0, 0, 0, 0, 0] and p.worker_info(["state"]) == []
        assert p.detect_lost()[4] is False
        with pytest.raises(redis.ResponseError, match="is not a key of network"):
            p.script("counts")(keys=["{a}:queued"], args=["{b}:"])
    finally:
        client.close()


def test_cluster_fixture(redis_cluster):
    assert len(redis_cluster.ports) == 3 and redis_cluster.password
    with redis_cluster.node_client(redis_cluster.ports[1]) as c:
        assert c.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_cluster.ports[0], password="wrong").ping()


def test_config_cluster_option(redis_cluster, cluster_config, monkeypatch):
    assert cluster_config.cluster and "(cluster)" in str(cluster_config)
    client = cluster_config.connect()
    assert isinstance(client, redis.cluster.RedisCluster)
    assert len(client.get_primaries()) == 3
    client.close()
    # the node of a network's slot, as a plain configuration
    node = cluster_config.node_for("{x}:meta")
    assert not node.cluster and node.port == redis_cluster.slot_owner(key_slot(b"{x}:meta"))
    # plan, credentials, environment
    assert redis_config(**{"url": cluster_config.url(), "cluster": True}).cluster
    from rushhpc.store.connection import credentials, from_credentials

    doc = credentials(cluster_config)
    assert doc["cluster"] is True and from_credentials(doc).cluster
    assert "cluster" not in credentials(redis_config("redis://h:1"))
    monkeypatch.setenv("RUSHHPC_REDIS_URL", cluster_config.url())
    monkeypatch.setenv("RUSHHPC_REDIS_CLUSTER", "1")
    from rushhpc.store.connection import env_config

    assert env_config().cluster
    monkeypatch.setenv("RUSHHPC_REDIS_CLUSTER", "maybe")
    with pytest.raises(RushConfigError, match="RUSHHPC_REDIS_CLUSTER"):
        env_config()
    with pytest.raises(RushConfigError, match="database 0"):
        redis_config("redis://h:1/3", cluster=True)


def test_cluster_errors_are_clear(redis_cluster, cluster_config, redis_server):
    single = redis_config(host="127.0.0.1", port=redis_server.port, password=redis_server.password, cluster=True)
    with pytest.raises(RushConfigError, match="not a cluster node"):
        single.connect()
    wrong = redis_config(host="127.0.0.1", port=redis_cluster.ports[0], password="wrong", cluster=True)
    with pytest.raises(RushConfigError):
        wrong.connect()


def test_three_networks_end_to_end(networks, redis_cluster):
    # one network per primary: their slots are served by three different nodes
    owners = {}
    for r in networks:
        slot = redis_cluster.keyslot(r.keys.meta)
        assert slot == key_slot(r.keys.meta.encode())
        owners[r.network_id] = redis_cluster.slot_owner(slot)
    assert len(set(owners.values())) == 3, owners

    started = {}
    for r in networks:
        q = r.start_local_workers(queue_loop, n_workers=1, fun=lambda x: {"y": x * x}, **HB)
        s = r.start_local_workers(random_search_loop, n_workers=1, n_tasks=20, **HB)
        started[r.network_id] = (q, s)
    keys = {r.network_id: r.push_tasks([{"x": i} for i in range(15)]) for r in networks}
    for r in networks:
        r.wait_for_tasks(keys[r.network_id], timeout=60)
        q, s = started[r.network_id]
        wait_until(lambda r=r, s=s: set(s) <= set(r.terminated_worker_ids), 60, what="rush-style worker to end")
        df = r.fetch_finished_tasks()
        queued = df[df["keys"].isin(keys[r.network_id])]
        assert sorted(queued["y"]) == sorted(i * i for i in range(15))
        assert len(df) >= 20 and set(df["worker_id"]) <= set(q) | set(s)
        assert (df[df["worker_id"] == s[0]]["keys"].isin(keys[r.network_id])).sum() == 0  # its own tasks
        info = r.worker_info.set_index("worker_id")
        assert set(info.index) == set(q) | set(s)
        assert info["heartbeat"].all() and info["heartbeat_pid"].notna().all()
        assert info.loc[q[0], "state"] == "running"
        # its key lives 2 s and is refreshed every 0.5 s: on a loaded machine a beat can be late,
        # so the running worker's heartbeat must be alive again within a few periods
        wait_until(lambda r=r, w=q[0]: bool(r.worker_info.set_index("worker_id").loc[w, "heartbeat_alive"]), 10,
                   what="the running worker's heartbeat key")
        for pid in (info.loc[q[0], "pid"], info.loc[q[0], "heartbeat_pid"]):  # strict scripts there too
            assert f"{STRICT_ENV}=1" in open(f"/proc/{int(pid)}/environ").read().split("\0")
        assert r.n_failed_tasks == 0 and r.n_running_tasks == 0
        assert r.counts_by_state()["finished"] == len(df)
        # every key of the network lives on its slot's primary, and nowhere else
        on_owner = redis_cluster.keys_of_node(owners[r.network_id], r.keys.pattern)
        assert r.keys.meta in on_owner and r.keys.task(keys[r.network_id][0]) in on_owner
        for port in redis_cluster.ports:
            if port != owners[r.network_id]:
                assert redis_cluster.keys_of_node(port, r.keys.pattern) == []
    assert set(owners) <= set(list_networks(networks[0].connector))  # found on all three primaries
    for r in networks:
        r.stop_workers(type="terminate")


def test_lost_workers_on_a_cluster(networks):
    a, b, _ = networks
    # SIGKILL: the manager sees the process gone
    ids = a.start_local_workers(sleepy_loop, n_workers=1, **HB)
    a.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: a.n_running_tasks == 1, 20, what="a running task")
    os.kill(int(a.worker_info["pid"].iloc[0]), signal.SIGKILL)
    lost = wait_until(lambda: a.detect_lost_workers(), 20, interval=0.2, what="the killed worker to be lost")
    assert lost == ids and a.lost_worker_ids == ids
    failed = a.fetch_failed_tasks()
    assert len(failed) == 1 and "lost" in failed["condition"].item()
    # SIGSTOP of worker and heartbeat: only the expired heartbeat key tells (detect_lost.lua)
    ids = b.start_local_workers(sleepy_loop, n_workers=1, heartbeat_period=0.3, heartbeat_expire=1.5)
    b.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: b.n_running_tasks == 1, 20, what="a running task")
    row = b.worker_info.iloc[0]
    pids = [int(row["pid"]), int(row["heartbeat_pid"])]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: b.detect_lost_workers(), 15, interval=0.2, what="heartbeat to expire") == ids
        assert b.worker_info["reason"].item() == "heartbeat_expired" and b.n_failed_tasks == 1
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    proc = b.launcher("local").processes[ids[0]]
    wait_until(lambda: proc.poll() is not None, 15, what="the resumed lost worker to exit")


def _cli(*args, env_extra=None):
    env = dict(os.environ)
    env.pop("RUSHHPC_REDIS_URL", None)
    env.pop("RUSHHPC_REDIS_CLUSTER", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


def test_cli_against_the_cluster(networks, redis_cluster, cluster_config, tmp_path):
    a = networks[0]
    w = rushhpc.RushWorker(a.network_id, config=cluster_config, heartbeat_period=0.5, heartbeat_expire=5)
    try:
        a.push_tasks([{"x": i} for i in range(3)])
        t = w.pop_task(timeout=0)
        w.finish_tasks([t["key"]], [{"y": 1}])
        env = {"RUSHHPC_REDIS_URL": cluster_config.url(), "RUSHHPC_REDIS_CLUSTER": "1"}
        out = _cli("networks", "--json", env_extra=env)
        assert out.returncode == 0, out.stderr
        docs = {d["network_id"]: d for d in json.loads(out.stdout)}
        assert {r.network_id for r in networks} <= set(docs)  # found on all three primaries
        assert docs[a.network_id]["tasks"] == {"queued": 2, "running": 0, "finished": 1, "failed": 0}
        assert docs[a.network_id]["workers"]["running"] == 1
        # the URL without the password, --password-file, --redis-cluster
        pw = tmp_path / "pw"
        pw.write_text(cluster_config.password + "\n")
        pw.chmod(0o600)
        out = _cli("workers", "-n", a.network_id, "--json", "--redis", cluster_config.public_url(),
                   "--password-file", str(pw), "--redis-cluster")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [r["worker_id"] for r in rows] == [w.worker_id] and rows[0]["state"] == "running"
        assert rows[0]["heartbeat_alive"] is True
        out = _cli("tasks", "-n", a.network_id, "--state", "finished", "--json", env_extra=env)
        assert out.returncode == 0 and [t["y"] for t in json.loads(out.stdout)] == [1], out.stderr
        a.connector.xadd(a.keys.log, {"worker_id": w.worker_id, "level": "WARNING", "logger": "t", "msg": "hi"})
        out = _cli("logs", "-n", a.network_id, "--json", env_extra=env)
        assert out.returncode == 0 and [json.loads(x)["msg"] for x in out.stdout.splitlines()] == ["hi"]
        # reset through the CLI: this network's keys only
        b = networks[1]
        b.push_tasks([{"x": 1}])
        out = _cli("reset", b.network_id, "--yes", env_extra=env)
        assert out.returncode == 0, out.stderr
        assert list(b.connector.scan_iter(match=b.keys.pattern)) == [] and a.exists()
        # without the cluster flag, a node that does not own the network's slot answers MOVED:
        # the error says what to do
        other = next(p for p in redis_cluster.ports if p != redis_cluster.slot_owner(key_slot(a.keys.meta.encode())))
        plain = redis_config(host="127.0.0.1", port=other, password=cluster_config.password)
        out = _cli("workers", "-n", a.network_id, "--json", env_extra={"RUSHHPC_REDIS_URL": plain.url()})
        assert out.returncode != 0 and "--redis-cluster" in out.stderr, out.stderr
    finally:
        w.close()


def test_reset_deletes_one_network_only(networks, redis_cluster):
    for r in networks:
        r.push_tasks([{"x": i} for i in range(5)])
        r.connector.xadd(r.keys.log, {"msg": "hello"})
    before = {r.network_id: sorted(r.connector.scan_iter(match=r.keys.pattern)) for r in networks}
    assert all(len(v) >= 5 for v in before.values())
    a = networks[0]
    a.reset()
    for port in redis_cluster.ports:
        assert redis_cluster.keys_of_node(port, a.keys.pattern) == []
    for r in networks[1:]:
        assert sorted(r.connector.scan_iter(match=r.keys.pattern)) == before[r.network_id]
        assert r.counts_by_state()["queued"] == 5
    assert a.network_id not in list_networks(networks[1].connector)


def test_fetch_pipelined_ranges_on_a_cluster(networks):
    """The fetch of many finished tasks reads several ranges on one connection of the slot's node."""
    from rushhpc import RushWorker

    r = networks[1]
    w = RushWorker(r.network_id, config=r.config)
    try:
        keys = w.push_running_tasks([{"x": i} for i in range(3000)])
        w.finish_tasks(keys, [{"y": i} for i in range(3000)])
        got = []
        r.protocol.fetch_ranges("finished", [(0, 999), (1000, 1999), (2000, 2999)], got.append)
        assert [len(json.loads(t)) for t in got] == [1000, 1000, 1000]
        assert len(r.fetch_finished_tasks()) == 3000
        assert node_client(r.connector, r.keys.meta) is not r.connector
    finally:
        w.close()


def test_network_view_on_a_cluster(networks):
    """The pipelines (one slot each; the launch records in a MULTI/EXEC) and reads of a network view."""
    from rushhpc.core.records import LaunchRecord
    from rushhpc.network.view import Network

    r = networks[2]
    net = Network.open(r.network_id, r.config)
    net.store_records([LaunchRecord("w-batch", "slurm", job_id="42", extra={"managed": True}),
                       LaunchRecord("w-local", "local")])
    assert set(net.records()) == {"w-batch", "w-local"}
    assert net.worker_ids_in("pending") == ["w-batch"] and net.active_records().keys() == {"w-batch"}
    w = rushhpc.RushWorker(r.network_id, config=r.config, worker_id="w-local", heartbeat_period=0.5,
                           heartbeat_expire=5)
    try:
        assert net.worker_counts()["running"] == 1 and net.registered_ids() == {"w-local"}
        ages = net.heartbeat_ages(["w-local"])
        assert ages["w-local"] is not None and ages["w-local"] < 5
        net.request_terminate(["w-local"], reason="test")
        assert net.worker_field(["w-local"], "terminate") == ["1"]
        net.send_kill(["nobody"])
        assert r.connector.llen(r.keys.kill("nobody")) == 1
        assert net.mark_workers("killed", [("w-local", "test", "killed by the test")], retry=False) == ["w-local"]
        assert net.killed_worker_ids == ["w-local"]
    finally:
        w.close()
    assert net.delete(workers=False) >= 0 and net.exists()


def test_cluster_without_password(redis_cluster_open, strict_scripts):
    """The same on a cluster without requirepass (loopback), named by the environment as the CLI does."""
    cfg = redis_config(url=f"redis://127.0.0.1:{redis_cluster_open.ports[2]}", cluster=True)
    r = rushhpc.Rush(_spread_networks(redis_cluster_open)[0], config=cfg)
    try:
        ids = r.start_local_workers(queue_loop, n_workers=1, fun=lambda x: {"y": -x}, **HB)
        keys = r.push_tasks([{"x": i} for i in range(10)])
        r.wait_for_tasks(keys, timeout=60)
        assert sorted(r.fetch_finished_tasks()["y"]) == sorted(-i for i in range(10))
        assert r.worker_info.set_index("worker_id").loc[ids[0], "heartbeat_alive"]
        out = _cli("networks", "--json", env_extra={"RUSHHPC_REDIS_URL": cfg.url(), "RUSHHPC_REDIS_CLUSTER": "1"})
        assert out.returncode == 0, out.stderr
        assert r.network_id in {d["network_id"] for d in json.loads(out.stdout)}
    finally:
        r.reset()
        r.close()
    assert list(r.connector.scan_iter(match=r.keys.pattern)) == []


def slow_search_loop(rush, delay: float = 0.05):
    """Rush-style (deferred replies) until terminated, slowly."""
    import random

    while not rush.terminated:
        keys = rush.push_running_tasks([{"x": random.random()}])
        time.sleep(delay)
        rush.finish_tasks(keys, [{"y": 1.0}])


def test_workers_follow_their_network_to_another_primary(strict_scripts):
    """The network's slot moves to another primary while its workers and heartbeats are connected
    (paused meanwhile, so that no call lands mid-migration): each answers MOVED, follows, goes on."""
    from support import redis_cluster as rc

    cluster = rc.RedisClusterProcesses(password="pw-" + uuid.uuid4().hex[:8])
    try:
        cfg = redis_config(host="127.0.0.1", port=cluster.ports[0], password=cluster.password, cluster=True)
        r = rushhpc.Rush(_spread_networks(cluster)[0], config=cfg)
        try:
            hb = {"heartbeat_period": 0.5, "heartbeat_expire": 10}
            q = r.start_local_workers(queue_loop, n_workers=1, fun=lambda x: {"y": x + 1}, **hb)
            s = r.start_local_workers(slow_search_loop, n_workers=1, **hb)
            r.wait_for_workers(worker_ids=q + s, timeout=30)
            first = r.push_tasks([{"x": i} for i in range(10)])
            r.wait_for_tasks(first, timeout=30)
            slot = key_slot(r.keys.meta.encode())
            old = cluster.slot_owner(slot)
            new = next(p for p in cluster.ports if p != old)
            info = r.worker_info.set_index("worker_id")
            pids = [int(info.loc[w, col]) for w in q + s for col in ("pid", "heartbeat_pid")]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                cluster.move_slot(slot, new)
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            assert cluster.keys_of_node(old, r.keys.pattern) == []
            assert r.keys.meta in cluster.keys_of_node(new, r.keys.pattern)
            n_search = r.n_finished_tasks
            second = r.push_tasks([{"x": i} for i in range(10, 20)])
            r.wait_for_tasks(second, timeout=30)
            wait_until(lambda: r.n_finished_tasks > n_search + 10 + 5, 20, what="the rush-style worker to go on")
            df = r.fetch_finished_tasks().set_index("keys")
            assert sorted(df.loc[first + second, "y"]) == list(range(1, 21))
            assert set(df.loc[second, "worker_id"]) == set(q)
            assert r.detect_lost_workers() == [] and sorted(r.running_worker_ids) == sorted(q + s)
            wait_until(lambda: r.worker_info["heartbeat_alive"].all(), 10, what="heartbeats on the new primary")
            assert r.n_failed_tasks == 0
            assert cluster.keys_of_node(old, r.keys.pattern) == []  # nothing written to the old node
            r.stop_workers(type="terminate")
            wait_until(lambda: sorted(r.terminated_worker_ids) == sorted(q + s), 20, what="workers to end")
        finally:
            r.reset()
            r.close()
    finally:
        cluster.stop()


def test_workers_survive_the_failover_of_their_primary(strict_scripts):
    """3 primaries with a replica each: SIGKILL the primary of a running network's slot; its replica
    takes over, and the manager, the workers and their heartbeats find it and go on."""
    from support import redis_cluster as rc

    cluster = rc.RedisClusterProcesses(password="pw-" + uuid.uuid4().hex[:8], replicas=1, node_timeout_ms=1500)
    try:
        named = cluster.ports[0]  # the node the configuration names stays up
        nid = next(n for n in _spread_networks(cluster) if cluster.slot_owner(key_slot(Keys(n).meta.encode())) != named)
        cfg = redis_config(host="127.0.0.1", port=named, password=cluster.password, cluster=True)
        r = rushhpc.Rush(nid, config=cfg)
        try:
            hb = {"heartbeat_period": 0.5, "heartbeat_expire": 60}
            q = r.start_local_workers(queue_loop, n_workers=1, fun=lambda x: {"y": x + 1}, **hb)
            r.wait_for_workers(worker_ids=q, timeout=30)
            first = r.push_tasks([{"x": i} for i in range(10)])
            r.wait_for_tasks(first, timeout=30)
            slot = key_slot(r.keys.meta.encode())
            old = cluster.slot_owner(slot)
            with cluster.node_client(old) as c:  # the replica has every write before the kill
                c.execute_command("WAIT", 1, 5000)
            cluster.kill(old)
            wait_until(lambda: cluster.slot_owner(slot) != old, 30, interval=0.2, what="a replica to take over")
            second = r.push_tasks([{"x": i} for i in range(10, 20)])
            r.wait_for_tasks(second, timeout=60)
            df = r.fetch_finished_tasks().set_index("keys")
            assert sorted(df.loc[first + second, "y"]) == list(range(1, 21))
            assert set(df.loc[second, "worker_id"]) == set(q)
            wait_until(lambda: r.worker_info["heartbeat_alive"].all(), 20, what="the heartbeat on the new primary")
            assert r.detect_lost_workers() == [] and r.running_worker_ids == q and r.n_failed_tasks == 0
            r.stop_workers(type="terminate")
            wait_until(lambda: r.terminated_worker_ids == q, 30, what="the worker to end")
        finally:
            r.reset()
            r.close()
    finally:
        cluster.stop()


# ------------------------------------------------------------------ the heartbeat process (rushhpc/worker/beat.py)
def _fresh_cluster(**kw):
    from support import redis_cluster as rc

    try:
        return rc.RedisClusterProcesses(password="pw-" + uuid.uuid4().hex[:8], **kw)
    except rc.ClusterUnavailable as e:
        if os.environ.get("RUSHHPC_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"a Redis Cluster is required (RUSHHPC_REQUIRE_CLUSTER=1): {e}")
        pytest.skip(f"no Redis Cluster here: {e}")


def _beats_on(cluster, port: int, key: str, timeout: float = 15, expire: float = 10) -> None:
    """The heartbeat refreshes ``key`` (expiry ``expire``) on the node on ``port``: a second after,
    its time to live is back near the full expiry (a beat every 0.3 s). Read, never deleted: a
    missing key in a migrating slot would turn the heartbeat script's call into TRYAGAIN."""
    time.sleep(1.0)
    with cluster.node_client(port) as c:
        wait_until(lambda: c.pttl(key) > (expire - 0.5) * 1000, timeout, what=f"a beat on the node on port {port}")


def test_heartbeat_on_a_cluster_is_small_and_beats_on_its_slot_s_primary(redis_cluster, cluster_config, strict_scripts,
                                                                         tmp_path):
    from support.heartbeats import StandIn, vm_rss_mib

    nid = _spread_networks(redis_cluster)[1]
    owner = redis_cluster.slot_owner(key_slot(Keys(nid).meta.encode()))
    s = StandIn(cluster_config, nid, "w-1", tmp_path)
    try:
        _beats_on(redis_cluster, owner, s.heartbeat_key)
        rss = vm_rss_mib(s.hb_pid)
        print(f"resident: heartbeat on a cluster {rss:.1f} MiB")
        assert rss < 15, f"heartbeat RSS {rss:.1f} MiB"
        assert f"{STRICT_ENV}=1" in open(f"/proc/{s.hb_pid}/environ").read().split("\0")
        assert "Redis error" not in s.log(), s.log()
    finally:
        s.stop()
        with redis_cluster.node_client(owner) as c:
            c.delete(s.heartbeat_key, s.keys.worker(s.worker_id))


def test_heartbeat_follows_ask_and_moved_while_its_slot_migrates(strict_scripts, tmp_path):
    """Slot migration with a live heartbeat, no pause: while the slot is MIGRATING the kill list
    (which does not exist) is asked of the importing node (ASK: ASKING, then BLPOP there), and a
    kill request pushed there reaches it; once the slot has moved the heartbeat follows MOVED and
    beats on the new primary. No Redis error on the way (a redirection is not a failure)."""
    cluster = _fresh_cluster()
    try:
        cfg = redis_config(host="127.0.0.1", port=cluster.ports[0], password=cluster.password, cluster=True)
        nid = _spread_networks(cluster)[1]
        slot = key_slot(Keys(nid).meta.encode())
        src = cluster.slot_owner(slot)
        dst = next(p for p in cluster.ports if p != src)
        from support.heartbeats import StandIn

        # 1. ASK: MIGRATING/IMPORTING, no key moved yet
        a = StandIn(cfg, nid, "w-ask", tmp_path)
        try:
            _beats_on(cluster, src, a.heartbeat_key)
            with cluster.node_client(dst) as d, cluster.node_client(src) as s:
                d.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", cluster.node_id(src))
                s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", cluster.node_id(dst))

            def blocked_on_dst() -> bool:
                with cluster.node_client(dst) as d:
                    return any(c.get("cmd") == "blpop" and "b" in c.get("flags", "") for c in d.client_list())

            wait_until(blocked_on_dst, 10, what="the heartbeat's BLPOP on the importing node (ASK)")
            _beats_on(cluster, src, a.heartbeat_key)  # its keys are still on the source: it beats there
            pusher = redis.Redis(host="127.0.0.1", port=dst, password=cluster.password, single_connection_client=True)
            try:
                pusher.execute_command("ASKING")
                pusher.rpush(a.kill_key, "kill")
            finally:
                pusher.close()
            wait_until(lambda: a.proc.poll() is not None, 10, what="the kill request to reach the heartbeat")
            assert a.proc.returncode == -signal.SIGKILL
            wait_until(lambda: not a.hb_alive(), 10, what="the heartbeat to end")
            assert "Redis error" not in a.log() and "kill request" in a.log(), a.log()
        finally:
            a.stop()
            with cluster.node_client(dst) as d, cluster.node_client(src) as s:
                s.execute_command("CLUSTER SETSLOT", slot, "STABLE")
                d.execute_command("CLUSTER SETSLOT", slot, "STABLE")

        # 2. the whole move, the heartbeat beating all along: ASK during MIGRATE, then MOVED
        m = StandIn(cfg, nid, "w-move", tmp_path)
        try:
            _beats_on(cluster, src, m.heartbeat_key)
            cluster.move_slot(slot, dst)
            assert cluster.keys_of_node(src, f"{{{nid}}}:*") == []
            _beats_on(cluster, dst, m.heartbeat_key)
            assert m.proc.poll() is None
            with cluster.node_client(dst) as d:
                d.rpush(m.kill_key, "kill")
            wait_until(lambda: m.proc.poll() is not None, 10, what="the kill request on the new primary")
            assert "Redis error" not in m.log(), m.log()
            assert cluster.keys_of_node(src, f"{{{nid}}}:*") == []  # nothing written to the old node
        finally:
            m.stop()
    finally:
        cluster.stop()


def test_heartbeat_survives_the_failover_of_the_node_it_was_given(strict_scripts, tmp_path):
    """The configured node is the primary of the network's slot, and it dies: the heartbeat asks
    the other nodes it learned from CLUSTER SLOTS, finds the replica that took over, beats there."""
    cluster = _fresh_cluster(replicas=1, node_timeout_ms=1500)
    try:
        nid = _spread_networks(cluster)[0]
        slot = key_slot(Keys(nid).meta.encode())
        old = cluster.slot_owner(slot)
        cfg = redis_config(host="127.0.0.1", port=old, password=cluster.password, cluster=True)
        from support.heartbeats import StandIn

        s = StandIn(cfg, nid, "w-1", tmp_path, expire=60)
        try:
            _beats_on(cluster, old, s.heartbeat_key, expire=60)
            with cluster.node_client(old) as c:  # the replica has every write before the kill
                c.execute_command("WAIT", 1, 5000)
            cluster.kill(old)
            wait_until(lambda: cluster.slot_owner(slot) != old, 30, interval=0.2, what="a replica to take over")
            new = cluster.slot_owner(slot)
            _beats_on(cluster, new, s.heartbeat_key, timeout=30, expire=60)
            assert s.proc.poll() is None and s.hb_alive()
            assert "Redis error" in s.log()  # the dead node was reported, and retried
        finally:
            s.stop()
    finally:
        cluster.stop()
