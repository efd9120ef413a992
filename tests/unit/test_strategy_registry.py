"""Adding a sweep strategy is one file in rushhpc/sweeps/strategies/ (issue 18): every module there registers."""

from __future__ import annotations

import pkgutil

from rushhpc.sweeps import strategies


def test_every_file_of_the_strategies_folder_is_a_registered_strategy():
    files = {m.name for m in pkgutil.iter_modules(strategies.__path__) if not m.name.startswith("_")}
    registered = {strategies.get(name).module.rpartition(".")[2] for name in strategies.names()}
    assert files <= registered, f"modules that registered no strategy: {sorted(files - registered)}"
