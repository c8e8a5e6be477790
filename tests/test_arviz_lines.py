"""Both ArviZ lines give the same run: InferenceData under 0.x, DataTree under 1.x.

The suite runs under ArviZ 0.x (Python 3.11) and 1.x (Python >= 3.12) in CI; this file's
comparison with ``tests/golden/content.json`` (see ``tests/line_content.py``) is what
makes the two runs one check: the same values, dims, coords and attrs from both.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from arviz_line import ARVIZ_1, az, elpd, group, group_names
from line_content import content, convert, data, expected

from pyro_csg import cycle_diagnostic, cycle_summary, mode_census, plot_cycle_diagnostics
from pyro_csg.analysis.arviz_lines import build


@pytest.fixture(scope="module", params=["chain", "cycle"])
def converted(request):
    return request.param, convert(request.param)


def test_the_container_is_the_installed_lines_own(converted):
    _, idata = converted
    assert isinstance(idata, xr.DataTree) == ARVIZ_1
    assert type(idata).__name__ == ("DataTree" if ARVIZ_1 else "InferenceData")


def _assert_same(made: dict, stored: dict, where: str = "") -> None:
    assert made.keys() == stored.keys(), where
    for key in stored:
        here = f"{where}/{key}"
        mine, theirs = made[key], stored[key]
        if isinstance(theirs, dict):
            _assert_same(mine, theirs, here)
        elif key == "values" and theirs and isinstance(theirs[0], float):
            # the log-likelihood is recomputed by the installed torch: float32 rounding
            a = np.array([np.nan if v is None else v for v in mine], dtype=float)
            b = np.array([np.nan if v is None else v for v in theirs], dtype=float)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=here)
        else:
            assert mine == theirs, here


def test_values_dims_coords_and_attrs_match_the_other_line(converted):
    group_by, idata = converted
    _assert_same(content(idata), expected()[group_by])


def test_loo_reads_the_full_data_pointwise_log_likelihood(converted):
    group_by, idata = converted
    if group_by == "cycle":
        pytest.skip("loo pools the draws: one grouping is enough")
    x, y = data()
    posterior = group(idata, "posterior")
    w = torch.as_tensor(posterior["w"].values)
    b = torch.as_tensor(posterior["b"].values)
    sigma = torch.as_tensor(posterior["sigma"].values)
    by_hand = dist.Normal(w @ x.T + b[..., None], sigma[..., None]).log_prob(y).numpy()
    stored = group(idata, "log_likelihood")["y"]
    assert stored.dims == ("chain", "draw", "patient")
    np.testing.assert_allclose(stored.values, by_hand, rtol=1e-5, atol=1e-5)
    reference = build({"posterior": {"b": posterior["b"].values}, "log_likelihood": {"y": by_hand}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k of 32 draws
        ours, theirs = az.loo(idata), az.loo(reference)
    assert ours.n_data_points == len(y)
    assert elpd(ours) == pytest.approx(elpd(theirs), rel=1e-6)


def test_summary_ess_and_rhat_run_on_the_container(converted):
    _, idata = converted
    table = az.summary(idata)
    assert {"w[age]", "w[dose]", "b", "sigma"} <= set(table.index)
    assert np.isfinite(az.ess(idata)["b"].values)
    assert np.isfinite(az.rhat(idata)["b"].values)


def _containers(idata) -> dict:
    """The run as each container the analysis accepts, under the installed line."""
    tree = idata if ARVIZ_1 else idata.to_datatree()
    forms = {"datatree": tree, "posterior dataset": group(idata, "posterior")}
    if not ARVIZ_1:
        forms["inferencedata"] = idata
    return forms


def test_the_cycle_diagnostics_accept_every_container(converted):
    _, idata = converted
    forms = _containers(idata)
    tables = {name: cycle_diagnostic(form) for name, form in forms.items()}
    summaries = {name: cycle_summary(form) for name, form in forms.items()}
    first = next(iter(forms))
    for name in forms:
        assert tables[name].equals(tables[first]), name
        columns = ["mean", "sd", "ess", "r_hat_between"]
        assert summaries[name][columns].equals(summaries[first][columns]), name
        assert mode_census(forms[name]).num_modes == mode_census(forms[first]).num_modes
    # noise_ratio lives in sample_stats, which a bare posterior does not carry
    assert summaries["datatree"]["noise_ratio"].notna().all()
    assert summaries["posterior dataset"]["noise_ratio"].isna().all()


def test_the_figure_is_drawn_from_either_container(converted, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, idata = converted
    for name, form in _containers(idata).items():
        axes = plot_cycle_diagnostics(form, var_names=["b"])
        path = tmp_path / f"{name}.png"
        axes[0].figure.savefig(path)
        assert path.stat().st_size > 1000
        titles = [ax.get_title() for ax in axes]
        assert titles[0].startswith("b") and ("noise_ratio" in titles) == (
            name != "posterior dataset"
        )
        plt.close("all")


def test_group_names_and_group_refuse_what_is_not_a_run():
    with pytest.raises(TypeError, match="InferenceData, an xarray.DataTree or a posterior"):
        group({"posterior": {}}, "posterior")
    with pytest.raises(TypeError, match="Converted itself: convert the run first"):

        class Converted:  # an MCMC's face: draws and a kernel
            kernel = None

            def get_samples(self):
                return {}

        cycle_diagnostic(Converted())
    assert group_names(xr.Dataset()) == ["posterior"]
