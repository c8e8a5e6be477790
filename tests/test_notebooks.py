"""The example notebooks: stored with their outputs, and runnable top to bottom.

Each notebook ends with a cell asserting its headline (cSGHMC agrees with NUTS; cSGLD
visits clearly more modes than SGLD; cSGHMC's test NLL is no worse than the MAP
network's; at N = 1e6 the defaults match the reference posterior). Here they run in
their reduced size, selected by ``PYRO_CSG_NOTEBOOK_SIZE``, so a failed headline fails
the test.
"""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [path.name for path in NOTEBOOKS] == [
        "01_logistic_regression.ipynb",
        "02_multimodal_mixture.ipynb",
        "03_bayesian_neural_network.ipynb",
        "04_large_data.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_with_its_full_size_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "run every cell before committing"
    counts = [cell.execution_count for cell in code]
    assert counts == sorted(counts), "cells were run out of order"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs), "no figure stored"
    text = "".join(output.get("text", "") for output in outputs)
    assert "size: full" in text, "the stored outputs must come from the full-size run"


@pytest.fixture(scope="module")
def this_interpreter_kernel(tmp_path_factory):
    """A kernelspec running this very Python, found first on JUPYTER_PATH: a "python3"
    kernel registered elsewhere on the machine may run another environment."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "pyro-csg-tests"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "pyro-csg tests", "language": "python"})
    )
    return root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_reduced_size_and_its_headline_holds(
    path, monkeypatch, this_interpreter_kernel
):
    monkeypatch.setenv("JUPYTER_PATH", str(this_interpreter_kernel))
    monkeypatch.setenv("PYRO_CSG_NOTEBOOK_SIZE", "small")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel uses Jupyter's inline backend
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=1800,  # a guard against a hang: the reduced notebooks take 5 to 15 s
        kernel_name="pyro-csg-tests",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError on a failed cell, the headline check included
    text = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "size: small" in text
