"""Smoke test of the pretraining throughput benchmark (JAX only; no torch needed)."""
import importlib.util
import json
import math
import os

import jax

_SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks",
                       "pretrain_throughput.py")


def _load_benchmark():
  spec = importlib.util.spec_from_file_location("pretrain_throughput", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_pretrain_throughput_tiny(capsys):
  result = _load_benchmark().main([
      "--preset=tiny", "--vocab=256", "--batch=8", "--seq_len=32", "--steps=2", "--warmup=1",
      "--peak_flops=1e11", "--json"])
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed == result
  assert result["devices"] == 1 and jax.device_count() == 8
  assert result["tokens_per_sec"] > 0 and 0 < result["mfu"] < 1
  assert math.isfinite(result["loss"])
  assert result["flops_per_token"] == 6 * (result["params"] - 128 * 64) + 12 * 2 * 64 * 32
