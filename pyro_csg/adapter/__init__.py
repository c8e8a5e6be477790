"""The Pyro layer: a model's potential (traced graph), its full-data pass and
log-likelihood, and the ``MCMCKernel`` classes that drive the core sampler.
"""
