import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in one worker per core (pytest-xdist): one thread each,
    # here and in every process a test starts (notebook kernels, ranks, resumed runs), so
    # that the workers do not fight over the cores (two workers of two threads each on 2
    # cores were slower than one process).
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

sys.path.insert(0, os.path.dirname(__file__))
# The benchmarks' instruments (e.g. the peak-memory counter) are tested with them.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
