"""What every stage hands the shared loop: a `Task` of pure functions, and its state.

A step is `(state, batch, rng) -> (state, metrics)`: pure, jitted once by the
loop with explicit shardings and the state donated. Metrics are flat dicts of
scalar arrays named `<namespace>/<name>`.
"""
import functools
from typing import Any, Callable, Iterator, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

PRNGKey = jax.Array
PyTree = Any
State = Any
Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


class Task(NamedTuple):
  """One training stage.

  init: fresh state from a key; pure, so the loop can `eval_shape` and jit it sharded.
  step: one optimisation step.
  evaluate: host-side evaluation (may run several jitted functions and sampling) → floats.
  state_shardings: abstract state → NamedShardings of the same structure.
  train_data: the iterator, resumed from a saved position (None = from the start);
    it has `get_state()` → JSON-serialisable dict, and yields per-process NumPy batches.
  warm_start: state → state with weights loaded from `config.init_from` (called only
    when it is set and no checkpoint exists in the workdir).
  flops_per_step: model FLOPs of one step (0 = unknown: no MFU logged).
  info: derived numbers (param counts, tokens per step, ...) logged once at start.
  total_steps: how many steps the run takes (the task derives it, e.g. from epochs).
  steps_per_epoch: steps in one pass over the training data (0 = unknown, e.g. packed
    streams); the loop also evaluates at every epoch boundary.
  check_metrics: host-side look at each logged row of float metrics (e.g. a warning);
    None = nothing to check.
  """
  init: Callable[[PRNGKey], State]
  step: Callable[[State, Batch, PRNGKey], tuple[State, Metrics]]
  evaluate: Callable[[State, PRNGKey], dict[str, float]]
  state_shardings: Callable[[State], PyTree]
  train_data: Callable[[dict | None], Iterator[Batch]]
  warm_start: Callable[[State], State]
  flops_per_step: float = 0.0
  info: dict | None = None
  total_steps: int = 0
  steps_per_epoch: int = 0
  check_metrics: Callable[[dict], None] | None = None


def total_steps(config, steps_per_epoch: int) -> int:
  """`config.epochs` passes over the data when set (> 0), else `config.total_steps`.

  One epoch is `steps_per_epoch` = ⌊examples / batch⌋ steps; batches run across
  epoch boundaries (the data order is reshuffled per epoch), so no example is dropped.
  """
  from rlhf_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if config.epochs < 0 or config.total_steps < 0:
    raise UserError(f"epochs={config.epochs}, total_steps={config.total_steps}: "
                    "use non-negative values")
  if not config.epochs:
    return config.total_steps
  if not steps_per_epoch:
    raise UserError(f"epochs={config.epochs} needs a dataset of known size, which this "
                    f"task's data is not; set --config.total_steps instead and epochs=0")
  return max(1, round(config.epochs * steps_per_epoch))


@flax.struct.dataclass
class TrainState:
  """Pretrain / SFT / RM state. Params may be `nn.Partitioned` boxes (logical axis names)."""
  step: jax.Array
  params: PyTree
  opt_state: PyTree

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def apply_gradients(self, grads, tx: optax.GradientTransformation) -> "TrainState":
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


def split_microbatches(x_BxN, num_micro: int):
  """[B, ...] -> [num_micro, B / num_micro, ...], microbatch i = rows i, i + m, i + 2m, ...

  Strided, not contiguous: the batch is sharded over the data-parallel devices in
  contiguous blocks, so taking every m-th row gives each microbatch rows from every
  device's block, and every microbatch runs on all devices with no data movement (a
  contiguous split would put microbatch i on the i-th share of the devices and make XLA
  all-gather the batch). The gradient sum is the same set of rows either way.
  """
  rows_per_micro = x_BxN.shape[0] // num_micro
  return jnp.swapaxes(x_BxN.reshape(rows_per_micro, num_micro, *x_BxN.shape[1:]), 0, 1)


def accumulate_gradients(loss_sum_fn, params, batch: Batch, rng: PRNGKey, num_micro: int):
  """Gradient of Σ loss over the batch, split into `num_micro` sequential microbatches.

  `loss_sum_fn(params, microbatch, rng) -> (loss_sum, (count, aux))`: the summed loss,
  the number of items it sums over, and a dict of summed auxiliary values.
  Returns (grads of mean loss, mean loss, count, aux sums), where mean = Σ sums / Σ counts,
  so the result equals one big batch exactly (up to float summation order).
  """
  grad_fn = jax.value_and_grad(loss_sum_fn, has_aux=True)
  if num_micro == 1:
    (loss_sum, (count, aux)), grads = grad_fn(params, batch, rng)
  else:
    micro = jax.tree.map(functools.partial(split_microbatches, num_micro=num_micro), batch)

    def body(carry, inputs):
      i, microbatch = inputs
      (s, (c, a)), g = grad_fn(params, microbatch, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (s, c, a, g)), None

    (_, (c0, a0)), g0 = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng)
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                         (jax.ShapeDtypeStruct((), jnp.float32), c0, a0, g0))
    (loss_sum, count, aux, grads), _ = jax.lax.scan(body, zeros,
                                                    (jnp.arange(num_micro), micro))
  count = jnp.maximum(count, 1)
  grads = jax.tree.map(lambda g: g / count, grads)
  return grads, loss_sum / count, count, aux
