"""The shared training loop: every stage runs through `run`.

mesh → task → restore-or-init → jitted step (donated state) → log / eval / checkpoint.
The loop knows nothing stage-specific; a stage is a `rlhf_jax.tasks.base.Task`.
"""
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import threading
import time

import flax.linen as nn
import jax
import tqdm

from rlhf_jax import checkpoint, config_checks, hf, metrics as metrics_lib, sharding
from rlhf_jax.errors import UserError
from rlhf_jax.tasks.base import Task


def make_task(config, workdir: str, mesh) -> Task:
  """`rlhf_jax.tasks.<config.task>.make_task(config, workdir, mesh)` (the name is checked
  by `config_checks.check`)."""
  return importlib.import_module(f"rlhf_jax.tasks.{config.task}").make_task(config, workdir, mesh)


class _StopRequest:
  """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the end of the step and exits."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _write_config(config, workdir: str) -> None:
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(config.to_json(indent=2, sort_keys=True))
  os.replace(path + ".tmp", path)


def _check_resumable(config, workdir: str) -> None:
  """A workdir's checkpoint belongs to its model; refuse another one up front."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  current = json.loads(config.to_json())
  for key in ("task", "model"):
    if key in saved and saved[key] != current[key]:
      raise UserError(f"{workdir} holds a run with a different '{key}' config; resume with "
                      f"the same config or choose a new --workdir")
  if saved.get("total_steps") != current["total_steps"]:
    logging.warning("resuming with total_steps=%s (was %s): the learning-rate schedule "
                    "changes from here on", current["total_steps"], saved.get("total_steps"))


def run(config, workdir: str):
  """Trains `config.task` in `workdir` and returns the final state (for notebooks)."""
  workdir = os.path.abspath(workdir)
  config_checks.check_workdir(workdir)
  # An init_from that is a Hugging Face GPT-2 directory fixes the model's shape.
  config = hf.resolve_config(config)
  config_checks.check(config)
  config_checks.check_inputs(config)
  mesh = sharding.make_mesh(config.mesh)
  config_checks.check_devices(config, mesh)
  if checkpoint.latest_step(workdir) is not None:
    _check_resumable(config, workdir)
  created = _snapshot(workdir)
  try:
    return _train(config, workdir, mesh)
  except UserError:
    # A mistake found before the first checkpoint (data, tokenizer, a warm start that does
    # not fit) leaves the workdir as it was: a rerun must not take the config.json or
    # tokenizer.json of a failed start for progress.
    if checkpoint.latest_step(workdir) is None:
      _remove_new(workdir, created)
    raise


def _snapshot(workdir: str) -> tuple[str | None, set[str]]:
  """(the topmost directory on the way to `workdir` that does not exist yet, or None when
  `workdir` exists; the names in `workdir` now)."""
  top, path = None, workdir
  while not os.path.exists(path):
    top, path = path, os.path.dirname(path)
  return top, (set(os.listdir(workdir)) if top is None else set())


def _remove_new(workdir: str, snapshot: tuple[str | None, set[str]]) -> None:
  """Removes what this run added since `_snapshot`: the directories it created, or the new
  entries of a workdir that existed."""
  top, names = snapshot
  if top is not None:
    shutil.rmtree(top, ignore_errors=True)
    return
  for name in set(os.listdir(workdir)) - names:
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)


def _train(config, workdir: str, mesh):
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_ckpts)
  try:
    return _start_and_loop(config, workdir, mesh, ckpt)
  finally:
    ckpt.wait()
    ckpt.close()


def _start_and_loop(config, workdir: str, mesh, ckpt):
  """Task, then the restored or fresh (and warm-started) state, then `_loop`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
    task = make_task(config, workdir, mesh)
    init_rng, train_rng, eval_rng = jax.random.split(jax.random.key(config.seed), 3)
    abstract_state = jax.eval_shape(task.init, init_rng)
    state_shardings = task.state_shardings(abstract_state)

    # Resume order:
    # 1. a checkpoint in workdir -> restore the state and the data-iterator position;
    # 2. else config.init_from (another stage's workdir, or a Hugging Face GPT-2
    #    directory converted on the fly) -> fresh state, then warm start;
    # 3. else a fresh init.
    if ckpt.latest_step() is not None:
      state, data_state = ckpt.restore(abstract_state, state_shardings)
    else:
      state = jax.jit(task.init, out_shardings=state_shardings)(init_rng)
      if config.init_from:
        state = task.warm_start(state)
      data_state = None
    _write_config(config, workdir)
    start_step = int(jax.device_get(state.step))
    data_iter = task.train_data(data_state)

    writer = metrics_lib.Writer(workdir, start_step)
    if task.info:
      logging.info("task info: %s", task.info)
      with open(os.path.join(workdir, "info.json"), "w", encoding="utf-8") as f:
        json.dump(task.info, f, indent=2, sort_keys=True)
    step_fn = jax.jit(task.step, in_shardings=(state_shardings, None, None),
                      out_shardings=(state_shardings, None), donate_argnums=(0,))
    peak = metrics_lib.peak_flops_per_device(config.peak_flops_per_device) * mesh.size
    with _StopRequest() as stop, contextlib.closing(writer):
      if start_step == 0 and config.eval_every:
        writer.write(0, task.evaluate(state, jax.random.fold_in(eval_rng, 0)))
      state = _loop(config, task, mesh, state, step_fn, data_iter, train_rng, eval_rng,
                    writer, ckpt, start_step, peak, stop)
    if stop.signum is not None:
      logging.warning("stopped by signal %d; checkpoint saved at step %d", stop.signum,
                      int(jax.device_get(state.step)))
      if stop.signum == signal.SIGINT:
        raise KeyboardInterrupt
      raise SystemExit(128 + stop.signum)
  return state


def _loop(config, task, mesh, state, step_fn, data_iter, train_rng, eval_rng, writer, ckpt,
          start_step, peak_flops, stop):
  """Steps start_step+1 .. the task's total steps. Metrics are fetched one step late, so the host
  never waits on the step it just dispatched. Progress: a bar on a terminal, else (a log
  file, CI) a plain log line every log_every steps."""
  total = task.total_steps or config.total_steps
  progress = tqdm.tqdm(total=total, initial=start_step, dynamic_ncols=True, disable=None,
                       desc=config.task)
  start_time = time.perf_counter()
  throughput = metrics_lib.Throughput(task.flops_per_step, peak_flops)
  pending = None  # (step, device metrics) of the last dispatched step

  def finish(step, device_metrics):
    host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    metrics_lib.check_finite(step, host)
    throughput.step_done(host.get("train/tokens", 0.0))
    if step % config.log_every == 0 or step == total:
      host.update(throughput.report())
      writer.write(step, host)
      if progress.disable:  # tqdm found no terminal: a plain line instead of the bar
        logging.info("%s", metrics_lib.progress_line(config.task, step, total, host,
                                                     time.perf_counter() - start_time,
                                                     step - start_step))
      else:
        progress.set_postfix({k.split("/")[1]: f"{host[k]:.4g}" for k in
                              ("train/loss", "train/tokens_per_sec") if k in host})
    progress.update(1)

  for step in range(start_step + 1, total + 1):
    batch = sharding.device_batch(next(data_iter), mesh)
    state, device_metrics = step_fn(state, batch, jax.random.fold_in(train_rng, step))
    if pending is not None:
      finish(*pending)
    pending = (step, device_metrics)
    epoch_end = task.steps_per_epoch and step % task.steps_per_epoch == 0
    evaluate = config.eval_every and (step % config.eval_every == 0 or step == total
                                      or epoch_end)
    save = (step == total or stop.signum is not None
            or (config.ckpt_every and step % config.ckpt_every == 0))
    if evaluate or save:
      finish(*pending)
      pending = None
      if evaluate:
        writer.write(step, task.evaluate(state, jax.random.fold_in(eval_rng, step)))
      if save:
        ckpt.save(step, state, data_iter.get_state())
      throughput.pause()
    if stop.signum is not None:
      break
  if pending is not None:
    finish(*pending)
  progress.close()
  return state
