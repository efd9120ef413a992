"""``sobol``: scipy's Sobol sequence (option ``scramble``, default true, with the seed); needs scipy."""

from __future__ import annotations

from rushhpc.sweeps.strategies import DESIGN, Strategy, _qmc, register

STRATEGY = register(Strategy("sobol", DESIGN, keys=("scramble",), options=_qmc.options, requires="scipy",
                             install=_qmc.SCIPY_HINT, design=_qmc.QmcDesign, module=__name__))
