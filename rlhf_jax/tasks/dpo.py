"""DPO and IPO: the SFT policy learns the preference data directly, with no reward model and
no sampling in training (Rafailov et al., 2023; Azar et al., 2023).

Batch (`pipeline.preference_iterator`, the reward model's data): tokens and response_mask
int32[B, K, L], ranking int32[B, K] (0 = best, ties equal, -1 = missing). A step is one
compiled program: per microbatch, the B·K rows go once through the policy (with
gradients) and once through the frozen reference (the SFT weights, carried in the state),
  h_k = log π(y_k | x) − log π_ref(y_k | x), summed over response k's tokens and its EOS.
Loss (`dpo.loss`): "dpo", the Plackett–Luce likelihood of the ranking under the implicit
rewards r_k = β·h_k (`losses.dpo_loss`; pairs: −log σ(r_w − r_l)); "ipo",
(h_w − h_l − 1/(2β))² over the ranking's pairs (`losses.ipo_loss`).

Training metrics: train/loss, train/accuracy (labelled pairs the implicit reward orders
right, ties ½), train/reward_margin (mean r_w − r_l), per prompt. Evaluation on held-out
records (the world's test split, else validation; the reward model's), under dpo/: loss,
accuracy with its 95% interval, reward_margin, ece, accuracy by family and by rank gap,
and on gold-judged rankings label_ceiling and gold_agreement (`reward_metrics` on the
implicit rewards); kl, KL(π ‖ π_ref) of one response per held-out prompt sampled at
temperature 1, with its interval (`evaluation.sampled_kl`); on world data, gold/score of
the policy's responses to the world's held-out prompts (`evaluation.gold_evaluator`) and
WORKDIR/samples.jsonl. At step 0 the policy is the reference: accuracy ½, margin 0, kl 0.

Dimensions: B batch, K responses per prompt, L row length, R = B·K rows, N prompts.
"""
import functools
import os

import flax
import jax
import jax.numpy as jnp

from rlhf_jax import evaluation, losses
from rlhf_jax.data import store
from rlhf_jax.tasks import base, lm, preferences, reward_metrics
from rlhf_jax.tasks.base import PyTree, Task, TrainState

LOSSES = {"dpo": losses.dpo_loss, "ipo": losses.ipo_loss}


@flax.struct.dataclass
class DPOState(TrainState):
  """The policy's TrainState plus the frozen reference's params (never updated)."""
  reference_params: PyTree


def sequence_log_probs(model, params, tokens_BxKxL, response_mask_BxKxL, rng=None,
                       deterministic=True):
  """log π(y_k | x) [B, K]: Σ over response k's tokens (its mask: response and EOS) of
  log p(token | the tokens before it), one forward over the B·K right-padded rows."""
  b, k, l = tokens_BxKxL.shape
  tokens_RxL = tokens_BxKxL.reshape(b * k, l)
  rngs = {} if deterministic else {"dropout": rng}
  logits_RxLxV, _ = model.apply({"params": params}, tokens_RxL[:, :-1],
                                deterministic=deterministic, rngs=rngs)
  log_probs_RxL = losses.token_log_probs(logits_RxLxV, tokens_RxL[:, 1:])
  mask_RxL = response_mask_BxKxL.reshape(b * k, l)[:, 1:] > 0
  return jnp.sum(jnp.where(mask_RxL, log_probs_RxL, 0.0), axis=1).reshape(b, k)


def log_ratios(model, params, reference_params, tokens_BxKxL, response_mask_BxKxL, rng=None,
               deterministic=True):
  """h [B, K] = log π(y_k | x) − log π_ref(y_k | x); no gradient reaches the reference."""
  policy_BxK = sequence_log_probs(model, params, tokens_BxKxL, response_mask_BxKxL, rng,
                                  deterministic)
  reference_BxK = sequence_log_probs(model, reference_params, tokens_BxKxL, response_mask_BxKxL)
  return policy_BxK - jax.lax.stop_gradient(reference_BxK)


def init_fn(model, tx, seq_len: int):
  """rng → fresh DPOState: a random policy and a copy of it as the reference."""
  train_init = lm.init_fn(model, tx, seq_len)

  def init(rng):
    state = train_init(rng)
    return DPOState(step=state.step, params=state.params, opt_state=state.opt_state,
                    reference_params=jax.tree.map(jnp.copy, state.params))
  return init


def warm_start_fn(init_from: str):
  """state → state whose policy and reference are init_from's GPT (separate buffers: the
  state is donated to the step)."""
  load = lm.warm_start_params(init_from)

  def warm_start(state):
    state = load(state)
    return state.replace(reference_params=jax.tree.map(jnp.copy, state.params))
  return warm_start


def _kl_prompts(config, tok, model_cfg, source):
  """Left-padded chat prompts [N, P] of the first `dpo.kl_prompts` held-out records."""
  records = [{"messages": source[i]["prompt"]}
             for i in range(min(config.dpo.kl_prompts, len(source)))]
  return evaluation.chat_prompts(tok, records, model_cfg.max_len - config.sampling.max_new_tokens)


def _gold_evaluator(config, model, tok, mesh, workdir: str):
  """Gold judging of the policy on the world's held-out RL prompts (the PPO stage's), or
  None for data that is not the world's."""
  if not config.data.path.startswith("world:"):
    return None
  prompts = store.local_dataset(config.data.path.rsplit("/", 1)[0] + "/prompts", "prompts",
                                cache=config.data.cache_dir)
  return evaluation.gold_evaluator(config, prompts, model, tok, mesh,
                                   os.path.join(workdir, evaluation.SAMPLES_FILE))


def make_task(config, workdir: str, mesh) -> Task:
  cfg = config.dpo
  splits, k, eval_split, tok, iterator, steps_per_epoch = preferences.prepare(config, workdir,
                                                                             "dpo")
  seq_len = config.data.seq_len
  model_cfg, model = lm.build_model(config, tok.vocab_size)
  total_steps = base.total_steps(config, steps_per_epoch)
  tx, lr_schedule = lm.optimizer(config, total_steps)
  preference_loss = functools.partial(LOSSES[cfg.loss], beta=cfg.beta)

  def loss_sum(params, batch, rng, reference_params, deterministic=True):
    logratios_BxK = log_ratios(model, params, reference_params, batch["tokens"],
                               batch["response_mask"], rng, deterministic)
    loss, count = preference_loss(logratios_BxK, batch["ranking"])
    rewards_BxK = cfg.beta * logratios_BxK
    accuracy, _ = losses.ranking_accuracy(rewards_BxK, batch["ranking"])
    margin, _ = losses.ranking_margin(rewards_BxK, batch["ranking"])
    return loss, (count, {"accuracy": accuracy, "reward_margin": margin})

  def step(state, batch, rng):
    policy_step = lm.gradient_step(
        functools.partial(loss_sum, reference_params=state.reference_params,
                          deterministic=False),
        tx, lr_schedule, config.optim.grad_accum_steps, count_name="train/prompts")
    return policy_step(state, batch, rng)

  init = init_fn(model, tx, seq_len)
  score_fn = jax.jit(lambda both, batch: log_ratios(model, *both, batch["tokens"],
                                                     batch["response_mask"]))
  eval_loss = jax.jit(lambda rewards, ranking: preference_loss(rewards / cfg.beta, ranking))
  eval_batches = preferences.eval_batches(config, mesh, iterator, splits, eval_split)
  kl_tokens, kl_mask = (_kl_prompts(config, tok, model_cfg, splits[eval_split])
                        if cfg.kl_prompts else (None, None))
  gold = _gold_evaluator(config, model, tok, mesh, workdir)

  def evaluate(state, rng):
    kl_rng, gold_rng = jax.random.split(rng)
    logratios, ranking, index = preferences.score_batches(
        score_fn, (state.params, state.reference_params), eval_batches())
    metas = [splits[eval_split][int(i)].get("meta", {}) for i in index]
    results = reward_metrics.summarize(cfg.beta * logratios, ranking, metas, prefix="dpo",
                                       loss_fn=eval_loss)
    results["dpo/reward_margin"] = results.pop("dpo/margin")
    if kl_tokens is not None:
      kl_N = evaluation.sampled_kl(
          model, state.params, state.reference_params, kl_tokens, kl_mask, kl_rng, mesh=mesh,
          batch_size=config.gold_eval.batch_size, eos_id=tok.eos_id, pad_id=tok.pad_id,
          max_new_tokens=config.sampling.max_new_tokens)
      results.update(zip(("dpo/kl", "dpo/kl_lo", "dpo/kl_hi"), evaluation.interval(kl_N)))
    if gold is not None:
      results.update(gold(state.params, gold_rng, int(jax.device_get(state.step))))
    return results

  # Tokens per step is an upper bound (padding included); the reference forward adds a
  # third of the policy's forward + backward FLOPs.
  flops_per_step, info = lm.model_info(init, model_cfg, tok.vocab_size, seq_len,
                                       config.batch_size * k * seq_len)
  info.update(flops_formula=info["flops_formula"] + "; x 4/3 for the reference forward",
              train_records=len(splits["train"]), eval_records=len(splits[eval_split]),
              eval_split=eval_split, responses_per_record=k, steps_per_epoch=steps_per_epoch,
              total_steps=total_steps, loss=cfg.loss, beta=cfg.beta)
  return Task(
      init=init,
      step=step,
      evaluate=evaluate,
      state_shardings=lm.logical_state_shardings(mesh, config),
      train_data=lambda state: iterator(splits["train"], state=state),
      warm_start=warm_start_fn(config.init_from),
      flops_per_step=flops_per_step * 4 / 3,
      info=info,
      total_steps=total_steps,
      steps_per_epoch=steps_per_epoch,
  )
