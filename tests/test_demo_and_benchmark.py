"""The README's commands keep working: the demo and the overhead benchmark run end to end."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_and_reports():
    from pyro_csg.__main__ import main

    assert main(["demo", "--cycles", "2", "--steps-per-cycle", "100", "--no-progress"]) == 0


def test_demo_module_entry_point():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyro_csg",
            "demo",
            "--cycles",
            "2",
            "--steps-per-cycle",
            "60",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "held-out accuracy" in result.stdout and "w[29]" in result.stdout


def run_benchmark(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_overhead_benchmark_runs():
    output = run_benchmark("overhead.py", "--iterations", "1000", "--repeats", "1")
    assert "ratio (pyro-csg / hand-written)" in output


def test_log_likelihood_benchmark_runs():
    output = run_benchmark("log_likelihood.py", "--draws", "20", "--eager-draws", "2")
    assert "pyro-csg vectorised" in output and "peak torch memory" in output
