"""The sampler core: torch and NumPy only, no Pyro.

Errors, the flat parameters and the potential protocol, schedules, minibatch cursors,
the diffusions, gradient estimators, tuning, the chain state and the sampler loop.
"""
