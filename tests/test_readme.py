"""The README's example runs as written, and it is the docs' first run: one example, kept
in one form in both places."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GETTING_STARTED = ROOT / "docs" / "getting-started.md"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_example_runs_and_recovers_the_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks(README)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    samples = namespace["mcmc"].get_samples(group_by_chain=True)
    assert samples["w"].shape == (2, 100, 3)  # two chains, as the docs' first example says
    w = samples["w"].reshape(-1, 3)
    assert torch.allclose(w.mean(0), torch.tensor([1.0, -2.0, 0.5]), atol=0.05)
    assert (samples["sigma"] > 0).all()
    printed = capsys.readouterr().out
    assert "r_hat" in printed and "elpd" in printed and "alarm" in printed


def test_the_readme_example_is_the_docs_first_run():
    assert _python_blocks(README)[0] == _python_blocks(GETTING_STARTED)[0]


def test_the_readme_is_a_landing_page():
    words = len(README.read_text().split())
    assert words <= 1_600, f"README.md has {words} words; the docs site holds the rest"
