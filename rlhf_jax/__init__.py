"""rlhf_jax: the ChatGPT training pipeline (BPE, pretrain, SFT, RM, PPO) in JAX."""

from rlhf_jax.errors import UserError

__version__ = "0.1.0"
