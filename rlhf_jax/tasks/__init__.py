"""Training stages, each a `Task` run by the shared loop in `rlhf_jax.train`."""
