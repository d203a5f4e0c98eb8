"""Smoke test of the pretraining throughput benchmark (JAX only; no torch needed)."""
import importlib.util
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from rlhf_jax import metrics
from rlhf_jax.models import gpt
from rlhf_jax.tasks import lm

_BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def _load_benchmark(name: str = "pretrain_throughput"):
  """benchmarks/<name>.py as a module (the directory is not a package)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(_BENCHMARKS, f"{name}.py"))
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


@pytest.mark.parametrize("layers,width,seq_len,vocab", [(2, 256, 128, 1024), (4, 128, 64, 512)])
def test_flops_per_token_matches_xla_cost_analysis(layers, width, seq_len, vocab):
  """6N + 12·L·D·T against the FLOPs XLA counts in the compiled forward + backward
  (measured 0.8–1.5% more: XLA also counts the norms, softmax and GELU)."""
  cfg = gpt.GPTConfig(vocab_size=vocab, num_layers=layers, num_heads=4, embed_dim=width,
                      max_len=seq_len)
  model = gpt.GPT(cfg)
  params = nn.meta.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, seq_len), jnp.int32))))["params"]
  batch = 4
  grad = jax.jit(jax.grad(lambda p, t: lm.next_token_loss_sum(model, p, t)[0]))
  cost = grad.lower(params, jax.ShapeDtypeStruct((batch, seq_len + 1), jnp.int32)).compile()
  cost = cost.cost_analysis()
  xla_flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
  formula = metrics.transformer_flops_per_token(
      gpt.count_params(params) - seq_len * width, layers, width, seq_len)
  assert 1.0 < xla_flops / (batch * seq_len) / formula < 1.02


def test_decode_throughput_tiny(capsys):
  """The decode benchmark's JAX side: greedy, exactly N tokens per row, one JSON line."""
  module = _load_benchmark("decode_throughput")
  result = module.main(["--preset=tiny", "--vocab=256", "--batches=1,2", "--prompt_len=4",
                        "--new_tokens=3", "--repeats=1", "--framework=jax", "--json"])
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed == result
  assert [row["batch"] for row in result["rows"]] == [1, 2]
  for row in result["rows"]:
    assert len(row["jax_seconds"]) == 1 and row["jax_median"] > 0
    assert "hf_t1_median" not in row and "ratio_to_best_hf" not in row


def test_data_throughput_tiny(capsys):
  """The data benchmark builds a token table and reads the same corpus both ways."""
  module = _load_benchmark("data_throughput")
  result = module.main(["--docs=300", "--vocab=300", "--seq_len=63", "--batch=2",
                        "--raw_batches=3", "--cached_batches=3", "--json"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
  assert result["records"] == 270  # 10% held out for validation
  assert result["tokens"] > 300 * 20  # every document has at least 20 words
  assert result["raw_tokens_per_sec"] > 0 and result["cached_tokens_per_sec"] > 0


def test_packing_fill_rankings_shared_prompts_cut_the_tokens(tmp_path, capsys):
  """One pass over 144 training rankings (K up to 5) in each batch layout: every layout
  covers the pass, and sharing each record's prompt computes on fewer tokens than packing
  responses alone, which computes on fewer than unpacked rows."""
  from test_reward import write_rankings  # pylint: disable=g-import-not-at-top
  module = _load_benchmark("packing_fill")
  result = module.main(["--rankings", f"--data={write_rankings(tmp_path / 'r.jsonl')}",
                        "--seq_len=24", "--batch=8", "--pack_rows=24", "--shared_rows=6",
                        "--shared_len=48", "--vocab=300", "--json"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
  assert result["records"] == 144 and result["responses_per_record"] == 5
  unpacked, packed, shared = (result[name] for name in ("unpacked", "packed", "shared"))
  assert unpacked["steps"] == 144 // 8 and packed["steps"] >= 144 // 8
  assert shared["tokens"] < packed["tokens"] < unpacked["tokens"]
