"""A manager takes its plan (issue 18): `Rush(..., plan=)` and `rsh(..., plan=)` read that plan,
the process-wide one (`rush_plan`) is only the default, and giving a plan changes no global."""

from __future__ import annotations

import uuid

import pytest

import rushhpc
from rushhpc.errors import RushConfigError
from rushhpc.manager.plan import Plan, current_plan, remove_rush_plan, rush_plan
from rushhpc.network.view import Network


def _id() -> str:
    return "plan-" + uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def no_plan():
    remove_rush_plan()
    yield
    remove_rush_plan()


def test_the_given_plan_is_read_and_the_process_plan_left_alone(config):
    rush_plan(n_workers=7, worker_type="local")
    before = current_plan()
    r = rushhpc.Rush(_id(), config=config, plan=Plan(n_workers=1, worker_type="script"))
    try:
        # start_workers reads the manager's plan: worker_type script starts nothing, and says so
        with pytest.raises(RushConfigError, match="worker_type 'script'"):
            r.start_workers(lambda rush: None)
        with pytest.raises(RushConfigError, match="submits no batch script"):
            r.render_script(lambda rush: None)
        assert current_plan() == before  # nothing was patched
    finally:
        r.reset()
        r.close()


def test_without_a_plan_the_process_plan_is_the_default(config):
    rush_plan(worker_type="script")
    r = rushhpc.rsh(_id(), config=config)
    try:
        with pytest.raises(RushConfigError, match="worker_type 'script'"):
            r.start_workers(lambda rush: None)
    finally:
        r.reset()
        r.close()


def test_rsh_passes_the_plan_and_its_config(config):
    r = rushhpc.rsh(_id(), plan=Plan(config=config, start_worker_timeout=0.2))
    try:
        assert r.config.address == config.address  # the plan's Redis, as rush_plan(config=) gives it
        with pytest.raises(rushhpc.RushTimeoutError, match="within 0.2 s"):
            r.wait_for_workers(n=1)  # the plan's start_worker_timeout
    finally:
        r.reset()
        r.close()


def test_a_plan_must_be_a_plan(config):
    with pytest.raises(RushConfigError, match="plan must be a rushhpc.manager.plan.Plan"):
        rushhpc.Rush(_id(), config=config, plan={"n_workers": 2})  # type: ignore[arg-type]


def test_the_manager_holds_a_view_it_does_not_inherit(config):
    r = rushhpc.Rush(_id(), config=config)
    try:
        assert not isinstance(r, Network) and isinstance(r.network, Network)
        assert not issubclass(Network, type(r.network.tasks))
        keys = r.push_tasks([{"x": 1}])
        assert r.network.tasks_with_state(["queued"])["queued"] == keys
        assert r.counts_by_state() == {"queued": 1, "running": 0, "finished": 0, "failed": 0}
        assert r.n_queued_tasks == 1 and r.launchers() == [] and r.monitor is None
    finally:
        r.reset()
        r.close()
