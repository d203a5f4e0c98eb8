"""rlhf_jax: tokenizer → pretraining → SFT → reward model → PPO, in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="rlhf_jax",
    version="0.1.0",
    description="The ChatGPT (InstructGPT) training pipeline in JAX/Flax.",
    packages=find_packages(include=["rlhf_jax", "rlhf_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.7",
        "importlib_resources",  # tensorflow-datasets imports it without declaring it
        "grain>=0.2.10",
        "ml-collections>=1.0",
        "tokenizers>=0.20",
        "safetensors>=0.4",     # Hugging Face GPT-2 import/export (NumPy only, no torch)
        "numpy",
        "scipy",                # bootstrap intervals (evaluation)
        "tqdm",
        "tensorboardX",
        "matplotlib",
        "absl-py",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "ipython"],
        # The transformers equivalence tests (tests/test_hf.py); install the CPU build of
        # torch first (pip install torch --index-url https://download.pytorch.org/whl/cpu),
        # or pip pulls the CUDA one.
        "hf": ["transformers>=4.40"],
    },
)
