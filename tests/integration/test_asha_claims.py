"""The ASHA claim script on a real Redis (store/lua/asha_claim.lua, asha_finish.lua), step by step:

- a promotion whose task failed because its worker was lost (not evaluated) is promotable again, at most
  ``retries`` times; one whose objective failed (asha_finish, failed) is not;
- budget.fidelity: no claim takes the fidelity spent beyond it (the increment over the lower rung when the
  objective resumes from its checkpoint, the whole fidelity otherwise); the refused flag tells the manager;
- Hyperband's brackets rank apart: a bracket's promotion looks at its own rungs only.
"""

from __future__ import annotations

import json

from rushhpc import RushWorker
from rushhpc.core.states import TaskState
from rushhpc.store.protocol import Protocol

FIDS = [1, 3, 9]


def _setup(rush, config):
    p = Protocol(config.client(), rush.keys)
    w = RushWorker(rush.network_id, config=config)
    return p, w


def _claim(p, w, n, **kw):
    reply = p.asha_claim(w.worker_id, None, 3, kw.pop("fids", FIDS), (f"k{n}", f"c{n}", json.dumps({"params": {"n": n}})),
                         f"p{n}", **kw)
    if reply[2] != "1":
        return None
    return reply[3], json.loads(reply[5])


def _rung0(p, w, n_configs, **kw):
    """n configurations at rung 0, finished with scores 0, 1, 2, ... (c0 the best)."""
    for i in range(n_configs):
        key, extra = _claim(p, w, i, **kw)
        assert extra["rung"] == 0
        p.asha_finish(w.worker_id, key, "{}", extra["config"], 0, float(i), bracket=extra.get("bracket"))


def test_a_lost_promotion_is_promoted_again_under_retries(rush, config):
    p, w = _setup(rush, config)
    _rung0(p, w, 3, retries=1)
    key, extra = _claim(p, w, 10, retries=1)
    assert (extra["config"], extra["rung"]) == ("c0", 1)  # the top 1 of 3
    # the worker is lost while it evaluates the promotion: its task fails, not evaluated
    p.stop_workers("lost", [(w.worker_id, "heartbeat_expired", "worker lost")], retry=False)
    assert config.client().hget(rush.keys.task(key), "state") == TaskState.FAILED
    w2 = RushWorker(rush.network_id, config=config)
    key2, extra2 = _claim(p, w2, 11, retries=1)
    assert (extra2["config"], extra2["rung"]) == ("c0", 1) and key2 != key  # promoted again
    p.stop_workers("lost", [(w2.worker_id, "heartbeat_expired", "worker lost")], retry=False)
    w3 = RushWorker(rush.network_id, config=config)
    _, extra3 = _claim(p, w3, 12, retries=1)
    assert extra3["rung"] == 0  # retries=1: not a third time; a new configuration instead
    for x in (w, w2, w3):
        x.close()


def test_a_promotion_whose_objective_failed_is_final(rush, config):
    p, w = _setup(rush, config)
    _rung0(p, w, 3, retries=2)
    key, extra = _claim(p, w, 10, retries=2)
    assert extra["rung"] == 1
    p.asha_finish(w.worker_id, key, json.dumps({"message": "ValueError: x"}), "c0", 1, None, state=TaskState.FAILED)
    assert config.client().hget(rush.keys.task(key), "state") == TaskState.FAILED
    assert _claim(p, w, 11, retries=2)[1]["rung"] == 0
    w.close()


def test_fidelity_budget_is_decided_in_the_claim(rush, config):
    p, w = _setup(rush, config)
    _rung0(p, w, 3, max_fidelity=7, incremental=True)  # 3 spent
    _, extra = _claim(p, w, 10, max_fidelity=7, incremental=True)
    assert (extra["rung"], extra["cost"]) == (1, 2)  # resumes from rung 0: the increment 3 - 1; 5 spent
    _, extra = _claim(p, w, 11, max_fidelity=7, incremental=True)
    assert (extra["rung"], extra["cost"]) == (0, 1)  # 6 spent
    _, extra = _claim(p, w, 12, max_fidelity=7, incremental=True)
    assert (extra["rung"], extra["cost"]) == (0, 1)  # 7 spent: exactly the budget
    assert _claim(p, w, 13, max_fidelity=7, incremental=True) is None  # nothing fits
    assert p.asha_budget() == (7.0, True)
    w.close()


def test_without_checkpoints_a_promotion_costs_its_whole_fidelity(rush, config):
    p, w = _setup(rush, config)
    _rung0(p, w, 3, max_fidelity=5)
    _, extra = _claim(p, w, 10, max_fidelity=5)
    assert (extra["rung"], extra["cost"]) == (0, 1)  # a promotion would cost 3 (> 5 - 3): skipped for a new one
    assert p.asha_budget() == (4.0, False)
    w.close()


def test_hyperband_brackets_rank_apart(rush, config):
    p, w = _setup(rush, config)
    _rung0(p, w, 3, fids=FIDS, bracket=0, rung_offset=0)
    # bracket 1 starts at rung 1 (fidelity 3): its first claims are new configurations there, not promotions of
    # bracket 0's results
    key, extra = _claim(p, w, 10, fids=FIDS[1:], bracket=1, rung_offset=1)
    assert (extra["rung"], extra["fidelity"], extra["bracket"]) == (1, 3, 1)
    _, extra = _claim(p, w, 11, fids=FIDS, bracket=0, rung_offset=0)
    assert (extra["config"], extra["rung"], extra["bracket"]) == ("c0", 1, 0)
    w.close()


def test_tpe_sampler_proposes_from_the_highest_rung_with_enough_results(rush, config):
    """sampler: tpe (BOHB's idea): with 30 results at rung 1 that are good near x = 0.8, the proposals gather there;
    with too few results anywhere they are random."""
    import numpy as np

    from rushhpc.core import codec
    from rushhpc.sweeps.config import load_config
    from rushhpc.sweeps.space import Space
    from rushhpc.sweeps.strategies._asha_tpe import TpeProposer

    space = load_config({"objective": lambda x: x, "space": {"x": {"type": "float", "low": 0, "high": 1}},
                         "budget": 5}).space  # as the workers get it
    sp = Space(space)
    p = Protocol(config.client(), rush.keys)
    prop = TpeProposer(space, sp, p)
    rng = np.random.default_rng(1)
    assert prop.propose(rng, [0, 1, 2], None) is not None and prop.modelled == 0  # nothing ranked yet: random
    xs = np.random.default_rng(2).random(30)
    configs = {f"c{i}": codec.encode_dict({"params": {"x": float(x)}}, "xs") for i, x in enumerate(xs)}
    ranked = [(None, 1, f"c{i}", abs(float(x) - 0.8)) for i, x in enumerate(xs)]
    ranked += [(None, 0, f"c{i}", 1.0 - float(x)) for i, x in enumerate(xs[:5])]  # rung 0: another story, too few
    p.asha_seed(ranked, configs, [], 0.0)
    got = [prop.propose(rng, [0, 1, 2], None)["x"] for _ in range(60)]
    assert prop.modelled >= 30  # two thirds of the proposals, minus chance
    assert np.median(np.abs(np.array(got) - 0.8)) < 0.15  # uniform proposals: about 0.3
