"""rushhpc's launcher for Hydra: ``hydra/launcher=rushhpc`` runs a multirun's jobs on rushhpc workers.

Hydra finds it by scanning the ``hydra_plugins`` namespace package, which imports every public
module here; they import nothing heavy (rushhpc, pandas and redis load on the first launch).
Modules whose names start with ``_`` are not scanned: ``_core`` (the manager side) and ``_worker``
(the worker loop).
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._errors import RemoteTraceback, RushhpcJobError

__all__ = ["RemoteTraceback", "RushhpcJobError", "__version__"]
