"""Cyclical SG-MCMC kernels for :class:`pyro.infer.MCMC`."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from .diffusions import sghmc_step, sgld_step
from .potential import FunctionPotential, ModelPotential
from .schedules import CosineCyclical, CycleLayout, Schedule, _check_positive, _is_number
from .subsample import EpochBatches

__all__ = ["CyclicalSGLD", "CyclicalSGHMC", "NonFiniteError"]

# How many iterations may pass before the potential energies are checked for NaN/inf.
# Checking reads a value back from the device, so it is batched rather than per step.
_CHECK_EVERY = 100


class NonFiniteError(RuntimeError):
    """The potential energy or the parameters became NaN or infinite during sampling.

    Raised instead of returning a NaN draw; the message names the iteration, cycle, stage
    and step size.

    Example::

        >>> import torch
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD, NonFiniteError
        >>> kernel = CyclicalSGLD(potential_fn=lambda p: (p["z"] ** 4).sum(), step_size=10.0,
        ...                       steps_per_cycle=50)
        >>> mcmc = MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True,
        ...             initial_params={"z": torch.ones(1)})
        >>> try:
        ...     mcmc.run()
        ... except NonFiniteError as error:
        ...     print(str(error)[:58])
        CyclicalSGLD: the potential became NaN or infinite after t
    """


class _NoDivergences(list):
    """The draws that diverged: none, as SG-MCMC has no divergence check.

    Pyro's ``MCMC.summary`` counts it (0). It refuses to become a NumPy array, which is
    what ``az.from_pyro`` does with it: that converter would take the observed data and
    the log-likelihood from one random minibatch, so it fails instead, with a pointer to
    :func:`pyro_csg.to_inference_data`.
    """

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "arviz.from_pyro cannot convert a run of CyclicalSGLD or CyclicalSGHMC: it would "
            "take the observed data and the log-likelihood from one random minibatch, not "
            "the full data. Use pyro_csg.to_inference_data(mcmc) instead."
        )


class _Run:
    """The state of one chain: everything ``sample`` reads and writes."""

    def __init__(self, potential, theta: torch.Tensor, warmup_steps: int) -> None:
        self.potential = potential
        self.theta = theta
        self.momentum: torch.Tensor | None = None
        self.batches = [EpochBatches(plate) for plate in getattr(potential, "plates", ())]
        self.warmup_steps = warmup_steps
        self.iteration = 0  # iterations done: theta is theta_k
        self.draws = 0  # sample() calls answered
        self.energy: torch.Tensor | None = None  # U~ at theta, on the batch of iteration k+1
        self.grad: torch.Tensor | None = None
        self.step_size = float("nan")  # eta of the last iteration
        self.last_draw: dict[str, torch.Tensor] | None = None
        self.stats: dict[str, list] = {
            "cycle": [],
            "iteration": [],
            "step_size": [],
            "potential_energy": [],
        }

    def indices(self) -> list[torch.Tensor]:
        return [batches.next() for batches in self.batches]


class _CyclicalSGMCMC(MCMCKernel):
    """Shared machinery of the cyclical kernels; subclasses define ``_step``."""

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
        *,
        step_size: float | None = None,
        steps_per_cycle: int = 1000,
        exploration_fraction: float = 0.5,
        samples_per_cycle: int = 4,
        temperature: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        transforms: dict | None = None,
        schedule: Schedule | None = None,
        compile_potential: bool = True,
    ) -> None:
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model or potential_fn")
        if model is not None and not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if potential_fn is not None and not callable(potential_fn):
            raise TypeError(
                f"potential_fn must be a callable taking a dict of unconstrained tensors, "
                f"got {type(potential_fn).__name__}"
            )
        self.layout = CycleLayout(steps_per_cycle, exploration_fraction, samples_per_cycle)
        if schedule is None:
            if step_size is None:
                raise ValueError(
                    "step_size is required (a finite number > 0): no default suits every "
                    "model. A deep-learning learning rate lr on a mean loss over N data "
                    "points corresponds to step_size = lr / N."
                )
            schedule = CosineCyclical(step_size, steps_per_cycle)
        else:
            if step_size is not None:
                raise ValueError(
                    "give either step_size (for the default cosine schedule) or schedule, not both"
                )
            if not callable(schedule):
                raise TypeError(
                    f"schedule must be a callable k -> step size, got {type(schedule).__name__}"
                )
            if isinstance(schedule, CosineCyclical) and schedule.steps_per_cycle != steps_per_cycle:
                raise ValueError(
                    f"schedule has steps_per_cycle={schedule.steps_per_cycle} but the kernel "
                    f"has steps_per_cycle={steps_per_cycle}: the cycles would not line up"
                )
        if not callable(init_strategy):
            raise TypeError("init_strategy must be a Pyro init_to_* strategy (a callable)")
        if transforms is not None and not isinstance(transforms, dict):
            raise TypeError("transforms must be a dict {site name: Transform} or None")
        self.model = model
        self.potential_fn = potential_fn
        self.schedule = schedule
        self.temperature = _check_positive("temperature", temperature)
        self.init_strategy = init_strategy
        self.compile_potential = bool(compile_potential)
        self._user_transforms = transforms
        # As in Pyro's HMC: None until set-up, then {site: constrained -> unconstrained}.
        self.transforms = None if potential_fn is None or transforms is None else transforms
        self._initial_params: dict[str, torch.Tensor] | None = None
        self._run: _Run | None = None

    # -- hyperparameters, for reports ------------------------------------------------------
    @property
    def steps_per_cycle(self) -> int:
        return self.layout.steps_per_cycle

    @property
    def exploration_fraction(self) -> float:
        return self.layout.exploration_fraction

    @property
    def samples_per_cycle(self) -> int:
        return self.layout.samples_per_cycle

    @property
    def step_size(self) -> float:
        """``eta_1``, the schedule's first step size (for the cosine schedule, the largest
        step of every cycle)."""
        return self.schedule(1)

    def hyperparameters(self) -> dict[str, Any]:
        """The sampler's settings, for reports and ArviZ ``attrs``.

        Example::

            >>> from pyro_csg import CyclicalSGLD
            >>> CyclicalSGLD(lambda: None, step_size=0.01).hyperparameters()["schedule"]
            'CosineCyclical(step_size=0.01, steps_per_cycle=1000)'
        """
        return {
            "sampler": type(self).__name__,
            "step_size": self.step_size,
            "steps_per_cycle": self.steps_per_cycle,
            "exploration_fraction": self.exploration_fraction,
            "samples_per_cycle": self.samples_per_cycle,
            "temperature": self.temperature,
            "schedule": repr(self.schedule),
        }

    # -- the MCMCKernel interface ----------------------------------------------------------
    @property
    def initial_params(self) -> dict[str, torch.Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor] | None) -> None:
        self._initial_params = params

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        """Trace the model once, find its subsampled plates, and pick the start."""
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if warmup_steps % self.samples_per_cycle:
            warnings.warn(
                f"warmup_steps={warmup_steps} is not a multiple of samples_per_cycle="
                f"{self.samples_per_cycle}: warm-up counts retained draws, so the first kept "
                "cycle is a partial one. Pass warmup_steps=0 or whole cycles "
                "(num_cycles * samples_per_cycle).",
                stacklevel=2,
            )
        if self.model is not None:
            potential = ModelPotential(
                self.model, args, kwargs, self.init_strategy, self._user_transforms
            )
            self.transforms = potential.transforms
            if self._initial_params is None:
                theta = potential.initial_theta()
            else:
                theta = potential.flatten(self._initial_params)
        else:
            if self._initial_params is None:
                raise ValueError(
                    "with potential_fn, pass initial_params to MCMC (a dict of unconstrained "
                    "tensors, one entry per latent site), as with Pyro's HMC"
                )
            potential = FunctionPotential(self.potential_fn, self._initial_params)
            theta = potential.flatten(self._initial_params)
        if not torch.isfinite(theta).all():
            bad = [
                name
                for name, value in potential.unflatten(theta).items()
                if not torch.isfinite(value).all()
            ]
            raise ValueError(f"initial_params has non-finite values at site(s) {bad}")
        self._run = _Run(potential, theta, warmup_steps)
        self._initial_params = potential.unflatten(theta)
        self._run.last_draw = self._initial_params

    def cleanup(self) -> None:
        self._run = None
        self._initial_params = None

    def _start(self, run: _Run) -> None:
        """First call of ``sample``: compile the potential, then ``U~`` and its gradient."""
        potential = run.potential
        if self.compile_potential and isinstance(potential, ModelPotential):
            reason = potential.compile(run.theta)
            if reason is not None:
                warnings.warn(
                    f"{type(self).__name__}: using the eager (slower) potential: {reason}. "
                    "Pass compile_potential=False to skip the attempt.",
                    stacklevel=3,
                )
        run.energy, run.grad = potential.value_and_grad(run.theta, run.indices())
        if not (torch.isfinite(run.energy) and torch.isfinite(run.grad).all()):
            raise NonFiniteError(
                f"{type(self).__name__}: the potential energy or its gradient is non-finite at "
                "the initial parameters. Check initial_params and the model's supports."
            )

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run up to the next retained iteration and return that draw (unconstrained)."""
        run = self._run
        if run is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before sample()")
        if run.grad is None:
            self._start(run)
        if params is not run.last_draw:
            # Someone handed us other parameters than our last draw: continue from them.
            run.theta = run.potential.flatten(params).to(run.theta)
            run.energy, run.grad = run.potential.value_and_grad(run.theta, run.indices())
        target = self.layout.retained_iteration(run.draws)
        self._advance(run, target)
        theta = run.theta
        if not torch.isfinite(theta).all():
            self._raise_non_finite(run, run.iteration, "the parameters")
        if run.draws >= run.warmup_steps:
            stats = run.stats
            stats["cycle"].append(self.layout.cycle(run.iteration))
            stats["iteration"].append(run.iteration)
            stats["step_size"].append(run.step_size)
            stats["potential_energy"].append(run.energy.item())
        run.draws += 1
        run.last_draw = run.potential.unflatten(theta)
        return run.last_draw

    def _advance(self, run: _Run, target: int) -> None:
        """Run iterations ``run.iteration + 1, ..., target`` (the hot loop)."""
        if target <= run.iteration:
            return
        schedule, temperature = self.schedule, self.temperature
        steps_per_cycle = self.layout.steps_per_cycle
        exploration_steps = self.layout.num_exploration_steps
        value_and_grad = run.potential.value_and_grad
        theta, grad = run.theta, run.grad
        energies: list[torch.Tensor] = []
        for k in range(run.iteration + 1, target + 1):
            eta = schedule(k)
            if not 0.0 < eta < math.inf:
                raise ValueError(
                    f"the schedule {schedule!r} gave step size {eta!r} at iteration {k}; "
                    "step sizes must be finite and > 0"
                )
            sampling = (k - 1) % steps_per_cycle >= exploration_steps
            xi = torch.randn_like(theta) if sampling else None
            theta = self._step(run, theta, grad, eta, temperature, xi)
            energy, grad = value_and_grad(theta, run.indices())
            energies.append(energy)
            if len(energies) == _CHECK_EVERY or k == target:
                values = torch.stack(energies)
                if not torch.isfinite(values).all():
                    offset = int((~torch.isfinite(values)).nonzero()[0, 0])
                    self._raise_non_finite(run, k - len(energies) + 1 + offset, "the potential")
                energies.clear()
        run.theta, run.grad, run.energy = theta, grad, energy
        run.iteration, run.step_size = target, eta

    def _raise_non_finite(self, run: _Run, iteration: int, what: str) -> None:
        eta = self.schedule(iteration)
        stage = self.layout.stage(iteration)
        raise NonFiniteError(
            f"{type(self).__name__}: {what} became NaN or infinite after the update of "
            f"iteration {iteration} (cycle {self.layout.cycle(iteration)}, {stage} stage, "
            f"step size {eta:.3g}). The step size is most likely too large for this model "
            "(a larger step is taken at the start of every cycle): try a step_size 10 times "
            "smaller; also check that the model's likelihood is finite for all parameter "
            "values it can reach."
        )

    def _step(self, run, theta, grad, eta, temperature, xi):  # pragma: no cover - abstract
        raise NotImplementedError

    def logging(self) -> OrderedDict:
        run = self._run
        if run is None or run.iteration == 0:
            return OrderedDict()
        return OrderedDict(
            [
                ("cycle", self.layout.cycle(run.iteration)),
                ("stage", self.layout.stage(run.iteration)),
                ("step size", f"{run.step_size:.2e}"),
                ("potential", f"{run.energy.item():.4g}"),
            ]
        )

    def diagnostics(self) -> dict[str, list]:
        """Per retained (post-warm-up) draw: cycle, iteration, step size, ``U~``.

        ``potential_energy`` is the minibatch estimate ``U~`` at the draw (on the batch
        of the following iteration), so ``-potential_energy`` estimates the log joint.
        ``divergences`` is always empty (there is no divergence check); it also makes
        ``az.from_pyro`` fail with a pointer to :func:`pyro_csg.to_inference_data`.
        """
        if self._run is None:
            stats = {key: [] for key in ("cycle", "iteration", "step_size", "potential_energy")}
        else:
            stats = {key: list(values) for key, values in self._run.stats.items()}
        return {**stats, "divergences": _NoDivergences()}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_run"] = None  # rebuilt by setup() in the process that samples
        return state


class CyclicalSGLD(_CyclicalSGMCMC):
    r"""Cyclical stochastic-gradient Langevin dynamics (cSGLD) for :class:`pyro.infer.MCMC`.

    Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian
    Deep Learning*, ICLR 2020; Welling and Teh, *Bayesian Learning via Stochastic Gradient
    Langevin Dynamics*, ICML 2011.

    **Update.** With ``U`` the full-data potential (the negative log joint in unconstrained
    space, Jacobians included, as in Pyro's HMC), ``U~`` its minibatch estimate, ``k = 1,
    2, ...`` the iteration, ``L = steps_per_cycle`` and ``beta = exploration_fraction``::

        eta_k  = (step_size / 2) * (cos(pi * mod(k - 1, L) / L) + 1)      (Eq. 1)
        stage  = exploration while mod(k - 1, L) / L < beta, sampling after
        theta <- theta - eta_k * grad U~(theta) + [sampling] sqrt(2 * eta_k * T) * xi

    with ``xi ~ N(0, I)``. Exploration steps add no noise: they are SGD, which carries the
    chain into a new mode at the start of every cycle; the sampling steps explore that mode.

    **Step size.** In units of ``U``, which grows with the number of data points ``N``. A
    deep-learning learning rate ``lr`` on a *mean* loss corresponds to ``step_size = lr / N``.

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
    :param float step_size: the largest step size ``eta_1`` of each cycle, ``> 0``.
        Required unless ``schedule`` is given.
    :param int steps_per_cycle: ``L``, iterations per cycle (default 1000).
    :param float exploration_fraction: ``beta`` in [0, 1) (default 0.5). The paper's
        deep-learning runs use 0.8 to 0.9, which spends most of a cycle finding a mode; at
        temperature 1 a longer sampling stage gives better within-mode spread (on the
        breast-cancer logistic regression of notebook 1, the median ratio of posterior sds to
        NUTS's was 0.64 with 0.8 and 0.99 with 0.5, 20 cycles of 1000 steps).
    :param int samples_per_cycle: retained draws per cycle, at most the number of
        sampling-stage steps (default 4).
    :param float temperature: ``T > 0`` (default 1, the posterior).
    :param init_strategy: a Pyro ``init_to_*`` strategy (default ``init_to_uniform``, as
        HMC).
    :param dict transforms: optional ``{site: Transform}`` to unconstrained space; other
        sites get ``biject_to(support).inv``.
    :param schedule: a callable ``k -> eta_k`` replacing the cosine schedule, e.g.
        :class:`~pyro_csg.schedules.Constant` or
        :class:`~pyro_csg.schedules.PolynomialDecay` for plain SGLD baselines (then the
        "cycles" are blocks of ``steps_per_cycle`` iterations that set the thinning, and
        ``exploration_fraction=0`` keeps the noise on throughout).
    :param bool compile_potential: trace the model's potential and gradient into one graph
        at the first step (default True); models that cannot be traced fall back to the
        eager potential with a warning.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD
        >>> y = 1.0 + torch.randn(1000)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=50) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> kernel = CyclicalSGLD(model, step_size=5e-4, steps_per_cycle=200,
        ...                       samples_per_cycle=4)
        >>> mcmc = MCMC(kernel, num_samples=5 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)
        >>> mcmc.get_samples()["mu"].shape
        torch.Size([20])
    """

    def _step(self, run, theta, grad, eta, temperature, xi):
        return sgld_step(theta, grad, eta, temperature, xi)


class CyclicalSGHMC(_CyclicalSGMCMC):
    r"""Cyclical stochastic-gradient Hamiltonian Monte Carlo (cSGHMC) for :class:`pyro.infer.MCMC`.

    Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian
    Deep Learning*, ICLR 2020; Chen, Fox and Guestrin, *Stochastic Gradient Hamiltonian
    Monte Carlo*, ICML 2014.

    **Update.** With the notation of :class:`CyclicalSGLD` (``U``, ``U~``, ``k``, ``L``,
    ``beta``, ``eta_k`` of Eq. 1, ``T``) and ``alpha = friction``::

        v     <- (1 - alpha) * v - eta_k * grad U~(theta)
                 + [sampling] sqrt(2 * alpha * eta_k * T) * xi
        theta <- theta + v

    ``xi ~ N(0, I)``; the momentum ``v`` starts at 0 and persists across stages and cycles.
    The exploration stage is SGD with momentum ``1 - alpha``.

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
        >>> kernel = CyclicalSGHMC(model, step_size=1e-4, steps_per_cycle=200,
        ...                        samples_per_cycle=4, friction=0.5)
        >>> mcmc = MCMC(kernel, num_samples=5 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)
        >>> mcmc.get_samples()["mu"].shape
        torch.Size([20])
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
        *,
        step_size: float | None = None,
        steps_per_cycle: int = 1000,
        exploration_fraction: float = 0.5,
        samples_per_cycle: int = 4,
        friction: float = 0.1,
        temperature: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        transforms: dict | None = None,
        schedule: Schedule | None = None,
        compile_potential: bool = True,
    ) -> None:
        if not (_is_number(friction) and 0.0 < friction <= 1.0):
            raise ValueError(f"friction must be a number in (0, 1], got {friction!r}")
        super().__init__(
            model,
            potential_fn,
            step_size=step_size,
            steps_per_cycle=steps_per_cycle,
            exploration_fraction=exploration_fraction,
            samples_per_cycle=samples_per_cycle,
            temperature=temperature,
            init_strategy=init_strategy,
            transforms=transforms,
            schedule=schedule,
            compile_potential=compile_potential,
        )
        self.friction = float(friction)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "friction": self.friction}

    def _step(self, run, theta, grad, eta, temperature, xi):
        if run.momentum is None:
            run.momentum = torch.zeros_like(theta)
        theta, run.momentum = sghmc_step(
            theta, run.momentum, grad, eta, self.friction, temperature, xi
        )
        return theta
