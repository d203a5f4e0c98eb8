"""Test setup: 8 fake CPU devices, synchronous dispatch, a private data cache.

The environment must be set before JAX is imported anywhere: with async
dispatch, 8 CPU devices on a 2-core machine deadlock in collectives.
"""
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ["JAX_CPU_ENABLE_ASYNC_DISPATCH"] = "false"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault(
    "RLHF_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="rlhf_jax_test_cache_"))
