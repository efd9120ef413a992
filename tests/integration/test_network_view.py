"""The network view: open a network without becoming its manager; attach a second manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import wait_until

import rushhpc
from rushhpc import Network, Rush, RushConfigError, RushWorker, queue_loop
from rushhpc.launchers.registry import check_worker_type, launcher_class
from rushhpc.store.protocol import SCHEMA_VERSION


def cli(*args, env_url=None, env=None):
    e = dict(os.environ)
    e.pop("RUSHHPC_REDIS_URL", None)
    if env_url:
        e["RUSHHPC_REDIS_URL"] = env_url
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=60, env=e)


def test_opening_a_view_writes_nothing(config):
    client = config.connect()
    before = set(client.scan_iter(match="*"))
    with pytest.raises(RushConfigError, match="no network 'ghost'"):
        Network.open("ghost", config)
    view = Network("ghost", config)  # a view that does not insist on existence
    assert view.exists() is False and view.counts_by_state() == {"queued": 0, "running": 0, "finished": 0, "failed": 0}
    assert view.worker_rows() == []
    assert set(client.scan_iter(match="*")) == before  # no meta key, nothing written by a read


def test_view_sees_what_a_manager_did(rush, config):
    keys = rush.push_tasks([{"x": i} for i in range(3)])
    w = RushWorker(rush.network_id, config=config)
    t = w.pop_task(timeout=0)
    w.finish_tasks([t["key"]], [{"y": 1}])
    view = Network.open(rush.network_id, config)
    assert view.counts_by_state() == {"queued": 2, "running": 0, "finished": 1, "failed": 0}
    assert [r["worker_id"] for r in view.worker_rows()] == [w.worker_id]
    assert set(view.fetch_tasks()["keys"]) == set(keys)
    assert rush.network_id in rushhpc.network.view.list_networks(config.connect())
    w2 = RushWorker(rush.network_id, config=config)
    w2.set_terminated()
    # the states from the sets agree with every worker's hash
    assert view.worker_states() == {w.worker_id: "running", w2.worker_id: "terminated"}
    assert view.worker_states() == {r["worker_id"]: r["state"] for r in view.worker_rows()}
    w.close()
    w2.close()


def test_sweep_info_is_written_once_read_typed_and_shown(rush, config):
    from rushhpc.core.records import SweepInfo

    assert rush.sweep_info() is None  # not a sweep's network
    info = SweepInfo("branin", "tpe", "loss", "maximize", evaluations=200, walltime=600.0, seed=3,
                     config="/x/sweep.yaml", output="/x/runs/branin", started_at=1.5)
    assert rush.set_sweep_info(info) is True
    assert rush.set_sweep_info(SweepInfo("other", "random", "y", "minimize")) is False  # written once
    view = Network.open(rush.network_id, config)
    got = view.sweep_info()
    assert got == info and got.target is None and isinstance(got.evaluations, int)
    assert got.describe() == "sweep branin: tpe, maximize loss, budget 200 evaluations, walltime 600 s"
    assert rush.connector.hget(rush.keys.sweep, "metric") == "loss"  # readable with redis-cli
    out = cli("networks", "--json", env_url=config.url())
    doc = {d["network_id"]: d for d in json.loads(out.stdout)}[rush.network_id]
    assert doc["sweep"]["metric"] == "loss" and doc["sweep"]["direction"] == "maximize"
    assert doc["sweep"]["evaluations"] == 200
    text = cli("networks", env_url=config.url()).stdout
    assert "SWEEP" in text and "tpe: maximize loss" in text
    text = cli("tasks", rush.network_id, env_url=config.url()).stdout
    assert text.startswith("sweep branin: tpe, maximize loss")
    # deleted with the network (the rush fixture checks that reset leaves no key)
    rush.reset()
    assert rush.sweep_info() is None


def test_schema_version_mismatch_is_refused(rush, config):
    rush.connector.hset(rush.keys.meta, "schema", "999")
    with pytest.raises(RushConfigError, match="protocol version 999"):
        Network.open(rush.network_id, config)
    with pytest.raises(RushConfigError, match="protocol version 999"):
        RushWorker(rush.network_id, config=config)
    rush.connector.hset(rush.keys.meta, "schema", SCHEMA_VERSION)


def test_worker_without_redis_never_starts_one(monkeypatch):
    import rushhpc.server.embedded as emb

    before = emb._SERVER  # an earlier test's manager may have one running in this process: not the worker's
    with pytest.raises(RushConfigError, match="never starts a Redis"):
        RushWorker("net-x")
    assert emb._SERVER is before


def test_launched_worker_of_a_missing_network_is_refused(config):
    # a launched worker (create_network=False, what run_worker passes) is refused; one built by hand
    # creates its network (issue 20 defect 2: tests/integration/test_trust_core.py)
    with pytest.raises(RushConfigError, match="does not exist"):
        RushWorker("never-created", config=config, create_network=False)
    assert not config.connect().exists("{never-created}:workers")


def test_registry_is_the_one_list():
    assert check_worker_type("ssh") == "ssh"
    assert launcher_class("local").__name__ == "LocalLauncher"
    with pytest.raises(RushConfigError, match="mirai.*local"):
        rushhpc.rush_plan(worker_type="mirai")


def test_second_manager_attaches_to_live_local_workers(rush, config):
    """A second manager (and the CLI) attached to a network with live local workers declares
    none lost, sees their tasks, and can stop them."""
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x}, heartbeat_period=0.3,
                                   heartbeat_expire=3)
    rush.wait_for_workers(2)
    keys = rush.push_tasks([{"x": i} for i in range(20)])
    rush.wait_for_tasks(keys, timeout=30)
    second = Rush.attach(rush.network_id, config=config)
    for _ in range(3):
        assert second.detect_lost_workers(poll_scheduler=True) == []
    assert set(second.running_worker_ids) == set(ids)
    assert second.n_finished_tasks == 20
    out = cli("monitor", rush.network_id, "--once", "--json", env_url=config.url())
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["lost"] == [] and {w["state"] for w in doc["workers"]} == {"running"}
    # the second manager stops workers it did not start: through their heartbeat's kill list
    assert sorted(second.stop_workers(type="kill")) == sorted(ids)
    procs = rush.launcher("local").processes
    wait_until(lambda: all(p.poll() is not None for p in procs.values()), 20, what="workers to die")
    assert set(rush.killed_worker_ids) == set(ids)
    second.close()


def test_monitor_needs_a_redis_and_an_existing_network(config):
    out = cli("monitor", "some-net", "--once")
    assert out.returncode != 0 and "no Redis is configured" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("monitor", "no-such-net", "--once", env_url=config.url())
    assert out.returncode != 0 and "no network 'no-such-net'" in out.stderr
    assert not config.connect().exists("{no-such-net}:meta")  # looking created nothing
    out = cli("monitor", "--network", "no-such-net", "--redis", f"redis://127.0.0.1:{config.port}", "--once")
    assert out.returncode != 0 and "requires a password" in out.stderr


def test_monitor_with_redis_and_password_file(rush, config, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(config.password + "\n")
    pw.chmod(0o600)
    out = cli("monitor", "-n", rush.network_id, "--redis", f"redis://127.0.0.1:{config.port}", "--password-file",
              str(pw), "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["network"] == rush.network_id
    assert config.password not in out.stdout + out.stderr


def test_rsh_accepts_rush_spelling(config):
    r = rushhpc.rsh(network="r-spelling", config=config)
    assert r.network_id == "r-spelling"
    r.reset()


def test_stop_workers_accepts_one_id_as_a_string(rush, config):
    w = RushWorker(rush.network_id, config=config)
    assert rush.stop_workers(type="terminate", worker_ids=w.worker_id) == [w.worker_id]
    assert rush.stop_workers(type="kill", worker_ids=w.worker_id) == [w.worker_id]
    assert rush.killed_worker_ids == [w.worker_id]
    w.close()


def test_every_script_call_declares_network_keys(rush, config):
    """Every script call passes KEYS (so a Redis Cluster client routes it to the network's slot),
    and every declared key carries the network's hash tag."""
    import redis as redis_mod

    from rushhpc.store.protocol import _INCLUDES, Protocol

    seen: dict[str, list[str]] = {}
    sha_names: dict[str, str] = {}

    class Recording(redis_mod.Redis):
        def execute_command(self, *args, **options):
            if args[0] in ("EVALSHA", "EVAL"):
                n = int(args[2])
                seen.setdefault(sha_names.get(args[1], args[1]), []).extend(args[3:3 + n])
            return super().execute_command(*args, **options)

    client = config.client(cls=Recording)
    p = Protocol(client, rush.keys)
    sha_names.update({p.script(n).sha: n for n in _INCLUDES})
    w = RushWorker(rush.network_id, config=config)
    p.push_tasks(0, [("k1", "{}", ""), ("k2", "{}", "")])
    p.run(p.push_running_tasks_call(w.worker_id, [("k3", "{}", "")]))
    p.pop_task(w.worker_id)
    client.lmove(rush.keys.queued, rush.keys.pending(w.worker_id), "RIGHT", "LEFT")
    p.claim_task(w.worker_id, "k1")
    p.run(p.finish_tasks_call(w.worker_id, "finished", [("k3", "*", "ys", "{}", "", "")]))
    p.push_final_tasks("failed", [("k4", "{}", "", "condition", '{"message": "x"}', "", "")])
    p.empty_queue("gone")
    p.heartbeat(w.worker_id, 5)
    p.worker_info(["state"])
    p.fetch("states", "queued", "running", "finished", "failed")
    p.fetch("range", "finished", 0, -1)
    p.keys_with_state(["queued"])
    p.counts()
    p.detect_lost()
    reply = p.asha_claim(w.worker_id, None, 3, [1, 3], ("k5", "c1", "{}"), "p1")  # a new configuration at rung 0
    p.asha_finish(w.worker_id, reply[3], "{}", "c1", 0, 1.0)
    p.stop_workers("killed", [(w.worker_id, "killed", "x")], retry=False)
    p.register_worker("w-other", 0, {"pid": "1"})
    p.settle_released(w.worker_id, True, "x")
    p.give_back(w.worker_id, "k1", "1")
    assert set(seen) == set(_INCLUDES), f"not exercised: {set(_INCLUDES) - set(seen)}"
    for name, keys in seen.items():
        assert keys, f"{name} was called without KEYS"
        assert all(k.startswith(rush.keys.prefix) for k in keys), (name, keys)
    w.close()


def test_embedded_on_request(monkeypatch, config):
    monkeypatch.setenv("RUSHHPC_REDIS_URL", config.url())  # even with a Redis in the environment
    r = rushhpc.rsh("emb-asked", config="embedded")
    assert r.embedded and r.config.port != config.port and r.config.loopback
    r.reset()


def test_worker_info_reads_every_worker_in_chunks(rush, config):
    """The pipelined read (Protocol.worker_info) covers every worker across chunk boundaries, says
    whether each heartbeat key lives, and skips a worker whose hash is gone."""
    ws = [RushWorker(rush.network_id, config=config) for _ in range(5)]
    rush.connector.set(rush.keys.heartbeat(ws[0].worker_id), "1", ex=30)
    rows = rush.protocol.worker_info(["worker_id", "state"], chunk=2)
    assert sorted(r["worker_id"] for r in rows) == sorted(w.worker_id for w in ws)
    assert {r["worker_id"]: r["heartbeat_alive"] for r in rows}[ws[0].worker_id] == "1"
    assert {r["state"] for r in rows} == {"running"} and sum(r["heartbeat_alive"] == "1" for r in rows) == 1
    rush.connector.delete(rush.keys.worker(ws[1].worker_id))
    assert ws[1].worker_id not in {r["worker_id"] for r in rush.protocol.worker_info(["worker_id"], chunk=2)}
    assert len(rush.worker_rows()) == 4
    for w in ws:
        w.close()
