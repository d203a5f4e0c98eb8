"""Tiny PPO configs shared by the PPO tests (and the kill/resume subprocess)."""
import json

from rlhf_jax import configs

TOPICS = ("bread", "bikes", "chess", "tomatoes", "poems", "rivers", "clouds", "stars")


def write_prompts(path, num_records: int = 160) -> str:
  """RL prompts {"messages": [user turn]} about a handful of topics."""
  with open(path, "w", encoding="utf-8") as f:
    for i in range(num_records):
      topic = TOPICS[i % len(TOPICS)]
      text = f"Tell me about {topic}, number {i}." if i % 3 else f"Why are {topic} nice?"
      f.write(json.dumps({"messages": [{"role": "user", "content": text}]}) + "\n")
  return str(path)


def controlled(prompts_path, **overrides):
  """PPO of a fresh 1-layer policy against reward = +1 per response token among 30 chosen
  ids (a tenth of the vocabulary), with the adaptive KL controller."""
  c = configs.base_config()
  c.task = "ppo"
  c.data.path = prompts_path
  c.model.update(preset="tiny", num_layers=1, embed_dim=32, num_heads=2, max_len=64)
  c.tokenizer.vocab_size = 300
  c.batch_size = 32
  c.total_steps = 30
  c.optim.update(lr=3e-3, schedule="constant", warmup_steps=0, weight_decay=0.0, b2=0.99)
  c.log_every = 1
  c.eval_every = 0
  c.ckpt_every = 4
  c.gold_eval.num_prompts = -1
  c.ppo = configs.ppo_block()
  c.ppo.update(reward="token_count:" + ",".join(str(i) for i in range(100, 130)),
               critic_from="policy", max_prompt_len=16, response_len=8, kl_coef=0.4,
               target_kl=3.0, kl_horizon=160.0, epochs=2, num_minibatches=2)
  return configs.override(c, **overrides)
