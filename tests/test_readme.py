"""The README's example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_recovers_the_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes its figure to the working folder
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    w = namespace["samples"]["w"]
    assert w.shape == (100, 3)
    assert torch.allclose(w.mean(0), torch.tensor([1.0, -2.0, 0.5]), atol=0.05)
    assert (namespace["samples"]["sigma"] > 0).all()
    assert (tmp_path / "cycles.png").stat().st_size > 1000
