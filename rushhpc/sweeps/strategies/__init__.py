"""The sweep strategies: one file per strategy, and the registry that config, designs and the worker consult.

Each strategy is a `Strategy`: its name, its kind (``design``: points fixed by seed and index, handed
out by the manager; ``model``: each worker proposes from the tasks in Redis), the YAML keys it takes
under ``strategy:`` and how they are validated, the optional package it needs (with the install
hint), and its design (index -> point) or its sampler. Adding a strategy is one file here that calls
`register` (every module here is imported below), plus docs/sweeps.md and a test; a strategy from elsewhere (a plugin, a
test) calls `register` itself before the sweep is loaded.

Example:
    >>> from rushhpc.sweeps import strategies
    >>> strategies.names()
    ('random', 'grid', 'sobol', 'halton', 'lhs', 'tpe', 'optuna', 'asha', 'hyperband')
    >>> strategies.get("sobol").kind
    'design'
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from rushhpc.sweeps.designs import Design
    from rushhpc.sweeps.space import Space

DESIGN, MODEL = "design", "model"


class Checks(Protocol):
    """What a strategy's validation may call: the sweep file's checker (`rushhpc.sweeps.config.validate`).
    Each check returns the value or raises the sweep's error naming the key path."""

    def fail(self, path: str, expected: str, got: Any = ...) -> Exception: ...
    def int_(self, path: str, value: Any, minimum: int | None = None, or_null: bool = False) -> int: ...
    def bool_(self, path: str, value: Any) -> bool: ...
    def string(self, path: str, value: Any) -> str: ...


def _no_options(c: Checks, raw: dict[str, Any]) -> dict[str, Any]:
    return {}


def _no_check(c: Checks, strategy: dict[str, Any], space: dict[str, dict]) -> None:
    return None


@dataclass(frozen=True)
class Strategy:
    """One sweep strategy.

    - ``keys``: what ``strategy:`` may hold besides ``name``; ``options(c, raw)`` validates them and
      returns them normalised (defaults filled in, in the order config.yaml shows them).
    - ``requires`` / ``install``: the module it imports, and how to install it (checked before anything starts).
    - ``check(c, strategy, space)``: checks that need the space or the dependency (after ``requires``).
    - ``design(space, strategy, seed, evaluations)`` -> a `Design` (kind ``design``), or
      ``sampler(strategy, seed)`` -> an Optuna sampler built in each worker (kind ``model``).
    - ``finite``: its design has a size of its own, so the budget may be left out (grid);
      ``needs_evaluations``: the error when budget.evaluations is missing and the design needs it;
      ``budget_fixes_points``: a resumed sweep must keep budget.evaluations (lhs).
    - ``loop``: a worker loop of its own (asha), called with the model loop's arguments plus ``fidelity``
      and ``output``; ``needs_fidelity``: the sweep file must have ``fidelity:`` (and only then may);
      ``resume(cfg, records, rush)``: a resumed run's network gets the strategy's state from the journal (asha).
    - ``module``: where it is defined; a model strategy's workers import it (their registry is their own).
    """

    name: str
    kind: str
    keys: tuple[str, ...] = ()
    options: Callable[[Checks, dict[str, Any]], dict[str, Any]] = _no_options
    requires: str | None = None
    install: str = ""
    check: Callable[[Checks, dict[str, Any], dict[str, dict]], None] = _no_check
    design: Callable[[Space, dict, int, int | None], Design] | None = None
    sampler: Callable[[dict, int], Any] | None = None
    finite: bool = False
    needs_evaluations: str | None = None
    budget_fixes_points: bool = False
    loop: Callable[..., None] | None = None
    needs_fidelity: bool = False
    resume: Callable[[Any, Any, Any], None] | None = None  # (cfg, journal records, rush): seed a resumed run's network
    module: str = ""

    def missing_dependency(self) -> str | None:
        """The error text when ``requires`` cannot be imported here, else None."""
        if self.requires is None or importlib.util.find_spec(self.requires) is not None:
            return None
        return f"{self.name} needs {self.requires}: {self.install}"


_REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add (or replace) a strategy under its name; returns it.

    Example:
        >>> from rushhpc.sweeps.strategies import DESIGN, Strategy, register
        >>> register(Strategy("mine", DESIGN, design=MyDesign, module=__name__))  # doctest: +SKIP
    """
    if strategy.kind not in (DESIGN, MODEL):
        raise ValueError(f"strategy {strategy.name}: kind must be {DESIGN!r} or {MODEL!r}, not {strategy.kind!r}")
    if (strategy.design is None) == (strategy.kind == DESIGN):
        raise ValueError(f"strategy {strategy.name}: a design strategy has a design, a model strategy a sampler")
    _REGISTRY[strategy.name] = strategy
    return strategy


def unregister(name: str) -> None:
    """Remove a strategy (tests that registered one)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Strategy:
    """The strategy of this name (KeyError when none is registered)."""
    return _REGISTRY[name]


def load(name: str, module: str = "") -> Strategy:
    """The strategy of this name, importing ``module`` first when it is not registered here (a worker
    process, for a strategy registered outside rushhpc)."""
    if name not in _REGISTRY and module:
        importlib.import_module(module)
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Every strategy, in registration order (as error messages list them)."""
    return tuple(_REGISTRY)


def design_names() -> tuple[str, ...]:
    return tuple(n for n, s in _REGISTRY.items() if s.kind == DESIGN)


def is_design(name: str) -> bool:
    return _REGISTRY[name].kind == DESIGN


def make_design(space: Space, strategy: dict, seed: int, evaluations: int | None) -> Design:
    """The design (index -> point) of a design strategy, for this space, options, seed and budget."""
    build = _REGISTRY[strategy["name"]].design
    if build is None:
        raise ValueError(f"strategy {strategy['name']} proposes in its workers: it has no design")
    return build(space, strategy, seed, evaluations)


# Every module of this folder (not starting with _) is a strategy that registers itself: a new strategy
# is one new file. These first, in the order messages list them; any other after them, by name.
_ORDER = ("random", "grid", "sobol", "halton", "lhs", "tpe", "optuna_sampler", "asha", "hyperband")
_FOUND = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
for _m in (*_ORDER, *(m for m in _FOUND if m not in _ORDER)):
    importlib.import_module(f"{__name__}.{_m}")
