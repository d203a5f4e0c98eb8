"""The shared training loop: every stage runs through `run`.

mesh → task → restore-or-init → jitted step (donated state) → log / eval / checkpoint.
The loop knows nothing stage-specific; a stage is a `rlhf_jax.tasks.base.Task`.

Several processes (`jax.distributed`) run this same loop: every step, evaluation and
checkpoint save is collective (orbax writes each file once), and the metrics are global
values alike on every process, so process 0 alone writes the run's files (config.json,
info.json, metrics.jsonl, tb/, tokenizer.json) and shows progress.
"""
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import time

import flax.linen as nn
import jax
import tqdm

from rlhf_jax import (checkpoint, config_checks, hf, metrics as metrics_lib, preemption,
                      sharding)
from rlhf_jax.errors import UserError
from rlhf_jax.tasks.base import Task


def make_task(config, workdir: str, mesh) -> Task:
  """`rlhf_jax.tasks.<config.task>.make_task(config, workdir, mesh)` (the name is checked
  by `config_checks.check`)."""
  return importlib.import_module(f"rlhf_jax.tasks.{config.task}").make_task(config, workdir, mesh)


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
    # tokenizer.json of a failed start for progress. (Process 0 wrote them; it removes them.)
    if checkpoint.latest_step(workdir) is None and jax.process_index() == 0:
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
  """The task (its data and tokenizer checked), then the checkpointer, then the run."""
  os.makedirs(workdir, exist_ok=True)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
    task = make_task(config, workdir, mesh)
  # Made after the task: a data or tokenizer mistake then finds no checkpointer (orbax's
  # background clean-up of the directory) running while the failed start is undone.
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_ckpts)
  try:
    return _start_and_loop(config, workdir, mesh, task, ckpt)
  finally:
    ckpt.close()  # waits for the last save: a failed one (a full disk) raises here


def _start_and_loop(config, workdir: str, mesh, task, ckpt):
  """The restored or fresh (and warm-started) state, then `_loop`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
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
    start_step = int(jax.device_get(state.step))
    data_iter = task.train_data(data_state)

    writer = metrics_lib.Writer(workdir, start_step)
    if jax.process_index() == 0:
      _write_config(config, workdir)
      if task.info:
        logging.info("task info: %s", task.info)
        with open(os.path.join(workdir, "info.json"), "w", encoding="utf-8") as f:
          json.dump(task.info, f, indent=2, sort_keys=True)
    step_fn = jax.jit(task.step, in_shardings=(state_shardings, None, None),
                      out_shardings=(state_shardings, None), donate_argnums=(0,))
    peak = metrics_lib.peak_flops_per_device(config.peak_flops_per_device) * mesh.size
    with preemption.StopRequest() as stop, contextlib.closing(writer):
      if start_step == 0 and config.eval_every and config.eval_at_start:
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
  """Steps start_step+1 .. the task's total steps.

  The host fetches from the device (`fetch`: one `jax.device_get`) only at log steps, one
  step late (after the next step is dispatched, so the device never waits on the host);
  and at once at the first step of the session (it compiled: the throughput clock starts
  after it), before an evaluation or a checkpoint, at a stop and at the last step. Between
  fetches the device tallies tokens and the first NaN/Inf metric (`metrics_lib.tally_add`),
  and steps are dispatched under a device-to-host transfer guard: a sync that creeps in
  raises (on accelerators; CPU arrays live in host memory and are never guarded). A
  divergence stops the run at the fetch that sees it; the fetch before a save also checks
  the state itself (`metrics_lib.all_finite`), so no NaN/Inf state is ever saved.
  Progress (process 0's): a bar on a terminal, else (a log file, CI) a plain log line every
  log_every steps.
  """
  total = task.total_steps or config.total_steps
  shows_progress = jax.process_index() == 0
  progress = tqdm.tqdm(total=total, initial=start_step, dynamic_ncols=True,
                       disable=None if shows_progress else True, desc=config.task)
  start_time = time.perf_counter()
  throughput = metrics_lib.Throughput(task.flops_per_step, peak_flops)
  empty_tally = tally = None
  pending = None  # (step, device metrics, device tally) of a log step, fetched one step late
  fetched = start_step  # the last step fetched

  def on_schedule(step):  # saved even when no stop comes
    return step == total or bool(config.ckpt_every and step % config.ckpt_every == 0)

  def fetch(step, device_metrics, device_tally, state_finite=True):
    nonlocal fetched
    host, host_tally, state_finite = jax.device_get((device_metrics, device_tally, state_finite))
    metrics_lib.check_finite(host_tally, bool(state_finite), step, ckpt.latest_step())
    throughput.add(step - fetched, float(host_tally["tokens"]))
    progress.update(step - fetched)
    fetched = step
    if step % config.log_every == 0 or step == total:
      host = {k: float(v) for k, v in host.items()}
      host.update(throughput.report())
      writer.write(step, host)
      if task.check_metrics is not None:
        task.check_metrics(host)
      if not progress.disable:
        progress.set_postfix({k.split("/")[1]: f"{host[k]:.4g}" for k in
                              ("train/loss", "train/tokens_per_sec") if k in host})
      elif shows_progress:  # tqdm found no terminal: a plain line instead of the bar
        logging.info("%s", metrics_lib.progress_line(config.task, step, total, host,
                                                     time.perf_counter() - start_time,
                                                     step - start_step))

  for step in range(start_step + 1, total + 1):
    with jax.transfer_guard_device_to_host("disallow"):
      batch = sharding.device_batch(next(data_iter), mesh)
      state, device_metrics = step_fn(state, batch, jax.random.fold_in(train_rng, step))
      if empty_tally is None:
        empty_tally = metrics_lib.tally_start(device_metrics)
      tally = metrics_lib.tally_add(empty_tally if tally is None else tally, step,
                                    device_metrics)
    if pending is not None:
      fetch(*pending)
      pending = None
    epoch_end = (config.eval_at_epoch_end and task.steps_per_epoch
                 and step % task.steps_per_epoch == 0)
    evaluate = config.eval_every and (step % config.eval_every == 0 or step == total
                                      or epoch_end)
    save = on_schedule(step)
    at_once = evaluate or save or step == start_step + 1
    log = step % config.log_every == 0
    stopping = stop.agreed(step, fetch_point=bool(at_once or log))
    if at_once or log or stopping:
      pending, tally = (step, device_metrics, tally), None
    if at_once or stopping:
      fetch(*pending, metrics_lib.all_finite(state) if save or stopping else True)
      pending = None
      if evaluate:
        writer.write(step, task.evaluate(state, jax.random.fold_in(eval_rng, step)))
      if save or stopping:
        ckpt.save(step, state, data_iter.get_state(), on_schedule)
      throughput.restart()
    if stopping:
      break
  progress.close()
  return state
