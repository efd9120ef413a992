"""The one replace-under-budget loop (`rushhpc.manager.supervise.Replacer`), used by the monitor,
the sweep engine and the Hydra launcher: budget, what it says when the budget is short, and the
fresh starts that fill up what could not be replaced by id. Pure: no Redis (the monitor's
replacements on a real network are in test_workers.py and test_trust_core.py)."""

from __future__ import annotations

from typing import Sequence

from rushhpc.manager.supervise import Replacer


class Starter:
    """Stands in for the manager's replace_workers and start_workers: new ids, and what was asked."""

    def __init__(self, refuse: Sequence[str] = ()):
        self.n = 0
        self.asked: list[list[str]] = []
        self.fresh: list[int] = []
        self.refuse = set(refuse)  # lost ids without a launch record: replace_workers skips them

    def replace(self, ids: Sequence[str]) -> list[str]:
        self.asked.append(list(ids))
        return [self._new() for w in ids if w not in self.refuse]

    def start(self, n: int) -> list[str]:
        self.fresh.append(n)
        return [self._new() for _ in range(n)]

    def _new(self) -> str:
        self.n += 1
        return f"new{self.n}"


def test_replaces_within_the_budget_and_says_what_it_left():
    s, said = Starter(), []
    r = Replacer(s.replace, budget=2, exhausted="restart budget exhausted", say=said.append)
    assert r.replace(["a", "b", "c"]) == ["new1", "new2"]
    assert s.asked == [["a", "b"]] and r.budget == 0 and r.replaced == ["new1", "new2"]
    assert said == ["restart budget exhausted: 1 lost worker(s) not replaced"]
    assert r.replace(["d"]) == [] and s.asked == [["a", "b"]]  # nothing is started once the budget is spent
    assert said[-1] == "restart budget exhausted: 1 lost worker(s) not replaced"


def test_silent_without_exhausted_and_nothing_lost_nothing_started():
    s, said = Starter(), []
    r = Replacer(s.replace, budget=0, say=said.append)
    assert r.replace(["a"]) == [] and said == [] and s.asked == []
    r = Replacer(s.replace, budget=3, exhausted="x", say=said.append)
    assert r.replace([]) == [] and said == [] and s.asked == [] and r.budget == 3


def test_the_budget_counts_the_workers_started():
    """A lost id replace_workers cannot restart (no launch record) does not use the budget (the monitor's rule)."""
    s = Starter(refuse=["a"])
    r = Replacer(s.replace, budget=3)
    assert r.replace(["a", "b"]) == ["new1"] and r.budget == 2


def test_gone_workers_without_ids_start_fresh():
    """The sweep engine's case: k workers gone, some replaced by id (out of memory: more memory), the rest fresh."""
    s = Starter(refuse=["x"])
    r = Replacer(s.replace, budget=5, start=s.start)
    assert r.grant(7) == 5 and r.grant(2) == 2 and r.budget == 5  # grant takes nothing
    new = r.replace(["oom1", "x"], gone=4)
    assert s.asked == [["oom1", "x"]] and s.fresh == [3] and len(new) == 4 and r.budget == 1
    assert r.replace([], gone=3) == ["new5"] and s.fresh == [3, 1] and r.budget == 0
