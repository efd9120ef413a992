"""``sampler: tpe`` for asha and hyperband: new configurations from a TPE model of the highest rung with enough
results (the idea of BOHB, Falkner et al., ICML 2018), decentralized like the ``tpe`` strategy.

Before each claim, a worker reads the finished results of its bracket's highest rung that has at least
``max(SWEEP_ASHA_TPE_MIN_RESULTS, parameters + 1)`` of them (their parameters and scores, from Redis), fits Optuna's
TPESampler to them in a fresh in-memory study and asks it for one configuration. With fewer results at every rung,
or for a share ``SWEEP_ASHA_TPE_RANDOM`` of the claims (BOHB's random fraction, which keeps the model honest), the
configuration is drawn at random. The claim may promote instead of starting it: then the proposal is unused.
"""

from __future__ import annotations

from typing import Any, Sequence

from rushhpc import defaults
from rushhpc.core import codec


class TpeProposer:
    """Proposes a new configuration's parameters from the rankings in Redis.

    Example::

        prop = TpeProposer(space_spec, sp, protocol)
        params = prop.propose(rng, rung_ids=[0, 1, 2, 3], bracket=None)
    """

    def __init__(self, space: dict[str, dict], sp: Any, protocol: Any):
        import optuna

        from rushhpc.sweeps.worker import distributions

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dists = distributions(space)
        self.sp, self.protocol = sp, protocol
        self.min_results = max(defaults.SWEEP_ASHA_TPE_MIN_RESULTS, len(self.dists) + 1)
        self.modelled = 0  # proposals that came from the model (for tests and curiosity)

    def propose(self, rng: Any, rung_ids: Sequence[int], bracket: int | None) -> dict[str, Any]:
        if rng.random() >= defaults.SWEEP_ASHA_TPE_RANDOM:
            data = self.protocol.asha_model_data(list(rung_ids), bracket, self.min_results)
            if data:
                self.modelled += 1
                return self._from_model(data, int(rng.integers(2**31)))
        return self.sp.from_unit(rng.random(self.sp.n_dims))

    def _from_model(self, data: list[tuple[str, float]], seed: int) -> dict[str, Any]:
        import optuna
        from optuna.trial import TrialState, create_trial

        from rushhpc.sweeps.worker import suggest

        sampler = optuna.samplers.TPESampler(n_startup_trials=0, seed=seed)
        study = optuna.create_study(sampler=sampler, direction="minimize")  # scores: lower is better
        for xs, score in data:
            params = {k: v for k, v in (codec.decode(xs).get("params") or {}).items() if k in self.dists}
            try:
                study.add_trial(create_trial(params=params, distributions={k: self.dists[k] for k in params},
                                             value=score, state=TrialState.COMPLETE))
            except ValueError:  # a value outside today's space (a resumed sweep's space cannot change, but be safe)
                continue
        return suggest(study.ask(), self.sp)
