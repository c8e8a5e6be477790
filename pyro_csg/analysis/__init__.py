"""Analysis of finished runs: ArviZ conversion, cycle diagnostics and plots.
"""
