"""States, reasons and causes are enums (rushhpc/core/states.py), used everywhere in Python.

- No bare state, reason or cause string in rushhpc/**/*.py outside core/states.py: an AST scan.
- Every state word in the Lua scripts (rushhpc/store/lua/*.lua) is a value of the enums: a
  small Lua lexer reads every string literal outside comments.
- The enums hash, compare, print and serialize as their values.
No Redis, no SLURM: a unit test.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

from support import REPO

from rushhpc.core import states as S
from rushhpc.core.states import (
    FINAL_WORKER_STATES,
    TERMINAL_TASK_STATES,
    UNCOUNTED_REASONS,
    CancelCause,
    JobState,
    LostReason,
    Release,
    ServerState,
    SweepStatus,
    TaskState,
    WorkerState,
)

PKG = REPO / "rushhpc"
STATES_PY = "rushhpc/core/states.py"

# The enums whose values may not be written bare in Python. Release is left out: its values
# ("retry", "fail", "free", "hold") are the release modes the Lua scripts take, written only by
# core/states.py (Release.lua) and not states anything stores.
SCANNED = (TaskState, WorkerState, LostReason, CancelCause, JobState, SweepStatus, ServerState)
VALUES: dict[str, str] = {}  # value -> the members spelled so ("TaskState.FAILED or WorkerState.FAILED ...")
for _enum in SCANNED:
    for _m in _enum:
        VALUES[_m.value] = " or ".join(filter(None, [VALUES.get(_m.value), f"{_enum.__name__}.{_m.name}"]))

# A literal that is spelled like a state but means something else: (file, value) -> (how many, why).
# The count is exact, so a state written bare beside the homonym still fails the test.
HOMONYMS: dict[tuple[str, str], tuple[int, str]] = {
    ("rushhpc/sweeps/config/schema.py", "timeout"): (1, "the sweep YAML key `timeout`"),
    ("rushhpc/sweeps/config/validate.py", "timeout"): (3, "the sweep YAML key `timeout`"),
    ("rushhpc/sweeps/scheduling.py", "timeout"): (4, "the sweep YAML key `timeout`, given to the worker loop"),
    ("rushhpc/sweeps/state.py", "starting"): (1, "the sweep's phase before its workers run (PHASE_STARTING)"),
    ("rushhpc/sweeps/state.py", "cancelled"): (1, "summary.json's count of points done again"),
    ("rushhpc/sweeps/objective.py", "timeout"): (1, "the objective context's `timeout` key"),
    ("rushhpc/worker/command.py", "timeout"): (1, "the command objective's `timeout` option"),
    ("rushhpc/ui/cli/redis_cmd.py", "stopped"): (1, "the `stopped` flag of the reply of `rushhpc redis stop`"),
    ("rushhpc/server/service.py", "stopped"): (2, "the `stopped` flag of the reply of `stop` (rushhpc redis stop)"),
    ("rushhpc/store/diagnostics.py", "timeout"): (1, "a word searched for in a connection error's text"),
    ("rushhpc/manager/reconcile.py", "cancelled"): (1, "the launch record's field CANCELLED_AT (when the job was cancelled)"),
}


def _skipped_constants(tree: ast.AST) -> set[int]:
    """Docstrings (text for people) and the literal parts of f-strings (a message's words)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                skip.add(id(first.value))
        elif isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values if isinstance(v, ast.Constant))
    return skip


def bare_states(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every str constant in ``path`` equal to a scanned enum value."""
    tree = ast.parse(path.read_text())
    skip = _skipped_constants(tree)
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in VALUES and id(n) not in skip]


def scan_package() -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).as_posix()
        if rel != STATES_PY and (hits := bare_states(f)):
            found[rel] = hits
    return found


def test_the_scan_finds_what_it_should():
    # the scanner itself: a bare state is found, a docstring, an f-string's words and a member are not
    src = ('"""finished"""\nfrom rushhpc.core.states import TaskState\nx = "failed"\n'
           'def f():\n    """lost"""\n    return {"queued": 1}, f"running {x}", TaskState.FINISHED, "loop returned"\n')
    tree = ast.parse(src)
    skip = _skipped_constants(tree)
    hits = sorted((n.lineno, n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in VALUES and id(n) not in skip)
    assert hits == [(3, "failed"), (6, "loop returned"), (6, "queued")]


def test_no_bare_state_literals():
    found = scan_package()
    problems = []
    for rel, hits in found.items():
        counts = Counter(v for _, v in hits)
        for value, n in sorted(counts.items()):
            allowed, _why = HOMONYMS.get((rel, value), (0, ""))
            if n != allowed:
                lines = ", ".join(str(ln) for ln, v in hits if v == value)
                problems.append(f"{rel}: {value!r} x{n} (lines {lines}): write {VALUES[value]}"
                                + (f" ({allowed} allowed as a homonym)" if allowed else ""))
    for (rel, value), (_n, why) in HOMONYMS.items():
        if Counter(v for _, v in found.get(rel, []))[value] == 0:
            problems.append(f"{rel}: HOMONYMS lists {value!r} ({why}) but the file no longer has it: remove the entry")
    assert not problems, "bare state strings (use the enums of rushhpc/core/states.py):\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------- Lua

LUA_DIR = PKG / "store" / "lua"
# What a Lua script may compare or store as a state: task and worker states, lost reasons,
# and the reply for a worker with no hash.
LUA_STATES = {m.value for e in (TaskState, WorkerState, LostReason) for m in e} | {S.UNREGISTERED}
RELEASE_MODES = {m.value for m in Release}
# Every other lower-case word a script may hold in quotes, each with what it is. A new word must be
# listed here or be a state: a misspelled state ('finshed') fails the test.
LUA_WORDS: dict[str, str] = {
    **{f: "a task hash field" for f in ("state", "worker_id", "xs", "xs_extra", "ys", "ys_extra", "condition",
                                         "created_at", "started_at", "finished_at", "attempt", "max_retries",
                                         "origin", "requeues", "pop_key", "pop_token", S.CANCEL_FIELD)},
    **{f: "a worker hash field" for f in ("reason", "last_reason", "restart", "terminate", "heartbeat_expire",
                                           "job_id", "managed", "stopped_at")},
    "schema": "the network meta field",
    "worker": "the value of a task's origin field (pushed by a worker)",
    "keys": "a fetch.lua mode / the JSON field", "range": "a fetch.lua mode", "range_n": "a fetch.lua mode",
    "states": "a fetch.lua mode",
    "asha_done": "an asha task hash field (asha_finish.lua: evaluated, never promoted again)",
}
# Release modes reach the scripts as ARGV; helpers.lua compares them ('1' retry, '0' fail, 'free', 'hold').


def lua_strings(text: str) -> list[tuple[int, int, str]]:
    """(line, offset, value) of every string literal outside comments: '..', "..", [[..]], [=[..]=]."""
    out: list[tuple[int, int, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            m = re.match(r"--\[(=*)\[", text[i:])
            if m:
                end = text.find("]" + m.group(1) + "]", i + m.end())
                i = n if end < 0 else end + len(m.group(1)) + 2
            else:
                end = text.find("\n", i)
                i = n if end < 0 else end
        elif c in "'\"":
            j, buf = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\":
                    buf.append(text[j:j + 2])
                    j += 2
                    continue
                assert text[j] != "\n", f"unterminated string at line {text.count(chr(10), 0, i) + 1}"
                buf.append(text[j])
                j += 1
            out.append((text.count("\n", 0, i) + 1, i, "".join(buf)))
            i = j + 1
        elif (m := re.match(r"\[(=*)\[", text[i:])) and (i == 0 or not re.match(r"[\w\])]", text[i - 1])):
            end = text.find("]" + m.group(1) + "]", i + m.end())
            out.append((text.count("\n", 0, i) + 1, i, text[i + m.end():end]))
            i = end + len(m.group(1)) + 2
        else:
            i += 1
    return out


def _in_hset(text: str, at: int) -> bool:
    """Whether offset ``at`` is an argument of a ``redis.call('HSET', ...)`` still open there."""
    call = text.rfind("redis.call(", 0, at)
    seg = text[call:at]
    return call >= 0 and seg.startswith("redis.call('HSET'") and seg.count("(") > seg.count(")")


def test_lua_lexer():
    src = "-- 'lost' in a comment\n--[[ 'failed'\n]] local a = 'queued' -- 'x'\nlocal b = \"run\\\"ning\" .. [[finished]]\n"
    assert [(ln, v) for ln, _, v in lua_strings(src)] == [(3, "queued"), (4, 'run\\"ning'), (4, "finished")]


def test_lua_state_words_are_enum_values():
    assert not (LUA_STATES | RELEASE_MODES) & set(LUA_WORDS), "a word cannot be both a state and something else"
    problems, seen = [], set()
    for f in sorted(LUA_DIR.glob("*.lua")):
        text = f.read_text()
        for line, at, value in lua_strings(text):
            if not re.fullmatch(r"[a-z][a-z_]*", value):
                continue  # messages, key prefixes ('task:'), Redis commands, '0'/'1'/'*', patterns
            seen.add(value)
            if value not in LUA_STATES | RELEASE_MODES | set(LUA_WORDS):
                problems.append(f"{f.name}:{line}: {value!r} is neither a state of rushhpc/core/states.py nor a word "
                                "listed in LUA_WORDS")
                continue
            before = text[max(0, at - 40):at]
            # state positions: the value an HSET stores in a 'state' field, a value compared with a state read
            if re.search(r"'state',\s*$", before) and _in_hset(text, at) \
                    and value not in {*TaskState.values(), *WorkerState.values()}:
                problems.append(f"{f.name}:{line}: {value!r} stored as a state is not a TaskState/WorkerState value")
            if re.search(r"\bstate\s*[=~]=\s*$", before) and value not in LUA_STATES:
                problems.append(f"{f.name}:{line}: state compared with {value!r}, not a state")
    # every state the scripts write or read is one Python knows, and the check did see them
    assert {"queued", "running", "finished", "failed", "pending", "lost", "heartbeat_expired"} <= seen
    assert not problems, "\n".join(problems)


def test_lua_compared_states():
    # a comparison of anything with a quoted word: the word is a state, a release mode or a listed word
    problems = []
    for f in sorted(LUA_DIR.glob("*.lua")):
        text = f.read_text()
        for line, at, value in lua_strings(text):
            if re.search(r"[=~]=\s*$", text[max(0, at - 10):at]) and re.fullmatch(r"[a-z][a-z_]*", value) \
                    and value not in LUA_STATES | RELEASE_MODES | set(LUA_WORDS):
                problems.append(f"{f.name}:{line}: compared with {value!r}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------ the enums themselves

def test_members_hash_and_print_as_their_values():
    assert "lost" in FINAL_WORKER_STATES and "running" not in FINAL_WORKER_STATES
    assert {"finished": 1}[TaskState.FINISHED] == 1 and {TaskState.FAILED: 2}["failed"] == 2
    assert TERMINAL_TASK_STATES == {"finished", "failed"}
    assert "preempted" in UNCOUNTED_REASONS and LostReason("node_fail") in UNCOUNTED_REASONS
    assert WorkerState.LOST.final and not WorkerState.PENDING.final
    assert str(TaskState.QUEUED) == f"{TaskState.QUEUED}" == "%s" % TaskState.QUEUED == "queued"
    assert f"{WorkerState.LOST:>6}" == "  lost"
    assert json.dumps({TaskState.RUNNING: CancelCause.WORKER_KILLED}) == '{"running": "worker_killed"}'
    assert Release.of(True) is Release.RETRY and Release.of("hold").lua == "hold" and Release.FAIL.lua == "0"
    assert TaskState.values() == S.TASK_STATES == ("queued", "running", "finished", "failed")
    assert S.WORKER_STATES == WorkerState.values()


def test_values_are_unique_within_each_enum_and_distinct_from_fields():
    for e in (*SCANNED, Release):
        assert len({m.value for m in e}) == len(list(e)), e
    assert S.CANCEL_FIELD not in VALUES and S.UNREGISTERED not in VALUES
    # a cancel cause cannot be mistaken for a state or a reason
    assert not {m.value for m in CancelCause} & {v for v in VALUES if not VALUES[v].startswith("CancelCause")}


# ------------------------------------------------------------------------------ the dashboard page

STATIC = PKG / "ui" / "dashboard" / "static"
PAGE_STATES = {*TaskState.values(), *WorkerState.values(), *JobState.values()}


def test_dashboard_js_spells_no_list_of_states():
    """dashboard.js cannot import the enums: lists of states come from ``/api/config``
    (`rushhpc.ui.dashboard.app.states_doc`); each state it names singly is checked here."""
    js = (STATIC / "dashboard.js").read_text()
    problems = []
    for m in re.finditer(r"\b(?:state|st)\s*[!=]==?\s*\"([^\"]*)\"", js):
        if m.group(1) not in PAGE_STATES:
            problems.append(f"a state compared with {m.group(1)!r}")
    for line_no, line in enumerate(js.splitlines(), 1):
        if len(re.findall(r"\b(?:state|st)\s*[!=]==?\s*\"", line)) > 1:
            problems.append(f"line {line_no}: a chain of state comparisons: use S.config.states")
        for arr in re.findall(r"\[([^\[\]]*)\]", line):
            words = re.findall(r"\"([^\"]*)\"", arr)
            if len(words) > 1 and set(words) <= PAGE_STATES:
                problems.append(f"line {line_no}: a list of states {words}: use S.config.states")
    for name in re.findall(r"\bt\.(\w+)", js):  # t: a task-count object
        if name not in TaskState.values():
            problems.append(f"t.{name} is not a task state")
    for name in re.findall(r"worker_counts\.(\w+)", js):
        if name not in WorkerState.values():
            problems.append(f"worker_counts.{name} is not a worker state")
    default = re.search(r"results:\s*\{\s*state:\s*\"(\w+)\"", js)
    assert default and default.group(1) in TaskState.values()
    colors = re.search(r"STATE_COLORS = \{(.*?)\};", js, re.S)
    assert colors, "STATE_COLORS not found in dashboard.js"
    keys = set(re.findall(r"(\w+):\s*\"#", colors.group(1)))
    assert set(WorkerState.values()) <= keys <= PAGE_STATES, keys
    assert "S.config.states.task" in js and "S.config.states.alive" in js
    assert not problems, "\n".join(problems)


def test_dashboard_html_and_css_name_the_enum_states():
    html = (STATIC / "index.html").read_text()
    assert set(re.findall(r"id=\"count-(\w+)\"", html)) == set(TaskState.values())
    select = re.search(r"<select id=\"results-state\">(.*?)</select>", html, re.S)
    assert select and re.findall(r"<option value=\"(\w+)\"", select.group(1)) \
        and set(re.findall(r"<option value=\"(\w+)\"", select.group(1))) == set(TaskState.values())
    css = (STATIC / "dashboard.css").read_text()
    classes = set(re.findall(r"\.state\.(\w+)", css))
    assert set(WorkerState.values()) <= classes <= PAGE_STATES, classes


def test_dashboard_serves_the_states():
    from rushhpc.ui.dashboard.app import states_doc

    doc = states_doc()
    assert doc["task"] == list(TaskState.values()) and doc["worker"] == list(WorkerState.values())
    assert set(doc["terminal"]) == TERMINAL_TASK_STATES and set(doc["alive"]) == S.ALIVE_JOB_STATES
    assert "finished" in doc["terminal"] and "lost" not in doc["alive"]
