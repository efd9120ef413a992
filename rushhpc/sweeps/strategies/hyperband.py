"""``hyperband``: asynchronous Hyperband (Li et al., JMLR 2018 and MLSys 2020; as Syne Tune's and Ray Tune's).

Options as `asha` (``eta``, ``sampler``: random or tpe) and the same ``fidelity: {name, min, max}`` and rungs. Bracket ``b``
(``0 .. len(rungs) - 1``) starts at rung ``b``: its configurations begin at that rung's fidelity, and the bracket
runs successive halving from there, with rankings of its own per rung. A free worker draws a bracket for its claim,
seeded, with Hyperband's proportions (`asha.bracket_weights`: bracket ``b`` as often as synchronous Hyperband
starts configurations in it), then claims in that bracket as ASHA does in its one: the highest rung's promotion
first, else a new configuration at the bracket's lowest rung. The claim is the same Lua step (asha_claim.lua, with
the bracket's rung keys and its rung offset). Results carry a ``bracket`` column.
"""

from __future__ import annotations

from rushhpc.sweeps.strategies import MODEL, Strategy, register
from rushhpc.sweeps.strategies.asha import _no_sampler, asha_loop, options, resume_state

STRATEGY = register(Strategy("hyperband", MODEL, keys=("eta", "sampler"), options=options, sampler=_no_sampler,
                             loop=asha_loop, needs_fidelity=True, resume=resume_state, module=__name__))
