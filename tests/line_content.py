"""One run's ArviZ content, independent of the ArviZ line: the same under 0.x and 1.x.

``tests/golden/run/`` is a run folder (``checkpoint=``) of :func:`model`, written once
with ``python tests/line_content.py --write`` (which also writes
``tests/golden/content.json``: the content of its conversion under the ArviZ line
installed then). ``tests/test_arviz_lines.py`` converts the folder under whichever line
is installed and compares with that file, so the 0.x run (Python 3.11) and the 1.x run
(Python >= 3.12) of the suite check that both lines give the same values, dims, coords
and attrs.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_csg.analysis.arviz_lines import group, group_names

GOLDEN = Path(__file__).resolve().parent / "golden"
RUN = GOLDEN / "run"
CONTENT = GOLDEN / "content.json"
N = 40
COORDS = {"feature": ["age", "dose"], "patient": [f"p{i}" for i in range(N)]}
DIMS = {"w": ["feature"], "y": ["patient"]}
# Made by ArviZ itself, not by pyro-csg: each line has its own (times, versions).
ARVIZ_ATTRS = {
    "created_at",
    "arviz_version",
    "creation_library",
    "creation_library_version",
    "creation_library_language",
    "sample_dims",
}
# pyro-csg's, but they name the installed versions.
VERSION_ATTRS = {"torch_version", "inference_library_version", "pyro_csg_version"}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Data from NumPy's generator, the same under every torch."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -0.5], dtype=np.float32) + 0.3 + rng.normal(size=N)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def model(x, y, subsample_size=8):
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("y", dist.Normal(x[idx] @ w + b, sigma), obs=y[idx])


def write_run() -> None:
    from pyro.infer import MCMC

    from pyro_csg import CyclicalSGHMC

    shutil.rmtree(RUN, ignore_errors=True)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGHMC(model, step_size=1e-3, steps_per_cycle=40, checkpoint=str(RUN))
    mcmc = MCMC(kernel, num_samples=4 * 4, warmup_steps=0, num_chains=2, disable_progbar=True)
    mcmc.run(*data())


def _plain(value):
    """JSON-ready: arrays to nested lists, NaN to None."""
    array = np.asarray(value)
    if array.dtype.kind in "fc":
        return [None if math.isnan(v) else v for v in array.astype(float).ravel()]
    if array.dtype.kind == "b":
        return [bool(v) for v in array.ravel()]
    if array.dtype.kind in "iu":
        return [int(v) for v in array.ravel()]
    return [str(v) for v in array.ravel()]


def content(idata) -> dict:
    """``{group: {"variables", "coords", "attrs"}}``: dims, shape and values of each, and
    pyro-csg's attrs (``ARVIZ_ATTRS`` left out, ``VERSION_ATTRS`` only named)."""
    result = {}
    for name in sorted(group_names(idata)):
        dataset = group(idata, name)
        entry = {"variables": {}, "coords": {}, "attrs": {}}
        for key, variable in dataset.data_vars.items():
            entry["variables"][str(key)] = {
                "dims": list(variable.dims),
                "shape": list(variable.shape),
                "values": _plain(variable.values),
            }
        for key, coord in dataset.coords.items():
            entry["coords"][str(key)] = {"dims": list(coord.dims), "values": _plain(coord.values)}
        for key, value in dataset.attrs.items():
            if key in ARVIZ_ATTRS:
                continue
            entry["attrs"][key] = "<version>" if key in VERSION_ATTRS else _plain(value)
        result[name] = entry
    return result


def convert(group_by: str):
    from pyro_csg import to_inference_data

    return to_inference_data(
        str(RUN),
        model=model,
        model_args=data(),
        group_by=group_by,
        coords=COORDS,
        dims=DIMS,
    )


def expected() -> dict:
    return json.loads(CONTENT.read_text())


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/line_content.py --write  (rewrites tests/golden/run/)")
    write_run()
    made = {group_by: content(convert(group_by)) for group_by in ("chain", "cycle")}
    CONTENT.write_text(json.dumps(made, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RUN} and {CONTENT}")
