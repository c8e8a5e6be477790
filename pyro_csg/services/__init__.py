"""Services around the sampler, Pyro-free: the draw store, checkpoint files, resuming a
chain, and data-parallel ranks over ``torch.distributed``.
"""
