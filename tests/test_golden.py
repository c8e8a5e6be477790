"""Every golden run (tests/golden.py) reproduced bit for bit on the CPU.

The draws were recorded before the package was split into layers (issue 19); a change
that moves code without meaning to change the chains must keep every one of them. They
depend on torch's version and the CPU (vendor and vector ISA), so each machine kind has its
own set; one with no set skips, saying which sets there are.
"""

import pytest
import torch
from golden import SCENARIOS, environment, load, run_scenario

golden = load().get(environment())


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
    golden is None,
    reason=f"no golden draws for {environment()} (recorded: {sorted(load())})",
)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_run_is_reproduced_bit_for_bit(name):
    _assert_equal(run_scenario(name), golden[name], name)
