"""The defaults of the monitor's CLI flags and of `Rush.adapt` are the ones in rushhpc/defaults.py
(issue 18: every tunable number lives there once; `--idle-timeout 60.0`, `--restart-budget 10` and
`--interval 5.0` were written out in ui/cli/control.py). No Redis: the parser only."""

from __future__ import annotations

import inspect

from rushhpc import defaults
from rushhpc.manager.rush import Rush
from rushhpc.ui.cli import build_parser


def test_monitor_flags_default_to_defaults(monkeypatch):
    for name in ("MONITOR_INTERVAL", "RESTART_BUDGET", "ADAPT_IDLE_TIMEOUT"):
        monkeypatch.setattr(defaults, name, getattr(defaults, name) + 7)  # a changed default reaches the CLI
    args = build_parser().parse_args(["monitor", "net-1"])
    assert (args.interval, args.restart_budget, args.idle_timeout) == (
        defaults.MONITOR_INTERVAL, defaults.RESTART_BUDGET, defaults.ADAPT_IDLE_TIMEOUT)


def test_adapt_defaults_are_the_defaults():
    params = inspect.signature(Rush.adapt).parameters
    assert params["idle_timeout"].default == defaults.ADAPT_IDLE_TIMEOUT
    assert params["max_failures"].default == defaults.ADAPT_MAX_FAILURES
    assert params["interval"].default == defaults.MONITOR_INTERVAL
