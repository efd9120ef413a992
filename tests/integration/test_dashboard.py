"""`rushhpc dashboard` end to end: the server as a subprocess (by pid), its JSON API through HTTP,
and the page in headless Chromium (Debian's ``chromium`` driven by Playwright's Python API).

The browser tests take the screenshots of docs/dashboard.md; they replace docs/img/dashboard-*.png only with
``RUSHHPC_UPDATE_SCREENSHOTS=1`` (otherwise a test run would rewrite tracked files). Without
Chromium or Playwright they skip with a reason, and fail when ``RUSHHPC_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from support import REPO, wait_until

import rushhpc
from rushhpc import queue_loop

pytest.importorskip("starlette", reason="the dashboard extra (starlette) is not installed")
pytest.importorskip("uvicorn", reason="the dashboard extra (uvicorn) is not installed")

from rushhpc.ui.dashboard.data import best_so_far, choose_objective, sort_rows, thin, to_csv  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

IMG = REPO / "docs" / "img"
STATIC = REPO / "rushhpc" / "ui" / "dashboard" / "static"


# ---------------------------------------------------------------------- the server, by pid
class Dashboard:
    """``python -m rushhpc dashboard ... --port 0`` in its own session; the URL and token are
    read from the lines it prints."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None):
        self.err_path = tmp / f"dashboard-{uuid.uuid4().hex[:6]}.err"
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "rushhpc", "dashboard", "--port", "0", "--interval", "0.5",
                                      *args], stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     env=env if env is not None else _env(), start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        line = wait_until(lambda: next((x for x in self.lines if "http://" in x), None) or self._died(), 30,
                          what="the dashboard to print its URL")
        m = re.search(r"http://[^/ ]+:(\d+)/", line)
        assert m, line
        self.port = int(m.group(1))
        self.base = f"http://127.0.0.1:{self.port}"
        self.token: str | None = None
        if "--host" in args or "--require-token" in args:
            tline = wait_until(lambda: next((x for x in self.lines if "access token" in x), None) or self._died(), 10,
                               what="the token line")
            self.token = tline.rsplit(" ", 1)[1].strip()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _died(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the dashboard exited ({self.proc.returncode}): {self.err_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.err.close()

    def output(self) -> str:
        return "".join(self.lines) + self.err_path.read_text()


def _env(config: Any = None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG"):
        env.pop(var, None)
    if config is not None:
        env["RUSHHPC_REDIS_URL"] = config.url()
    return env


@pytest.fixture
def password_file(config, tmp_path) -> Path:
    p = tmp_path / "redis.pw"
    p.write_text(config.password + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def start_dashboard(config, password_file, tmp_path):
    """start_dashboard(*args) -> a running Dashboard on the test Redis (URL + password file);
    every one started is stopped (by pid) at the end."""
    started: list[Dashboard] = []

    def start(*args: str) -> Dashboard:
        d = Dashboard(tmp_path, "--redis", f"redis://127.0.0.1:{config.port}", "--password-file", str(password_file),
                      *args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()
        assert config.password not in d.output(), "the dashboard printed the Redis password"


def http(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    h = {"content-type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def get_json(url: str, **kw: Any) -> Any:
    status, text, _ = http(url, **kw)
    assert status == 200, (status, text)
    return json.loads(text)


# ---------------------------------------------------------------------- networks to look at (and `busy`, in tests/conftest.py)
def slow(x):
    time.sleep(0.15)
    log = logging.getLogger("dash.test")
    log.info("evaluated x=%s", x)
    if x % 5 == 0:
        log.warning("x=%s is a multiple of 5", x)
    return {"y": (x - 7) ** 2 + 0.5, "loss": x / 10}


@pytest.fixture
def live(rush):
    """A live network: two local worker processes evaluating ``slow``."""
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=slow, heartbeat_period=0.5, heartbeat_expire=5,
                                   log_thresholds={"dash.test": "INFO"})
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    return rush, ids


@pytest.fixture
def second_network(config):
    """Another network on the same Redis (finished tasks, no workers)."""
    r = rushhpc.Rush("t2-" + uuid.uuid4().hex[:8], config=config)
    r.push_finished_tasks([{"lr": 0.1 * i} for i in range(1, 6)], [{"acc": 0.5 + 0.05 * i} for i in range(1, 6)])
    yield r
    r.reset()
    r.close()


# ---------------------------------------------------------------------- the browser
def require_browser() -> str:
    """Chromium's path, or skip with a reason (fail when CI set RUSHHPC_REQUIRE_BROWSER=1)."""
    chromium = shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401

        have_playwright = True
    except ImportError:
        have_playwright = False
    if chromium and have_playwright:
        return chromium
    how = ("apt-get install chromium" if not chromium else "") + (
        (" and " if not chromium else "") + "pip install playwright" if not have_playwright else "")
    if os.environ.get("RUSHHPC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a headless browser is required (RUSHHPC_REQUIRE_BROWSER=1) but not available: {how}")
    pytest.skip(f"no headless browser: {how}")


@pytest.fixture
def browser():
    chromium = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def new_page(browser, secrets_seen: list[str]):
    """A page that records every JSON/HTML/JS/CSV body it receives (to check no secret is in one)."""
    # bypass_csp: wait_for_function evaluates strings, which the page's CSP (no unsafe-eval) forbids
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True, bypass_csp=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def on_response(resp):
        if "event-stream" in (resp.headers.get("content-type") or ""):
            return
        try:
            secrets_seen.append(resp.text())
        except Exception:  # noqa: BLE001 - a redirect or an aborted body has none
            pass

    page.on("response", on_response)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def shot(page, name: str) -> None:
    # the page renders to a PNG in every run; the docs' copy changes only when asked
    folder = IMG if os.environ.get("RUSHHPC_UPDATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"dashboard-{name}.png" if folder == IMG else f"rushhpc-test-dashboard-{os.getpid()}-{name}.png")
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    if folder != IMG:
        path.unlink()


def count(page, what: str) -> int:
    return int(page.text_content(f"#count-{what}") or "-1")


# ---------------------------------------------------------------------- pure helpers
def test_objective_choice_and_best_so_far():
    assert choose_objective(["loss", "y"], ["x", "loss", "y"], None) == ("y", "minimize", "default")
    assert choose_objective(["loss", "acc"], ["x", "loss", "acc"], None) == ("loss", "minimize", "default")
    assert choose_objective([], ["x"], None) == ("x", "minimize", "default")
    assert choose_objective(["y", "acc"], ["y", "acc"], {"metric": "acc", "direction": "maximize"}) == \
        ("acc", "maximize", "sweep")
    assert choose_objective(["y", "acc"], ["y", "acc"], {"objective": "acc"}) == ("acc", "minimize", "sweep")
    assert choose_objective(["y"], ["y"], {"objective": "mod:fun", "direction": "maximize"}) == \
        ("y", "maximize", "sweep")
    assert choose_objective(["y", "acc"], ["y", "acc"], {"metric": "acc"}, "y", "maximize") == \
        ("y", "maximize", "user")
    assert best_so_far([3, None, 1, float("nan"), 2], "minimize") == ([1, 3, 5], [3, 1, 2], [3, 1, 1])
    assert best_so_far([1, 3, 2], "maximize") == ([1, 2, 3], [1, 3, 2], [1, 3, 3])
    xs, ys, best = best_so_far([(i * 7919) % 1000 for i in range(20_000)], "minimize")
    tx, ty, tb = thin(xs, ys, best, 500)
    assert len(tx) <= 520 and tx[-1] == xs[-1] and tb[-1] == best[-1]
    changes = {x for x, b, p in zip(xs[1:], best[1:], best) if b != p}
    assert changes <= set(tx)  # the best-so-far line keeps every step


def test_sorting_and_csv():
    rows = [{"a": 2}, {"a": None}, {"a": "b"}, {"a": 1}]
    assert [r["a"] for r in sort_rows(rows, "a", "asc")] == [1, 2, "b", None]
    assert [r["a"] for r in sort_rows(rows, "a", "desc")] == ["b", 2, 1, None]
    text = to_csv([{"x": -1.5, "msg": "=cmd()", "v": [1, 2], "finished_at": 0.0}], ["x", "msg", "v", "finished_at"])
    assert text.splitlines() == ["x,msg,v,finished_at", "-1.5,'=cmd(),\"[1,2]\",1970-01-01T00:00:00+00:00"]


def test_vendored_files_match_their_record():
    record = (STATIC / "THIRD_PARTY.md").read_text()
    for name in ("vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in record, name
    assert "MIT" in (STATIC / "vendor" / "uPlot.LICENSE").read_text()
    # every file of static/ is packaged (pyproject's package-data globs)
    line = re.search(r'^"rushhpc\.ui\.dashboard" = (\[.*\])$', (REPO / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml has no package-data for rushhpc.ui.dashboard"
    globs = json.loads(line.group(1))
    for f in STATIC.rglob("*"):
        if f.is_file():
            rel = f.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not in the wheel's package-data"
    # the page loads nothing from another host
    for f in ("index.html", "dashboard.js", "dashboard.css"):
        assert not re.search(r"(src|href)=[\"']https?://", (STATIC / f).read_text()), f


# ---------------------------------------------------------------------- the command
def test_dashboard_without_redis_or_network_fails_clearly(config):
    out = subprocess.run([sys.executable, "-m", "rushhpc", "dashboard", "--network", "x", "--port", "0"],
                         capture_output=True, text=True, timeout=60, env=_env())
    assert out.returncode == 2, out
    assert out.stderr.startswith("rushhpc: error: no Redis is configured") and len(out.stderr.splitlines()) == 1
    out = subprocess.run([sys.executable, "-m", "rushhpc", "dashboard", "--network", "no-such-net", "--port", "0"],
                         capture_output=True, text=True, timeout=60, env=_env(config))
    assert out.returncode == 2 and "no network 'no-such-net'" in out.stderr and "Traceback" not in out.stderr
    assert not config.connect().exists("{no-such-net}:meta")
    h = subprocess.run([sys.executable, "-m", "rushhpc", "dashboard", "--help"], capture_output=True, text=True,
                       timeout=60, env=_env())
    assert h.returncode == 0 and "--allow-control" in h.stdout


def test_api_reads_a_network(busy, second_network, start_dashboard, config):
    rush, w = busy
    net = rush.network_id
    d = start_dashboard("--network", net)
    base = d.base
    bodies: list[str] = []

    def get(path: str) -> Any:
        status, text, headers = http(base + path)
        assert status == 200, (path, status, text)
        assert "default-src 'self'" in headers.get("content-security-policy", "")
        bodies.append(text)
        return json.loads(text)

    cfg = get("/api/config")
    assert cfg["auth_required"] is False and cfg["allow_control"] is False and cfg["default_network"] == net
    assert cfg["redis"] == f"127.0.0.1:{config.port}"
    assert cfg["states"]["task"] == ["queued", "running", "finished", "failed"]  # what dashboard.js counts over
    nets = {n["network_id"]: n for n in get("/api/networks")["networks"]}
    assert {net, second_network.network_id} <= set(nets)
    assert nets[net]["tasks"] == {"queued": 2, "running": 1, "finished": 3, "failed": 1}

    workers = get(f"/api/{net}/workers")
    assert [r["worker_id"] for r in workers] == [w.worker_id] and workers[0]["state"] == "running"
    assert {"hostname", "job_id", "reason", "heartbeat_age"} <= set(workers[0]) and workers[0]["heartbeat_age"] < 5
    counts = get(f"/api/{net}/counts")
    assert counts["tasks"]["finished"] == 3 and counts["workers"]["running"] == 1
    snap = get(f"/api/{net}/snapshot")
    assert snap["tasks"] == counts["tasks"] and snap["workers"][0]["worker_id"] == w.worker_id

    fin = get(f"/api/{net}/tasks?state=finished&sort=y&order=desc")
    assert fin["total"] == 3 and [r["y"] for r in fin["rows"]] == [3.0, 2.0, 1.0]
    assert fin["outputs"] == ["y", "loss"] and fin["columns"][:3] == ["x", "y", "loss"]
    failed = get(f"/api/{net}/tasks?state=failed")
    assert [r["condition"] for r in failed["rows"]] == ["diverged"]
    assert get(f"/api/{net}/tasks?state=queued&limit=1")["total"] == 2

    logs = get(f"/api/{net}/logs?level=warning")
    assert [r["msg"] for r in logs["rows"]] == ["hello from the worker", "=HYPERLINK(1)"]
    later = get(f"/api/{net}/logs?after={logs['last_id']}")
    assert later["rows"] == []
    assert len(get(f"/api/{net}/logs")["rows"]) == 3

    best = get(f"/api/{net}/best")
    assert (best["column"], best["direction"], best["source"]) == ("y", "minimize", "default")
    assert best["y"] == [3.0, 1.0, 2.0] and best["best"] == [3.0, 1.0, 1.0] and best["columns"][:2] == ["y", "loss"]
    assert get(f"/api/{net}/best?column=loss&direction=maximize")["best"] == [0.5, 0.9, 0.9]
    rush.connector.set(rush.keys.prefix + "sweep", json.dumps({"objective": "mymod:f", "metric": "loss",
                                                                "direction": "maximize"}))
    best = get(f"/api/{net}/best")
    assert (best["column"], best["direction"], best["source"]) == ("loss", "maximize", "sweep")
    rush.connector.delete(rush.keys.prefix + "sweep")
    from rushhpc.core.records import SweepInfo  # what rushhpc sweep writes: a hash, through Network.set_sweep_info

    rush.set_sweep_info(SweepInfo("s", "tpe", "loss", "maximize", evaluations=10))
    best = get(f"/api/{net}/best")
    assert (best["column"], best["direction"], best["source"]) == ("loss", "maximize", "sweep")
    summary = {d["network_id"]: d for d in get("/api/networks")["networks"]}[net]
    assert summary["sweep"]["metric"] == "loss" and summary["sweep"]["evaluations"] == 10
    rush.connector.delete(rush.keys.sweep)

    tl = get(f"/api/{net}/timeline")
    assert tl["workers"][0]["worker_id"] == w.worker_id and len(tl["tasks"]) == 4  # 3 finished, 1 running

    status, text, headers = http(f"{base}/api/{net}/results.csv?sort=y")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    lines = text.splitlines()
    assert lines[0].startswith("x,y,loss,worker_id") and len(lines) == 4
    assert [ln.split(",")[1] for ln in lines[1:]] == ["1.0", "2.0", "3.0"]
    bodies.append(text)

    # errors: one line, a status that says what
    status, text, _ = http(f"{base}/api/no-such-net/workers")
    assert status == 404 and "no network 'no-such-net'" in json.loads(text)["error"]
    assert http(f"{base}/api/{net}/tasks?state=nope")[0] == 400
    assert http(f"{base}/api/{net}/best?column=nope")[0] == 400
    assert http(f"{base}/api/bad%20id/workers")[0] == 400

    # read only: stop is refused, the worker is untouched
    # terminate, not kill: were it let through, a kill would make busy's heartbeat SIGKILL this test process
    status, text, _ = http(f"{base}/api/{net}/stop", "POST", {"type": "terminate", "workers": "all"},
                           headers={"x-rushhpc-csrf": cfg["csrf"]})
    assert status == 403 and "--allow-control" in json.loads(text)["error"]
    assert rush.running_worker_ids == [w.worker_id] and not w.terminated

    # DNS rebinding: a request addressed to another host name is not served
    status, _, _ = http(f"{base}/api/networks", headers={"Host": f"evil.example:{d.port}"})
    assert status == 421
    assert http(f"{base}/api/networks", headers={"Host": f"localhost:{d.port}"})[0] == 200

    status, page, _ = http(base + "/")
    assert status == 200 and "dashboard.js" in page
    bodies.append(page)
    assert all(config.password not in b for b in bodies)
    assert not rush.connector.exists(rush.keys.prefix + "sweep")


def test_stop_api_needs_control_json_csrf_and_same_origin(busy, start_dashboard):
    rush, w = busy
    net = rush.network_id
    d = start_dashboard("--network", net, "--allow-control")
    cfg = get_json(d.base + "/api/config")
    assert cfg["allow_control"] is True
    url = f"{d.base}/api/{net}/stop"
    good = {"x-rushhpc-csrf": cfg["csrf"]}
    body = {"type": "terminate", "workers": [w.worker_id]}
    assert http(url, "POST", body)[0] == 403  # no CSRF header
    assert http(url, "POST", body, headers={"x-rushhpc-csrf": "guess"})[0] == 403
    assert http(url, "POST", body, headers={**good, "origin": "http://evil.example"})[0] == 403
    form = urllib.parse.urlencode(body).encode()
    assert http(url, "POST", form, headers={**good, "content-type": "application/x-www-form-urlencoded"})[0] == 403
    assert not w.terminated
    status, text, _ = http(url, "POST", {"type": "terminate", "workers": ["w-nobody"]}, headers=good)
    assert status == 400 and "no worker w-nobody" in text
    assert http(url, "POST", {"type": "explode", "workers": "all"}, headers=good)[0] == 400
    status, text, _ = http(url, "POST", body, headers={**good, "origin": d.base})
    assert status == 200, text
    assert json.loads(text) == {"network": net, "type": "terminate", "workers": [w.worker_id]}
    assert w.terminated


def test_token_off_loopback(busy, start_dashboard):
    rush, _ = busy
    d = start_dashboard("--network", rush.network_id, "--host", "0.0.0.0")
    assert d.token and len(d.token) >= 24
    assert sum(d.token in line for line in d.lines) == 1  # printed once
    cfg = get_json(d.base + "/api/config")
    assert cfg == {"auth_required": True, "authenticated": False, "version": cfg["version"]}  # no csrf, no network
    for path in ("/api/networks", f"/api/{rush.network_id}/workers", f"/api/{rush.network_id}/events"):
        assert http(d.base + path)[0] == 401, path
    assert http(d.base + "/api/login", "POST", {"token": "wrong"})[0] == 401
    status, _, headers = http(d.base + "/api/login", "POST", {"token": d.token})
    assert status == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and d.token not in cookie
    session = cookie.split(";")[0]
    assert get_json(d.base + "/api/networks", headers={"cookie": session})["networks"]
    assert get_json(d.base + "/api/networks", headers={"authorization": f"Bearer {d.token}"})["networks"]
    assert http(d.base + "/api/networks", headers={"cookie": "rushhpc_dashboard=forged"})[0] == 401
    # on loopback too, when asked (a shared login node)
    d2 = start_dashboard("--network", rush.network_id, "--require-token")
    assert d2.token and d2.token != d.token
    assert http(d2.base + "/api/networks")[0] == 401
    assert get_json(d2.base + "/api/networks", headers={"authorization": f"Bearer {d2.token}"})["networks"]
    assert http(d2.base + "/api/networks", headers={"authorization": f"Bearer {d2.token}",
                                                    "Host": f"evil.example:{d2.port}"})[0] == 421


# ---------------------------------------------------------------------- in the browser
def test_page_live_network_counts_logs_results_and_stop(live, second_network, start_dashboard, browser, config,
                                                        tmp_path):
    rush, ids = live
    net = rush.network_id
    rush.push_tasks([{"x": i} for i in range(6)])
    d = start_dashboard("--network", net, "--allow-control")
    bodies: list[str] = []
    page = new_page(browser, bodies)
    page.goto(d.base + "/")

    # the workers of the live network, live
    page.wait_for_function("document.querySelectorAll('#workers-body tr[data-state=running]').length === 2")
    shown = page.eval_on_selector_all("#workers-body tr", "rows => rows.map(r => r.dataset.workerId)")
    assert sorted(shown) == sorted(ids)
    host = page.text_content(f"#workers-body tr[data-worker-id='{ids[0]}'] td:nth-child(3)")
    assert host == rush.worker_rows()[0]["hostname"]
    assert page.text_content("#control-mode") == "control enabled"

    # the counts change as tasks finish (every value the counter shows is recorded)
    page.wait_for_function("document.getElementById('count-finished').textContent === '6'", timeout=30_000)
    page.evaluate("""() => { window.seenFinished = [document.getElementById('count-finished').textContent];
        new MutationObserver(() => window.seenFinished.push(document.getElementById('count-finished').textContent))
            .observe(document.getElementById('count-finished'), {childList: true, characterData: true, subtree: true}); }""")
    rush.push_tasks([{"x": i} for i in range(6, 30)])
    page.wait_for_function("document.getElementById('count-finished').textContent === '30'", timeout=60_000)
    seen = [int(v) for v in page.evaluate("window.seenFinished")]
    assert seen == sorted(seen) and seen[0] == 6 and seen[-1] == 30 and len(set(seen)) >= 3, seen
    page.wait_for_function("document.getElementById('throughput').textContent !== '–'", timeout=15_000)

    # best so far: y by default, minimize; the best of (x-7)^2+0.5 is 0.5 at x=7
    page.wait_for_selector("#best-chart canvas")
    page.wait_for_function("document.getElementById('best-summary').textContent.includes('of 30 finished')",
                           timeout=15_000)
    assert page.input_value("#objective-select") == "y" and page.input_value("#direction-select") == "minimize"
    assert "best y = 0.5" in page.text_content("#best-summary") and "x=7" in page.text_content("#best-summary")
    page.wait_for_function("document.querySelectorAll('#timeline rect.lane').length === 2")
    assert page.locator("#timeline rect.task").count() >= 30

    # logs with a level filter
    page.wait_for_function("document.querySelectorAll('#logs-body tr[data-level=INFO]').length >= 30", timeout=15_000)
    page.select_option("#log-level", "WARNING")
    page.wait_for_function("document.querySelectorAll('#logs-body tr').length > 0 && "
                           "[...document.querySelectorAll('#logs-body tr')].every(r => r.dataset.level === 'WARNING')")
    msgs = page.eval_on_selector_all("#logs-body td.msg", "tds => tds.map(t => t.textContent)")
    assert sorted(msgs) == sorted(f"x={x} is a multiple of 5" for x in range(0, 30, 5))

    # results: sort by a column (both ways), then download the CSV
    page.wait_for_function("document.getElementById('results-info').textContent.includes('of 30, newest first')")
    newest = page.text_content("#results-table tbody tr:first-child")
    assert newest is not None and rush.fetch_finished_tasks()["worker_id"].iloc[-1] in newest
    page.click("#results-table th[data-col=y]")
    page.wait_for_selector("#results-table th.sorted-asc[data-col=y]")
    col = page.eval_on_selector_all("#results-table th", "ths => ths.map(t => t.dataset.col)").index("y") + 1
    ys = [float(t) for t in page.eval_on_selector_all(f"#results-table tbody td:nth-child({col})",
                                                      "tds => tds.map(t => t.textContent)")]
    assert ys == sorted(ys) and ys[0] == 0.5 and len(ys) == 30
    page.click("#results-table th[data-col=y]")
    page.wait_for_selector("#results-table th.sorted-desc[data-col=y]")
    first = float(page.text_content(f"#results-table tbody tr:first-child td:nth-child({col})"))
    assert first == max(ys)
    with page.expect_download() as dl:
        page.click("#csv-link")
    path = tmp_path / "results.csv"
    dl.value.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("x,y,loss,worker_id") and len(lines) == 31
    assert float(lines[1].split(",")[1]) == max(ys)  # the download follows the table's sort
    page.select_option("#log-level", "")
    page.wait_for_function("document.querySelectorAll('#logs-body tr[data-level=INFO]').length >= 30")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "overview")

    # several networks on one Redis: listed and selectable
    options = page.eval_on_selector_all("#network-select option", "os => os.map(o => o.value)")
    assert {net, second_network.network_id} <= set(options)
    page.select_option("#network-select", second_network.network_id)
    page.wait_for_function("document.getElementById('count-finished').textContent === '5'")
    page.wait_for_function("document.getElementById('best-summary').textContent.includes('best acc')")
    assert "no workers" in page.text_content("#workers-body")
    assert f"network={second_network.network_id}" in page.url
    page.select_option("#network-select", net)
    page.wait_for_function("document.querySelectorAll('#workers-body tr[data-state=running]').length === 2")
    n_logs = len(rush.read_log())
    page.wait_for_function(f"document.querySelectorAll('#logs-body tr').length === {n_logs}")
    time.sleep(1.5)  # a few live updates later: no record is shown twice
    assert page.locator("#logs-body tr").count() == n_logs
    ids_shown = page.eval_on_selector_all("#logs-body td.msg", "tds => tds.map(t => t.textContent)")
    assert len(ids_shown) == len(set(ids_shown))

    # stop one worker from the page: a confirmation first, then it ends terminated
    target, other = ids
    page.click(f"#workers-body tr[data-worker-id='{target}'] button.btn-terminate")
    page.wait_for_selector("#confirm[open]")
    assert target in page.text_content("#confirm-title")
    shot(page, "confirm")
    page.click("#confirm-cancel")
    page.wait_for_selector("#confirm[open]", state="detached")
    time.sleep(1.0)
    assert rush.worker_rows()[0]["state"] == "running" and set(rush.running_worker_ids) == set(ids)
    page.click(f"#workers-body tr[data-worker-id='{target}'] button.btn-terminate")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    wait_until(lambda: {r["worker_id"]: r["state"] for r in rush.worker_rows()}[target] == "terminated", 30,
               what="the worker stopped from the page to end terminated")
    page.wait_for_selector(f"#workers-body tr[data-worker-id='{target}'][data-state=terminated]", timeout=15_000)
    assert rush.running_worker_ids == [other]
    time.sleep(1.0)
    shot(page, "stopped")
    # and kill the other one: it ends killed
    page.click(f"#workers-body tr[data-worker-id='{other}'] button.btn-kill")
    page.wait_for_selector("#confirm[open]")
    assert "Kill worker" in page.text_content("#confirm-title")
    page.click("#confirm-ok")
    wait_until(lambda: {r["worker_id"]: r["state"] for r in rush.worker_rows()}[other] == "killed", 30,
               what="the worker killed from the page to end killed")
    page.wait_for_selector(f"#workers-body tr[data-worker-id='{other}'][data-state=killed]", timeout=15_000)
    assert page.locator("#terminate-all").is_disabled() and page.locator("#kill-all").is_disabled()

    # the Redis password is in no page, response or output
    bodies.append(page.content())
    bodies.append(http(f"{d.base}/api/{net}/snapshot")[1])
    assert all(config.password not in b for b in bodies)
    assert page.errors == []  # type: ignore[attr-defined]


def test_page_refuses_control_without_allow_control(live, start_dashboard, browser):
    rush, ids = live
    d = start_dashboard("--network", rush.network_id)
    page = new_page(browser, [])
    page.goto(d.base + f"/?network={rush.network_id}")
    page.wait_for_function("document.querySelectorAll('#workers-body tr[data-state=running]').length === 2")
    assert page.text_content("#control-mode") == "read only"
    buttons = page.locator("button.control")
    assert buttons.count() == 2 + 2 * len(ids)
    for i in range(buttons.count()):
        assert buttons.nth(i).is_disabled()
        assert "--allow-control" in (buttons.nth(i).get_attribute("title") or "")
    page.click(f"#workers-body tr[data-worker-id='{ids[0]}'] button.btn-kill", force=True)
    assert page.locator("#confirm[open]").count() == 0
    # the page's own request, with its CSRF value, is refused by the server too
    status = page.evaluate("""async (net) => {
        const cfg = await (await fetch('/api/config')).json();
        const r = await fetch('/api/' + net + '/stop', {method: 'POST',
            headers: {'content-type': 'application/json', 'x-rushhpc-csrf': cfg.csrf},
            body: JSON.stringify({type: 'kill', workers: 'all'})});
        return [r.status, (await r.json()).error];
    }""", rush.network_id)
    assert status[0] == 403 and "--allow-control" in status[1]
    time.sleep(1.0)
    assert sorted(rush.running_worker_ids) == sorted(ids)
    rush.push_tasks([{"x": i} for i in range(12)])  # something to show in the screenshot
    page.wait_for_function("document.getElementById('count-finished').textContent === '12'", timeout=30_000)
    page.wait_for_selector("#best-chart canvas")
    page.wait_for_function("document.getElementById('results-info').textContent.includes('of 12')")
    assert sorted(rush.running_worker_ids) == sorted(ids)
    time.sleep(0.5)
    shot(page, "read-only")


def test_page_asks_for_the_token_off_loopback(busy, start_dashboard, browser):
    rush, w = busy
    d = start_dashboard("--network", rush.network_id, "--host", "0.0.0.0")
    page = new_page(browser, [])
    page.goto(d.base + "/")
    page.wait_for_selector("#login:not([hidden])")
    assert page.locator("#login").is_visible() and page.locator("#main").is_hidden()
    assert page.locator("#network-select").is_hidden()
    page.fill("#token-input", "not-the-token")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:not([hidden])")
    shot(page, "login")
    page.fill("#token-input", d.token)
    page.click("#login-form button")
    page.wait_for_selector(f"#workers-body tr[data-worker-id='{w.worker_id}']")
    assert page.locator("#login").is_hidden() and page.locator("#main").is_visible()
    page.wait_for_function("document.getElementById('count-finished').textContent === '3'")
    assert d.token not in page.content()


def test_polling_fallback_with_dump_dom(busy, start_dashboard, config):
    """``?poll=1``: the page polls /snapshot instead of holding an event stream, so chromium's
    ``--dump-dom`` (which waits for open requests) can print the page after its scripts ran."""
    chromium = require_browser()
    rush, w = busy
    d = start_dashboard("--network", rush.network_id)
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", f"{d.base}/?network={rush.network_id}&poll=1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    assert f'data-worker-id="{w.worker_id}"' in dom and 'data-state="running"' in dom
    assert re.search(r'id="count-finished"[^>]*>3<', dom) and re.search(r'id="count-failed"[^>]*>1<', dom)
    assert "hello from the worker" in dom and config.password not in dom
