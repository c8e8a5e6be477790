"""The Pyro-free core: its run equals the kernel's, and saved states of every format load."""

import pyro
import pytest
import torch
from pyro.infer import MCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, CyclicalSGNHT
from pyro_csg.core.diffusions import sghmc, sgld, sgnht
from pyro_csg.core.estimators import Centre, CentreState, ControlVariates, Minibatch
from pyro_csg.core.parameters import FunctionPotential
from pyro_csg.core.sampler import SamplerConfig, run
from pyro_csg.core.schedules import CosineCyclical, CycleLayout
from pyro_csg.core.state import STATE_FORMAT, ChainState


def banana(params):
    x = params["x"]
    return x[0] ** 2 / 8 + 2 * (x[1] - x[0] ** 2 / 2 + 1) ** 2


@pytest.mark.parametrize(
    "kernel_class, diffusion, settings",
    [
        (CyclicalSGLD, sgld(), {"step_size": 0.02}),
        (CyclicalSGLD, sgld(), {}),  # the automatic step size and preconditioner
        (CyclicalSGHMC, sghmc(0.1), {"step_size": 0.002}),
        (CyclicalSGNHT, sgnht(0.1), {"step_size": 0.002}),
    ],
    ids=["cSGLD", "cSGLD-auto", "cSGHMC", "cSGNHT"],
)
def test_the_cores_run_equals_the_kernel_bit_for_bit(kernel_class, diffusion, settings):
    start = {"x": torch.tensor([0.5, -0.5])}
    layout = CycleLayout(100, 0.5, 4)
    pyro.set_rng_seed(7)
    kernel = kernel_class(potential_fn=banana, steps_per_cycle=100, **settings)
    mcmc = MCMC(kernel, num_samples=40, warmup_steps=0, disable_progbar=True, initial_params=start)
    mcmc.run()
    schedule = CosineCyclical(settings["step_size"], 100) if settings else None
    # The kernels' default start: the optimisation stage, falling back where it finds nothing.
    config = SamplerConfig(
        layout, diffusion, schedule=schedule, optimize_start=True, start_fallback=True
    )
    torch.manual_seed(7)  # what pyro.set_rng_seed seeds for the chain
    result = run(FunctionPotential(banana, start), start["x"].clone(), config, num_draws=40)
    assert torch.equal(result.draws, mcmc.get_samples()["x"])
    assert result.stats["iteration"] == mcmc._diagnostics[0]["iteration"]


def test_the_core_refuses_what_is_not_a_potential():
    config = SamplerConfig(CycleLayout(10, 0.5, 2), sgld(), schedule=CosineCyclical(0.1, 10))
    with pytest.raises(TypeError, match="potential must have value_and_grad"):
        run(3.0, torch.zeros(1), config, 2)


def test_a_state_saved_in_format_1_loads():
    """Format 1 kept the control variates' centre under "centre", without a format key."""
    centre = Centre(torch.ones(2), torch.tensor(3.0), torch.full((2,), 0.5))
    state = ChainState(
        theta=torch.zeros(2),
        algorithm=sghmc(0.1).init(torch.zeros(2)),
        energy=torch.tensor(1.0),
        grad=torch.ones(2),
        iteration=5,
        draws=1,
        step_size=0.1,
        batches=(),
        rng_state=torch.Generator().get_state(),
        estimator=CentreState(centre),
    )
    saved = state.state_dict()
    assert saved["format"] == STATE_FORMAT == 2
    old = {k: v for k, v in saved.items() if k not in ("format", "estimator")}
    old["centre"] = centre.state_dict()
    algorithm = type(state.algorithm)
    for stored in (saved, old):
        loaded = ChainState.from_state_dict(stored, algorithm, ControlVariates())
        assert torch.equal(loaded.estimator.centre.grad, centre.grad)
        assert loaded.iteration == 5
    without = dict(old, centre=None)
    assert ChainState.from_state_dict(without, algorithm, Minibatch()).estimator is None
    with pytest.raises(ValueError, match="format 3"):
        ChainState.from_state_dict(dict(saved, format=3), algorithm, ControlVariates())


def test_control_variates_recentre_on_the_average_of_the_window():
    layout = CycleLayout(100, 0.5, 4)
    estimator = ControlVariates()
    first, last = estimator.refresh_window(layout)
    assert (first, last) == (45, 49)

    class Quadratic:
        plates = ()

        def value_and_grad(self, theta, indices):
            return (theta**2).sum() / 2, theta.clone()

        def full_value_and_grad(self, theta):
            return (theta**2).sum() / 2, theta.clone()

    potential = Quadratic()
    state = estimator.init(potential, torch.zeros(1))
    for position in range(first, last + 1):
        theta = torch.tensor([float(position)])
        state = estimator.refresh(potential, state, theta, position == first, position == last)
    assert state.centre.theta.item() == pytest.approx(47.0) and state.total is None
