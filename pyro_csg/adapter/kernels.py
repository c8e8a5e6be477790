"""Cyclical SG-MCMC kernels for :class:`pyro.infer.MCMC`: an adapter over the core sampler.

:class:`CyclicalKernel` builds the model's potential and a
:class:`~pyro_csg.core.sampler.SamplerConfig` at ``setup``, drives
:func:`~pyro_csg.core.sampler.start` and :func:`~pyro_csg.core.sampler.advance` in
``sample``, and records every draw with a :class:`~pyro_csg.services.resume.ChainRecord`
(which also resumes from checkpoints). A subclass only chooses its diffusion.
"""

from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ..core.checks import is_number
from ..core.diffusions import Diffusion, sghmc, sgld, sgnht
from ..core.noise import CycleNoise
from ..core.runaway import diverging_draws
from ..core.sampler import init_chain
from ..core.schedules import Schedule
from ..core.temperature import TemperatureCheck
from ..services.checkpoint import Checkpoint
from ..services.distributed import RankShare
from ..services.resume import ChainRecord, verify_potential
from ..services.store import STATS
from .chain_run import ChainRun, checks_attrs, checks_by_coordinate, estimator_attrs, tuning_attrs
from .chain_setup import (
    build_potential,
    compile_model_potential,
    fixed_hyperparameters,
    resume_settings,
    sampler_config,
    warn_changed_supports,
)
from .options import as_initial_params, kernel_options
from .potential import ModelPotential
from .pyro_runner import (
    Divergences,
    check_run_arguments,
    one_thread_in_worker,
    runner_chain,
    warn_partial_cycle,
)

__all__ = ["CyclicalKernel", "CyclicalSGLD", "CyclicalSGHMC", "CyclicalSGNHT"]


def _full_signature(init) -> inspect.Signature:
    """A subclass's ``__init__(model, potential_fn, *, its own, **kwargs)`` with
    ``**kwargs`` spelled out as :class:`CyclicalKernel`'s parameters, so that ``help()``
    and IDEs show every parameter."""
    own = inspect.signature(init)
    params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in params}
    base = inspect.signature(CyclicalKernel.__init__).parameters.values()
    return own.replace(parameters=params + [p for p in base if p.name not in names])


class CyclicalKernel(MCMCKernel):
    """The machinery the cyclical kernels share; a subclass names its diffusion
    (:meth:`build_diffusion`). Its arguments are :class:`CyclicalSGLD`'s."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # its own parameters, then the shared ones
            cls.__init__.__signature__ = _full_signature(cls.__init__)

    # False from a run's set-up until its clean-up: MCMC keeps the draws of its last
    # *finished* run, but the arguments of its last run (None: never set up here).
    _run_complete: bool | None = None

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
        *,
        step_size: float | None = None,
        step_scale: float = 1.0,
        steps_per_cycle: int = 1000,
        exploration_fraction: float = 0.5,
        exploration_noise: str = "auto",
        samples_per_cycle: int = 4,
        temperature: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        transforms: dict | None = None,
        schedule: Schedule | None = None,
        compile_potential: bool | str = True,
        checkpoint: str | os.PathLike | Checkpoint | None = None,
        control_variates: bool | None = None,
        preconditioner: bool | None = None,
        optimize_start: bool | None = None,
        process_group: Any = None,
        max_batch_size: int | None = None, full_mass: bool | None = None,
        **nuts_keywords: Any,  # a NUTS user's: answered by options.NUTS_KEYWORDS
    ) -> None:
        arguments = {k: v for k, v in locals().items() if k != "self"}  # checked, before work
        options = self.options = kernel_options(**arguments, name=type(self).__name__)
        self.model, self.potential_fn = options.model, options.potential_fn
        self.layout, self.schedule = options.layout, options.schedule
        self.steps_per_cycle: int = options.layout.steps_per_cycle
        self.exploration_fraction: float = options.layout.exploration_fraction
        self.exploration_noise: str = options.exploration_noise
        self.samples_per_cycle: int = options.layout.samples_per_cycle
        self.auto_step_size, self.temperature = options.auto_step_size, options.temperature
        self.control_variates = options.control_variates  # None: decided per model (sampler_config)
        self.preconditioner, self.optimize_start = options.preconditioner, options.optimize_start
        self.init_strategy, self.compile_potential = init_strategy, options.compile_potential
        self.checkpoint, self.process_group = options.checkpoint, process_group
        # As in Pyro's HMC: None until set-up, then {site: constrained -> unconstrained}.
        self.transforms = None if potential_fn is None or transforms is None else transforms
        self._share: RankShare | None = None  # this rank's share, data-parallel
        self._initial_params: dict[str, torch.Tensor] | None = None
        self._chains: dict[int, ChainRun] = {}
        self._current = self._loaded = None  # the ChainRun sampling; a state to go on from

    def build_diffusion(self) -> Diffusion:  # pragma: no cover - abstract
        """The diffusion this kernel runs, its hyperparameters bound."""
        raise NotImplementedError

    def _fixed(self) -> dict[str, Any]:
        """The constructor's settings (what a resumed run must share)."""
        return fixed_hyperparameters(self.options, self.build_diffusion(), type(self).__name__)

    # -- hyperparameters, for reports ------------------------------------------------------
    @property
    def step_size(self) -> float | None:
        """``eta_1``, the schedule's first (largest) step; with the automatic step size,
        the current chain's choice (``None`` before its start)."""
        if self.schedule is not None:
            return self.schedule(1)
        run = self._current or (self._chains[max(self._chains)] if self._chains else None)
        if run is None or run.state.tuning is None:
            return None
        return run.state.tuning.step_size

    def hyperparameters(self) -> dict[str, Any]:
        """The sampler's settings, for reports and ArviZ ``attrs``.

        Example::

            >>> from pyro_csg import CyclicalSGLD
            >>> CyclicalSGLD(lambda: None, step_size=0.01).hyperparameters()["schedule"]
            'CosineCyclical(step_size=0.01, steps_per_cycle=1000)'
        """
        settings = self._fixed()
        runs = [run for _, run in sorted(self._chains.items())]
        if self.auto_step_size:  # with an explicit step, the tuning's step is not used
            settings.update(tuning_attrs(runs))
        if self.control_variates is None:
            settings.update(estimator_attrs(runs))
        if self.optimize_start is not False:
            settings["start_steps"] = [run.state.start_steps for run in runs]
        settings.update(checks_attrs(runs))
        if runs:
            # One string (netCDF attrs keep no lists of strings): each chain's, if they differ.
            settings["potential_backend"] = ", ".join(dict.fromkeys(run.backend for run in runs))
        if self._share is not None:
            settings["data_parallel_ranks"] = self._share.world_size
        return settings

    # -- the MCMCKernel interface ----------------------------------------------------------
    @property
    def initial_params(self) -> dict[str, torch.Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor] | None) -> None:
        self._initial_params = as_initial_params(params)

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        """Trace the model once, find its subsampled plates, pick the start, give the chain
        its own generator, and resume from a checkpoint or a loaded state if there is one."""
        warmup_steps, in_runner = check_run_arguments(warmup_steps, self.samples_per_cycle)
        if in_runner:  # a run of Pyro's runner (not MCMC's transforms probe)
            self._run_complete = False
        index, num_chains = runner_chain()
        one_thread_in_worker()
        name, params = type(self).__name__, self._initial_params
        potential, theta, share = build_potential(self.options, params, args, kwargs, name)
        warn_partial_cycle(warmup_steps, self.samples_per_cycle, theta.numel())
        if isinstance(potential, ModelPotential):
            warn_changed_supports(self.transforms, potential.transforms, name)
            self.transforms = potential.transforms
        self._share = share
        # The chain's own generator, seeded from Pyro's (global) RNG: pyro.set_rng_seed
        # fixes it, and no other code that draws random numbers can shift its stream.
        seed = torch.randint(0, 2**62, (), device=theta.device)
        if share is not None:  # one chain on every rank: rank 0's seed and start
            seed = share.broadcast(seed)
            theta = share.broadcast(theta.clone())
        config = sampler_config(self.options, self.build_diffusion(), potential, name)
        chain, state = init_chain(potential, theta, config, int(seed.item()))
        record = ChainRecord(index, potential.sites, state, warmup_steps, share)
        noise = CycleNoise(config.diffusion.friction, self.temperature, self.layout)
        run = ChainRun(chain, record, noise, TemperatureCheck(self.temperature))
        run.watch_progress(num_chains, self.samples_per_cycle)
        if index == 0 or index in self._chains:
            self._chains = {}  # a new run
        self._chains[index] = self._current = run
        fixed = self._fixed()
        settings = resume_settings(fixed, potential, warmup_steps, num_chains, theta)
        record.set_settings(settings, args, kwargs)
        if share is not None:
            share.check_same(record.settings, "model, data and settings")
        if self.checkpoint is not None and self._loaded is not None:
            raise ValueError(
                "this kernel has both a loaded state (load_state_dict) and checkpoint=; "
                "give one: a checkpoint resumes by itself"
            )
        manifest = {"sites": [site.name for site in potential.sites], "num_params": theta.numel()}
        record.resume(
            self.checkpoint,
            self._loaded,
            {**manifest, "hyperparameters": fixed},
            lambda saved: chain.restore(saved, like=theta),
        )
        if record.verify:  # check now that the saved chain fits this model, before a replay
            self._start(run)
        self._initial_params = potential.unflatten(record.state.theta)
        record.last_draw = self._initial_params

    def cleanup(self) -> None:
        """After a chain's last draw: its final checkpoint and checks; free the potential."""
        run = self._current
        self._run_complete = True
        if run is not None and run.chain.potential is not None:
            run.finish()
            run.chain.release()
        self._current = self._initial_params = None

    # -- state, in PyTorch's convention ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The chains' states (of the run in progress or the last one), as plain tensors.

        ``{"format": 1, "settings": {...}, "chains": {chain index: ChainState dict}}``;
        ``torch.save`` writes it. A kernel given it by :meth:`load_state_dict` continues
        those chains at its next ``MCMC.run``: the run's draws are the chains' next ones.

        Example::

            >>> import torch, pyro, pyro.distributions as dist
            >>> from pyro.infer import MCMC
            >>> from pyro_csg import CyclicalSGHMC
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0))
            >>> kernel = CyclicalSGHMC(model, steps_per_cycle=20)
            >>> MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True).run()
            >>> saved = kernel.state_dict()
            >>> saved["chains"][0]["iteration"], saved["chains"][0]["draws"]
            (40, 8)
            >>> later = CyclicalSGHMC(model, steps_per_cycle=20)
            >>> later.load_state_dict(saved)
            >>> mcmc = MCMC(later, num_samples=4, warmup_steps=0, disable_progbar=True)
            >>> mcmc.run()
            >>> later.state_dict()["chains"][0]["iteration"]
            60
        """
        if not self._chains:
            if self._loaded is not None:
                return self._loaded
            raise RuntimeError(
                f"{type(self).__name__} has no chain state yet: run MCMC with it first"
            )
        return {
            "format": 1,
            "settings": next(iter(self._chains.values())).record.settings,
            "chains": {index: run.state.state_dict() for index, run in self._chains.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` at the next ``MCMC.run``.

        The settings (sampler, hyperparameters, sites, plates, data) must match; the
        chains go on from where they were: iteration, momentum, minibatch order and
        random stream included.
        """
        if not isinstance(state_dict, dict) or "chains" not in state_dict:
            raise TypeError("load_state_dict expects a dict from a cyclical kernel's state_dict()")
        self._loaded = state_dict

    # -- sampling --------------------------------------------------------------------------
    def _start(self, run: ChainRun) -> None:
        """First ``sample`` after the replay (or a resume's check at set-up): compile the
        potential, check a resumed state against the model, and start the chain."""
        potential = run.chain.potential
        if self.compile_potential and isinstance(potential, ModelPotential):
            run.backend = compile_model_potential(
                potential, run.state.theta, self.compile_potential, type(self).__name__
            )
        record = run.record
        if record.verify:
            record.verify = False
            verify_potential(run.chain, record.state)
        run.begin(self)  # a started state is kept as it is
        run.ready = True

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run up to the next retained iteration and return that draw (unconstrained)."""
        run = self._current
        if run is None or run.chain.potential is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before sample()")
        try:
            if run.record.replaying:
                return run.replay()
            return self._sample(run, params)
        except BaseException as error:
            run.record.stopped_early(error, self.samples_per_cycle)
            raise

    def _sample(self, run: ChainRun, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not run.ready:
            self._start(run)
        chain, record, state = run.chain, run.record, run.record.state
        if params is not record.last_draw:
            # Someone handed us other parameters than our last draw: continue from them.
            theta = chain.potential.flatten(params).to(state.theta)
            energy, grad = chain.gradient(state)(theta, chain.next_indices())
            state = record.state = chain.snapshot(state, theta, energy, grad)
        new = run.advance(state, self.layout)
        draw = chain.potential.unflatten(new.theta)
        kept = record.calls >= record.warmup_steps
        if kept:
            cycle = self.layout.cycle(new.iteration)
            noise = run.noise.measure(chain.gradient(new), chain.potential, new, cycle)
            new = run.noise.corrected(new, cycle)  # V follows the noise at the draws
            stats = {
                "cycle": cycle,
                "iteration": new.iteration,
                "step_size": new.step_size,
                "potential_energy": new.energy.item(),
                "noise_ratio": new.step_size * noise,
                "backoffs": new.backoffs - state.backoffs,
                "rejected": new.rejected - state.rejected,
            }
            record.keep(new, draw, stats)
        record.commit(new, draw, self.samples_per_cycle)
        if kept:  # after the commit: nothing more between a draw's store and its commit
            run.check(cycle, new.theta, new.grad)
        return draw

    def get_samples(self, chain: int | None = None) -> dict[str, torch.Tensor]:
        """The retained draws of a chain, constrained, as ``{site: tensor (draws, ...)}``,
        even when the run stopped early.

        ``MCMC.get_samples()`` has nothing after an exception (Ctrl-C, ``NonFiniteError``,
        an error in the model); this has every draw made before it. With ``checkpoint=``
        the draws are read from the store.

        :param int chain: which chain of the run (default: the one running, else the last).

        Example::

            >>> import torch, pyro, pyro.distributions as dist
            >>> from pyro.infer import MCMC
            >>> from pyro_csg import CyclicalSGLD
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0))
            >>> kernel = CyclicalSGLD(model, steps_per_cycle=20)
            >>> MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True).run()
            >>> kernel.get_samples()["z"].shape
            torch.Size([8])
        """
        if not self._chains:
            raise RuntimeError(f"{type(self).__name__} has not run yet")
        if chain is None:
            found = self._current or self._chains[max(self._chains)]
        elif chain in self._chains:
            found = self._chains[chain]
        else:
            raise ValueError(f"chain must be one of {sorted(self._chains)}, got {chain!r}")
        return found.record.constrained_draws()

    def logging(self) -> OrderedDict:
        return OrderedDict() if self._current is None else self._current.progress(self.layout)

    def diagnostics(self) -> dict[str, list]:
        """Per retained (post-warm-up) draw: cycle, iteration, step size, ``U~``, the
        minibatch noise ratio, back-offs and rejections; and the draws flagged diverging.

        ``noise_ratio``: the minibatch gradient's noise against the injected noise at the
        draw's step (:mod:`pyro_csg.core.noise`); the first call after a chain's last draw
        warns when it exceeds 1 in the median cycle at the sampling stage's first step.

        ``potential_energy`` is ``U~`` at the draw (on the next iteration's batch).
        ``backoffs`` and ``rejected`` count, per draw, the halvings of the automatic step
        and the proposals rejected because the potential became NaN or infinite
        (:func:`pyro_csg.core.sampler.advance_safely`). ``divergences`` lists the draws of
        cycles that sampled far above the chain's typical potential (a chain still
        travelling or running away; see :func:`pyro_csg.core.runaway.runaway_cycles`) and
        the draws with a rejection or a halving; the first call after a chain's last draw
        warns about them. It also makes ``az.from_pyro`` fail with a pointer to
        :func:`pyro_csg.to_inference_data`. Per coordinate, ``temperature_check`` (1 if
        right) and ``drift_check`` (moves across and within cycles, :mod:`~pyro_csg.core.drift`).
        """
        run = self._current
        if run is None:
            empty = {key: [] for key in STATS}
            return {**empty, "divergences": Divergences(), **checks_by_coordinate(None)}
        stats = run.kept_stats()
        diverging = Divergences(diverging_draws(stats, run.report(stats, self).draws))
        return {**stats, "divergences": diverging, **checks_by_coordinate(run)}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_chains"] = {}  # rebuilt by setup() in the process that samples
        state["_current"] = None
        return state


class CyclicalSGLD(CyclicalKernel):
    r"""Cyclical stochastic-gradient Langevin dynamics (cSGLD) for :class:`pyro.infer.MCMC`.

    Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian
    Deep Learning*, ICLR 2020; Welling and Teh, *Bayesian Learning via Stochastic Gradient
    Langevin Dynamics*, ICML 2011.

    **Update.** With ``U`` the full-data potential (the negative log joint in unconstrained
    space, Jacobians included, as in Pyro's HMC), ``U~`` its minibatch estimate, ``k = 1,
    2, ...`` the iteration, ``L = steps_per_cycle`` and ``beta = exploration_fraction``::

        eta_k  = (step_size / 2) * (cos(pi * mod(k - 1, L) / L) + 1)      (Eq. 1)
        stage  = exploration while mod(k - 1, L) / L < beta, sampling after
        theta <- theta - eta_k * grad U~(theta) + [sampling or noisy] sqrt(2 * eta_k * T) * xi

    with ``xi ~ N(0, I)``. Exploration steps add no noise: they are SGD, which carries the
    chain into a new mode at the start of every cycle; the sampling steps explore that mode.
    Once the cycles show one mode (``noisy``, by default; ``exploration_noise``), the
    exploration steps add the noise too: there the noise-free stage finds nothing new and
    pulls every cycle to the mode, so that draws along a slow direction come out too narrow.

    **Step size.** By default (``step_size=None``) chosen at the start of each chain, with
    a diagonal preconditioner ``G`` (see :mod:`pyro_csg.core.tuning`): the update then uses
    ``G * grad U~`` and ``sqrt(G) * xi``, and ``eta_1 = 1 / lambda_max`` is dimensionless;
    the measured minibatch noise is subtracted from the injected noise. An explicit
    ``step_size`` is in units of ``U``, which grows with the number of data points ``N``:
    a deep-learning learning rate ``lr`` on a *mean* loss corresponds to
    ``step_size = lr / N``.

    **Large data.** For a model with one subsampled plate the gradient is by default the
    control-variate estimate around a centre moved at the end of every exploration
    stage (:mod:`pyro_csg.core.estimators`), and an optimisation stage (Adam) brings the chain
    to the posterior's bulk before the first cycle.

    **Temperature.** ``T = 1`` (default) samples the posterior; ``T < 1`` a cold posterior
    ``p(theta | data) ** (1 / T)``, as the paper's deep-learning experiments do.

    **Draws and warm-up.** One call of ``sample`` -- one draw of ``MCMC`` -- runs the
    iterations up to the next retained one. The ``samples_per_cycle`` draws of a cycle are
    evenly spaced over its sampling stage, the last at the cycle's final step. So
    ``num_samples = num_cycles * samples_per_cycle``, and ``warmup_steps`` counts draws
    that are thrown away: ``MCMC`` defaults ``warmup_steps`` to ``num_samples``, which would
    discard as many cycles as it keeps. Pass ``warmup_steps=0`` (each cycle restarts from
    SGD, so there is no adaptation to wait for) or a multiple of ``samples_per_cycle``.

    **Minibatches.** The model declares its data plate as usual,
    ``pyro.plate("data", N, subsample_size=B)``; the kernel feeds every subsampled plate a
    new random permutation each epoch, cut into batches of ``B``. The plate's ``N / B``
    scale makes ``U~`` unbiased. Local latent variables inside a subsampled plate, discrete
    latents and models without latents are refused at set-up.

    :param model: a Pyro model (give this or ``potential_fn``).
    :param potential_fn: a callable from a dict of unconstrained tensors to the (possibly
        stochastic) potential; then pass ``initial_params`` to ``MCMC``.
    :param float step_size: the largest step size ``eta_1`` of each cycle, ``> 0``;
        ``None`` (default, without ``schedule``): chosen at the start.
    :param float step_scale: a factor on the automatic step, ``> 0`` (default 1): below 1
        where a warning says the step is too large for the curvature the chain met; the
        preconditioner stays (an explicit ``step_size`` is in other units and turns it off).
    :param int steps_per_cycle: ``L``, iterations per cycle (default 1000).
    :param float exploration_fraction: ``beta`` in [0, 1) (default 0.5). The paper's
        deep-learning runs use 0.8 to 0.9, which spends most of a cycle finding a mode; at
        temperature 1 a longer sampling stage gives better within-mode spread (on the
        breast-cancer logistic regression of notebook 1, the median ratio of posterior sds to
        NUTS's was 0.64 with 0.8 and 0.99 with 0.5, 20 cycles of 1000 steps).
    :param str exploration_noise: what the exploration stage does once it stops paying:
        ``"auto"`` (default): the paper's noise-free exploration until the retained
        draws' cycles show one mode with no trend (at least 10 cycles whose means spread
        with no gap, on every coordinate; models of at most 256 coordinates); from that
        cycle on, where the sampling stage mixes on its own (each cycle's draws spread
        over at least 0.7 of all draws' sd on every coordinate) the cycles skip their
        exploration stage, and where they spread over at least 0.8 run every ``r``-th
        position of their sampling stage (:func:`~pyro_csg.core.sampler.sampling_stride`,
        the most that keeps 25 iterations between draws: 5 with the defaults, a tenth of
        the cost), and elsewhere they explore with the sampling stage's Langevin noise (see
        :func:`pyro_csg.core.sampler.choose_exploration`). ``"never"``: the paper's
        noise-free exploration throughout, for multimodal targets that the first cycles
        may not show; ``"always"``: noise in the exploration stage from the first cycle.
        ``hyperparameters()["noisy_exploration_from"]`` says from which cycle each
        chain's exploration stopped being noise-free (-1: never) and
        ``["exploration_skipped_cycles"]`` how many cycles skipped it, and
        ``["sampling_stride"]`` the ``r`` of those cycles (1 where they run all of it).
    :param int samples_per_cycle: retained draws per cycle, at most the number of
        sampling-stage steps (default 4).
    :param float temperature: ``T > 0`` (default 1, the posterior).
    :param init_strategy: a Pyro ``init_to_*`` strategy (default ``init_to_uniform``, as
        HMC).
    :param dict transforms: optional ``{site: Transform}`` to unconstrained space; other
        sites get ``biject_to(support).inv``.
    :param schedule: a callable ``k -> eta_k`` replacing the cosine schedule, e.g.
        :class:`~pyro_csg.core.schedules.Constant` or
        :class:`~pyro_csg.core.schedules.PolynomialDecay` for plain SGLD baselines (then the
        "cycles" are blocks of ``steps_per_cycle`` iterations that set the thinning, and
        ``exploration_fraction=0`` keeps the noise on throughout).
    :param compile_potential: ``True`` (default): trace the model's potential and gradient
        into one graph at the first step (on the CPU run by TorchScript's interpreter where
        that gives the same results bit for bit:
        :func:`~pyro_csg.adapter.graph.fast_forward`); models that cannot be traced fall
        back to the eager potential with a warning. ``"inductor"``: also build that graph with
        :func:`torch.compile` (opt-in: it compiles for tens of seconds once, then fuses the
        step's kernels; see ``benchmarks/overhead.py --inductor``). ``False``: eager.
    :param checkpoint: a folder (or a :class:`~pyro_csg.Checkpoint`) for long runs: every
        retained draw is written there as it is made, the chain's state at the end of
        every cycle and when the run stops early, and running the same script again
        resumes (bit for bit on the CPU). See :mod:`pyro_csg.services.checkpoint`.
    :param bool control_variates: estimate gradients with control variates (default
        ``None``: for models with exactly one subsampled plate, where they pay: the
        automatic step's tuning measures the plain minibatch noise, and a chain keeps a
        centre where the noise cut its step more than twofold and the centre more than
        doubles it; with an explicit ``step_size`` the same measurement decides, and the
        step stays yours). Each step then evaluates the minibatch at two points and a
        cycle makes at most one full-data pass.
    :param bool preconditioner: a diagonal preconditioner measured at the start (default
        ``None``: with the automatic step size); with an explicit ``step_size`` it makes
        that step dimensionless.
    :param bool full_mass: a dense preconditioner (NUTS's ``full_mass=True``): ``G = H^-1``
        from the Hessian measured at the start, twice (the second time whitened by the
        first), for up to 256 parameters (:mod:`pyro_csg.core.mass`). Default ``None``:
        dense where the diagonal leaves a condition number above 100 cycles' steps
        (``hyperparameters()["curvature_condition"]``), or where it cannot be measured
        and a second pass, whitened by the first, agrees; ``False``: always diagonal.
    :param bool optimize_start: run Adam until the minibatch potential stops falling
        before the first cycle (default ``None``: yes; for a model without a subsampled
        plate whose stage becomes non-finite, the chain starts where it was, with a
        warning that names the likely funnel).
    :param process_group: data-parallel steps over ``torch.distributed`` (one chain whose
        minibatches are split over the ranks; see the docs' "Beyond one process"). ``None``
        (default): the default group when ``torch.distributed`` is initialised, else one
        process; ``False``: stay out of it (one independent chain per rank, merged later
        with :func:`~pyro_csg.merge_runs`); a ``ProcessGroup``: that group.
    :param int max_batch_size: where the minibatch noise cuts the automatic step
        twofold or more, the chain reads ``ceil(4 B cut)`` indices of its one subsampled
        plate a step instead of ``B`` (the plate scaled to match), up to this many (default
        ``None``: ``N``, ``64 B``, 65,536 and ``2^20`` parameter-datum products, and only
        where that at least doubles ``B``, so a network keeps its batch; ``B`` or less:
        never). The data per unit of
        Langevin time stay the same, the steps fewer (:func:`~pyro_csg.core.subsample.
        grown_batch`); ``hyperparameters()["subsample_size"]`` says each chain's batch.
    :param nuts_keywords: the keywords a NUTS user passes: ``jit_compile`` (-> the compiled
        potential), ``ignore_jit_warnings``, ``jit_options`` and ``max_plate_nesting``
        (accepted: the plates are found by tracing); the others (``max_tree_depth``,
        ``target_accept_prob``, ``adapt_step_size``, ``adapt_mass_matrix``, ``dense_mass``,
        ``num_steps``, ``trajectory_length``) are refused with the reason and the setting
        to use instead.

    **Randomness.** Each chain draws its Langevin noise and its minibatch permutations from
    its own ``torch.Generator``, seeded from Pyro's RNG at set-up: ``pyro.set_rng_seed``
    fixes the run, and other code drawing random numbers meanwhile does not change it.

    **Early stops.** After a ``NonFiniteError``, Ctrl-C or an error in the model,
    ``kernel.get_samples()`` returns the draws made before it (and ``NonFiniteError``
    carries them as ``error.samples``); the exception's note says how many and, with
    ``checkpoint=``, where they are on disk and how to resume.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD
        >>> y = 1.0 + torch.randn(1000)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=50) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> kernel = CyclicalSGLD(model)  # the defaults: cycles of 1000 steps, 4 draws each
        >>> mcmc = MCMC(kernel, num_samples=3 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)  # 3 cycles
        >>> mu = mcmc.get_samples()["mu"]
        >>> mu.shape, bool(abs(mu.mean() - y.mean()) < 0.15)  # posterior sd 0.03
        (torch.Size([12]), True)
    """

    def build_diffusion(self) -> Diffusion:
        return sgld(self.temperature)


class CyclicalSGHMC(CyclicalKernel):
    r"""Cyclical stochastic-gradient Hamiltonian Monte Carlo (cSGHMC) for :class:`pyro.infer.MCMC`.

    Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian
    Deep Learning*, ICLR 2020; Chen, Fox and Guestrin, *Stochastic Gradient Hamiltonian
    Monte Carlo*, ICML 2014.

    **Update.** With the notation of :class:`CyclicalSGLD` (``U``, ``U~``, ``k``, ``L``,
    ``beta``, ``eta_k`` of Eq. 1, ``T``) and ``alpha = friction``::

        v     <- (1 - alpha) * v - eta_k * grad U~(theta)
                 + [sampling or noisy] sqrt(2 * alpha * eta_k * T) * xi
        theta <- theta + v

    ``xi ~ N(0, I)``; the momentum ``v`` starts at 0 and persists across stages and cycles.
    The exploration stage is SGD with momentum ``1 - alpha`` (until the cycles show one
    mode: ``noisy``, see ``exploration_noise`` in :class:`CyclicalSGLD`).

    **Step size and friction.** ``step_size = lr / N`` for a learning rate ``lr`` on a mean
    loss over ``N`` data points; ``friction = 1 - momentum`` (the default 0.1 is SGD's
    usual momentum 0.9). Minibatch gradient noise adds variance of order
    ``eta * N / (B * alpha)`` relative to the injected noise, so a smaller friction needs a
    smaller step size in the sampling stage.

    Draws, warm-up, minibatches, temperature and the other arguments are as in
    :class:`CyclicalSGLD`; read its docstring before choosing ``warmup_steps``.

    :param float friction: ``alpha`` in (0, 1] (default 0.1).

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGHMC
        >>> y = 1.0 + torch.randn(1000)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=50) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> kernel = CyclicalSGHMC(model)  # the defaults: cycles of 1000 steps, 4 draws each
        >>> mcmc = MCMC(kernel, num_samples=3 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)  # 3 cycles
        >>> mu = mcmc.get_samples()["mu"]
        >>> mu.shape, bool(abs(mu.mean() - y.mean()) < 0.15)  # posterior sd 0.03
        (torch.Size([12]), True)
    """

    def __init__(self, model=None, potential_fn=None, *, friction: float = 0.1, **kwargs) -> None:
        if not (is_number(friction) and 0.0 < friction <= 1.0):
            raise ValueError(f"friction must be a number in (0, 1], got {friction!r}")
        super().__init__(model, potential_fn, **kwargs)
        self.friction = float(friction)

    def build_diffusion(self) -> Diffusion:
        return sghmc(self.friction, self.temperature)


class CyclicalSGNHT(CyclicalKernel):
    r"""Cyclical stochastic-gradient Nose-Hoover thermostat (cSGNHT) for :class:`pyro.infer.MCMC`.

    Ding, Fang, Babbush, Chen, Skeel and Neven, *Bayesian Sampling Using Stochastic
    Gradient Thermostats*, NeurIPS 2014; the cyclical schedule of :class:`CyclicalSGLD`.

    **Update.** With the notation of :class:`CyclicalSGLD` and ``a = diffusion``::

        v     <- (1 - alpha) * v - eta_k * grad U~(theta)
                 + [sampling or noisy] sqrt(2 * a * eta_k * T) * xi
        theta <- theta + v
        alpha <- [sampling or noisy] clip(alpha + mean(v ** 2) - eta_k * T, 0, 1)

    SGHMC whose friction ``alpha`` (a friction per step, starting at ``a``) is a
    thermostat: it rises while the momentum runs hotter than ``T``, as unmodelled
    minibatch noise makes it, and falls while it runs colder. ``v`` follows the step as
    SGHMC's; the exploration stage holds ``alpha``. It moves by about ``eta`` a step, so
    it adapts with the automatic (dimensionless) step; with an explicit ``step_size``
    (``lr / N``) cSGNHT is cSGHMC at ``friction = a``. Other arguments: :class:`CyclicalSGLD`.

    :param float diffusion: ``a`` in (0, 1] (default 0.1): the injected noise's friction
        and the thermostat's start.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGNHT
        >>> y = 1.0 + torch.randn(1000)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=50) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> kernel = CyclicalSGNHT(model)  # the defaults: cycles of 1000 steps, 4 draws each
        >>> mcmc = MCMC(kernel, num_samples=3 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)  # 3 cycles
        >>> mu = mcmc.get_samples()["mu"]
        >>> mu.shape, bool(abs(mu.mean() - y.mean()) < 0.15)  # posterior sd 0.03
        (torch.Size([12]), True)
    """

    def __init__(self, model=None, potential_fn=None, *, diffusion: float = 0.1, **kwargs) -> None:
        if not (is_number(diffusion) and 0.0 < diffusion <= 1.0):
            raise ValueError(f"diffusion must be a number in (0, 1], got {diffusion!r}")
        super().__init__(model, potential_fn, **kwargs)
        self.diffusion = float(diffusion)

    def build_diffusion(self) -> Diffusion:
        return sgnht(self.diffusion, self.temperature)
