"""rushhpc.processes: the process helpers of the launchers, the embedded Redis and the heartbeat, in layer 0.

They moved out of rushhpc/worker (issue 18: the launchers and the embedded Redis imported the worker layer
for them). The heartbeat process runs this module alone (`python -I -S`, no rushhpc package), so it must
import the standard library only, and nothing heavy at import time.
"""

from __future__ import annotations

import ast
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psutil
from support import wait_until

from rushhpc import processes


def test_processes_imports_only_the_light_standard_library():
    tree = ast.parse(Path(processes.__file__).read_text())
    top = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    top += [n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in top), top
    assert not {"typing", "subprocess", "ctypes"} & set(top)  # the heartbeat's memory counts (worker/beat.py)
    everywhere = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in everywhere), everywhere


def test_marked_finds_what_a_worker_started_and_kill_tree_ends_it():
    """A worker's mark (its token in the environment) is inherited by its program's children; marked()
    finds them all (what the heartbeat stops when the worker died), kill_tree() ends the tree."""
    token = secrets.token_hex(8)
    env = {**os.environ, processes.WORKER_TOKEN_VARIABLE: token}
    other = subprocess.Popen(["sleep", "60"])  # not marked
    tree = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 61 & wait"], env=env)
    try:
        wait_until(lambda: len(psutil.Process(tree.pid).children()) == 2, 10, what="the program's children")
        kids = {p.pid for p in psutil.Process(tree.pid).children()}
        assert set(processes.marked(token)) == {tree.pid, *kids}
        assert other.pid not in processes.marked(token) and processes.alive(other.pid)
        processes.kill_tree(tree.pid)
        tree.wait(10)  # SIGKILLed, or ended as its children were (children go first)
        wait_until(lambda: not any(processes.alive(p) for p in kids), 10, what="the program's children to end")
        assert not processes.alive(tree.pid) and processes.alive(None) and processes.alive(other.pid)
    finally:
        for p in (other, tree):
            if p.poll() is None:
                p.kill()
            p.wait()
