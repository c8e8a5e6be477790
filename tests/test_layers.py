"""The package's layers, checked on its source with the standard library's ``ast``.

Layers, lowest first; a module may import from its own layer and the layers below:

    core       torch and NumPy only: errors, parameters, schedules, diffusions,
               estimators, tuning, the chain state, the sampler loop
    services   the draw store, checkpoint files, resume, torch.distributed
    adapter    Pyro: the model's potential, its full data, the kernels
    analysis   ArviZ conversion, cycle diagnostics, plots
    top        pyro_csg/__init__.py, __main__.py and the examples

Also: no import circle (imports inside functions count), and no import of another
module's private name. The core and the services import, and the core runs a chain, with
Pyro blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyro_csg"
LAYERS = {"core": 0, "services": 1, "adapter": 2, "analysis": 3}
TOP = 4


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path):
    """``(target module, imported names, line)`` of every import of pyro_csg in ``path``."""
    module = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            if target == "pyro_csg" or target.startswith("pyro_csg."):
                names = [alias.name for alias in node.names]
                # "from . import graph" imports the module pyro_csg.adapter.graph
                submodules = [
                    name
                    for name in names
                    if is_package(target)
                    and (PACKAGE.parent / target.replace(".", "/") / f"{name}.py").is_file()
                ]
                for name in submodules:
                    yield f"{target}.{name}", [], node.lineno
                plain = [name for name in names if name not in submodules]
                if plain or not submodules:
                    yield target, plain, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pyro_csg"):
                    yield alias.name, [], node.lineno


SOURCES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {module_name(path): list(imports(path)) for path in SOURCES}


def check_layers(graph: dict) -> list[str]:
    problems = []
    for module, edges in graph.items():
        for target, names, line in edges:
            if layer_of(target) > layer_of(module):
                problems.append(f"{module}:{line} imports {target}, a higher layer")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != module:
                problems.append(f"{module}:{line} imports the private {private} of {target}")
            hidden = [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
            same_package = target.rsplit(".", 1)[0] == module.rsplit(".", 1)[0]
            if hidden and not same_package:
                problems.append(f"{module}:{line} imports the private module {target}")
    return problems


def circles(graph: dict) -> list[list[str]]:
    """Every import circle (Tarjan's strongly connected components of two or more)."""
    edges = {
        module: {t for t, _, _ in targets if t in graph and t != module}
        for module, targets in graph.items()
    }
    # A package's __init__ runs before its modules: "from pyro_csg import x" in a module
    # of the package reads the package, not a circle through it, unless __init__ imports
    # that module eagerly (it imports lazily, see pyro_csg/__init__.py).
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_goes_up_a_layer_or_takes_a_private_name():
    assert check_layers(GRAPH) == []


def test_no_import_circle():
    assert circles(GRAPH) == []


def test_the_checks_can_fail():
    """The checks on a made-up package: an upward import, a private name, a circle."""
    graph = {
        "pyro_csg.core.a": [("pyro_csg.adapter.kernels", ["CyclicalSGLD"], 1)],
        "pyro_csg.analysis.b": [("pyro_csg.analysis.c", ["_helper"], 2)],
        "pyro_csg.analysis.c": [("pyro_csg.analysis.b", ["thing"], 3)],
    }
    problems = check_layers(graph)
    assert any("higher layer" in p for p in problems)
    assert any("private ['_helper']" in p for p in problems)
    assert circles(graph) == [["pyro_csg.analysis.b", "pyro_csg.analysis.c"]]


def test_the_public_names_are_the_lazy_ones():
    import pyro_csg

    assert set(pyro_csg.__all__) == {*pyro_csg._PUBLIC, *pyro_csg._MODULES, "__version__"}
    for name in pyro_csg.__all__:
        assert getattr(pyro_csg, name) is not None


@pytest.mark.parametrize("package", ["core", "services"])
def test_a_pyro_free_layer_imports_without_pyro(package):
    modules = [
        module_name(path) for path in SOURCES if layer_of(module_name(path)) == LAYERS[package]
    ]
    code = textwrap.dedent(
        f"""
        import importlib, sys
        sys.modules["pyro"] = None  # any import of Pyro now fails
        for name in {modules!r}:
            importlib.import_module(name)
        assert "pyro" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_core_runs_a_chain_on_a_plain_torch_potential_without_pyro():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pyro"] = None
        import torch
        from pyro_csg.core.diffusions import sghmc
        from pyro_csg.core.sampler import SamplerConfig, run
        from pyro_csg.core.schedules import CycleLayout

        scales = torch.tensor([1.0, 10.0])
        def gaussian(theta, indices):  # U = sum (theta / s)^2 / 2
            return ((theta / scales) ** 2).sum() / 2, theta / scales**2

        config = SamplerConfig(CycleLayout(200, 0.5, 4), sghmc(0.1))  # automatic step
        draws = run(gaussian, torch.zeros(2), config, num_draws=800, seed=0).draws
        print(draws.mean(0).tolist(), draws.std(0).tolist())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    means, sds = (
        list(map(float, part.strip("[] ").split(",")))
        for part in result.stdout.strip().split("] [")
    )
    # 200 cycles of 4 draws: the standard error of a mean is about 0.1 sd.
    assert abs(means[0]) < 0.3 and abs(means[1]) < 3.0, result.stdout
    assert 0.8 < sds[0] < 1.2 and 8.0 < sds[1] < 12.0, result.stdout


def sizes() -> tuple[list, list]:
    """Classes over 350 lines anywhere, functions over 60 lines in the modules that
    hold the sampler loop, the resume service and the kernels."""
    big_classes, long_functions = [], []
    hot = {"core/sampler.py", "services/resume.py", "adapter/kernels.py"}
    for path in SOURCES:
        where = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            length = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and length > 350:
                big_classes.append(f"{where}: class {node.name}, {length} lines")
            if isinstance(node, ast.FunctionDef) and where in hot and length > 60:
                long_functions.append(f"{where}: {node.name}, {length} lines")
    return big_classes, long_functions


def test_no_room_does_ten_jobs():
    big_classes, long_functions = sizes()
    assert big_classes == [] and long_functions == []
    assert len((PACKAGE / "adapter" / "kernels.py").read_text().splitlines()) <= 700
