import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

sys.path.insert(0, os.path.dirname(__file__))
# The benchmarks' instruments (e.g. the peak-memory counter) are tested with them.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
