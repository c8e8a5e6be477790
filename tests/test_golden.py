"""Every golden run (tests/golden.py) reproduced bit for bit on the CPU.

The draws were recorded before the package was split into layers (issue 19); a change
that moves code without meaning to change the chains must keep every one of them. They
depend on torch's version (and its kernels), so another torch skips them with the reason.
"""

import pytest
import torch
from golden import GOLDEN, SCENARIOS, environment, run_scenario

golden = torch.load(GOLDEN, weights_only=False)


def _assert_equal(got, want, where):
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _assert_equal(got[key], want[key], f"{where}[{key!r}]")
    else:
        assert got.shape == want.shape, where
        difference = (got.double() - want.double()).abs().max() if got.numel() else 0.0
        assert torch.equal(got, want), f"{where}: largest difference {float(difference):.3g}"


@pytest.mark.skipif(
    golden["environment"] != environment(),
    reason=f"golden draws were made with {golden['environment']}, this is {environment()}",
)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_run_is_reproduced_bit_for_bit(name):
    _assert_equal(run_scenario(name), golden[name], name)
