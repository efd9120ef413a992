"""The dashboard shows the Pareto front of a sweep with several metrics (issue 19 part 2): its JSON API
(`/api/{net}/pareto`) against a brute-force front, and the page in headless Chromium, as the other
dashboard tests do (the server as a subprocess by pid, Playwright; skipped without a browser)."""

from __future__ import annotations

import json
import random
import uuid

import pytest
from test_dashboard import browser, get_json, new_page, password_file, shot, start_dashboard  # noqa: F401

import rushhpc
from rushhpc.core.records import SweepInfo

CONSTRAINTS = {"mem": {"max": 14}}


def _front(points):
    def dom(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return sorted(p for p in points if not any(dom(q, p) for q in points))


@pytest.fixture
def two_metric_sweep(config):
    """A network recorded as a two-metric sweep's (as `rushhpc sweep` records it), with 40 finished tasks
    whose outputs sit under "outputs" as a sweep's workers report them."""
    r = rushhpc.Rush("mo-" + uuid.uuid4().hex[:8], config=config)
    r.set_sweep_info(SweepInfo("mo", "random", "f1,f2", "minimize,minimize", evaluations=40,
                               objectives=json.dumps({"constraints": CONSTRAINTS})))
    rng = random.Random(7)
    xs, ys = [], []
    for _ in range(40):
        x1, x2 = rng.random(), rng.random()
        out = {"f1": x1, "f2": (1 + 9 * x2) * (1 - (x1 / (1 + 9 * x2)) ** 0.5), "mem": 4 + 16 * x1}
        xs.append({"params": {"x1": x1, "x2": x2}})
        ys.append({"outputs": out, "value": None})
    r.push_finished_tasks(xs, ys)
    yield r, [y["outputs"] for y in ys]
    r.reset()
    r.close()


def test_pareto_api_and_page(two_metric_sweep, start_dashboard, browser):  # noqa: F811
    rush, outs = two_metric_sweep
    d = start_dashboard("--network", rush.network_id)
    doc = get_json(d.base + f"/api/{rush.network_id}/pareto")
    feas = [(o["f1"], o["f2"]) for o in outs if o["mem"] <= 14]
    front = _front(feas)
    assert doc["multi"] and doc["metrics"] == ["f1", "f2"] and doc["constraints"] == CONSTRAINTS
    assert [tuple(v) for v in doc["front"]] == pytest.approx(front)
    assert len(doc["infeasible"]) == 40 - len(feas) > 0 and len(doc["feasible"]) == len(feas) - len(front)
    lo = [min(v[k] for v in feas) for k in (0, 1)]
    hi = [max(v[k] for v in feas) for k in (0, 1)]
    assert doc["reference_point"] == pytest.approx([h + 0.1 * (h - lo_) for h, lo_ in zip(hi, lo)])
    assert doc["reference_point_source"] == "observed" and doc["hypervolume"] > 0

    page = new_page(browser, [])
    page.goto(d.base + f"/?network={rush.network_id}")
    page.wait_for_selector("#pareto-panel:not([hidden]) svg circle.front")
    assert page.locator("#pareto-chart circle.front").count() == len(front)
    assert page.locator("#pareto-chart path.infeasible").count() == 40 - len(feas)
    assert page.locator("#pareto-chart circle.feasible").count() == len(feas) - len(front)
    assert f"{len(front)} on the front of f1, f2" in page.text_content("#pareto-summary")
    assert not page.errors  # type: ignore[attr-defined]
    shot(page, "pareto")


def test_a_network_of_one_metric_has_no_front(config, start_dashboard, browser):  # noqa: F811
    r = rushhpc.Rush("one-" + uuid.uuid4().hex[:8], config=config)
    try:
        r.push_finished_tasks([{"x": i} for i in range(3)], [{"y": float(i)} for i in range(3)])
        d = start_dashboard("--network", r.network_id)
        assert get_json(d.base + f"/api/{r.network_id}/pareto")["multi"] is False
        page = new_page(browser, [])
        page.goto(d.base + f"/?network={r.network_id}")
        page.wait_for_function("document.getElementById('count-finished').textContent === '3'")
        page.wait_for_selector("#best-chart canvas")
        assert page.locator("#pareto-panel").is_hidden()
    finally:
        r.reset()
        r.close()
