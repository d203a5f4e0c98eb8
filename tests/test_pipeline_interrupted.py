"""`chatgpt_world.py:smoke` interrupted again and again, each time rerun, then finished: the
same metrics.jsonl rows (timing keys aside) and the same report.json as the uninterrupted run
(the session fixture `smoke_pipeline`).

Each interruption waits for an event of one stage (or of the report), then signals the run a
moment later; the events are fixed, the delays and the logged steps aimed at are drawn from a
seeded RNG:
  step    a step at or past a drawn one was logged (the stage is training)
  save    a checkpoint is being written (orbax's temporary folder is there)
  eval    an evaluation is running (the one at step 0, or one after a logged step)
  report  the report is being written (after "all 4 stages done", before report.json)
A SIGKILL follows a SIGSTOP, so the test sees where the run was when it died; a SIGTERM
(once in every stage) must end the run with status 143 after a checkpoint at the step it
reached and the warning that says so.

The chain is 15 interruptions (CHAIN): 10 SIGKILLs and 4 SIGTERMs in the stages, 1 SIGKILL
in the report. Each costs 5-10 s (a process start, the stage set up again, the work thrown
away): with the compilation cache warm, on 2 cores shared with other work, the chain took
124 s (and the uninterrupted run 68 s). RLHF_JAX_KILLS=N runs a longer one: N
interruptions, the extra ones SIGKILLs at drawn events, spread over the stages and the report.
"""
import json
import os
import random
import re
import signal
import time

from rlhf_jax import metrics, pipeline_runner

from conftest import SMOKE_PIPELINE_GROUP, finish, start_main
from test_pipeline_runner import STAGES, TIMING_KEYS

pytestmark = SMOKE_PIPELINE_GROUP

KILL, TERM = signal.SIGKILL, signal.SIGTERM
# In run order: 11 SIGKILLs and a SIGTERM per stage. Every stage gets a SIGKILL while an
# evaluation runs and another while a checkpoint is written; pretraining and PPO one more
# mid-step; the report one. The SIGTERM comes last in its stage (its checkpoint, at the
# step reached, is where the stage resumes: an aim after it could fall behind it).
CHAIN = [("pretrain", "eval", KILL), ("pretrain", "save", KILL), ("pretrain", "step", KILL),
         ("pretrain", "step", TERM),
         ("sft", "eval", KILL), ("sft", "save", KILL), ("sft", "step", TERM),
         ("rm", "eval", KILL), ("rm", "save", KILL), ("rm", "step", TERM),
         ("ppo", "eval", KILL), ("ppo", "save", KILL), ("ppo", "step", KILL),
         ("ppo", "step", TERM),
         ("report", "report", KILL)]
DELAYS = {"step": (0.0, 0.5), "save": (0.0, 0.2), "eval": (0.0, 0.05), "report": (0.2, 3.0)}
TMP = ".orbax-checkpoint-tmp"


def draw_chain(length: int, seed: int = 0) -> list[dict]:
  """[{stage, event, signum, u, delay}] in run order; `u` in [0, 1) picks the step aimed at."""
  chain = list(CHAIN)
  extra = ("pretrain", "sft", "rm", "ppo", "report")
  rng = random.Random(seed)
  for i in range(max(0, length - len(CHAIN))):
    stage = extra[i % len(extra)]
    event = "report" if stage == "report" else rng.choice(["step", "save", "eval"])
    last = max(j for j, aim in enumerate(chain) if aim[0] == stage)
    chain.insert(last if stage != "report" else last + 1, (stage, event, KILL))
  return [dict(stage=stage, event=event, signum=signum, u=rng.random(),
               delay=rng.uniform(*DELAYS[event])) for stage, event, signum in chain]


def rows_without_timing(stage_dir):
  return [{k: v for k, v in row.items() if k not in TIMING_KEYS}
          for row in metrics.read_metrics(stage_dir)]


def complete_steps(stage_dir) -> list[int]:
  directory = os.path.join(stage_dir, "checkpoints")
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(
      directory) else []


def saves_in_progress(stage_dir) -> set:
  """(name, inode) of orbax's temporary folders: a save that is not committed (yet)."""
  directory = os.path.join(stage_dir, "checkpoints")
  if not os.path.isdir(directory):
    return set()
  with os.scandir(directory) as entries:
    return {(e.name, e.inode()) for e in entries if TMP in e.name}


def rows_since(stage_dir, since: float) -> list[dict]:
  """The rows this run logged (a row's `time` is when it was written)."""
  try:
    with open(os.path.join(stage_dir, "metrics.jsonl"), encoding="utf-8") as f:
      lines = f.readlines()
  except FileNotFoundError:
    return []
  rows = []
  for line in lines:
    try:
      rows.append(json.loads(line))
    except ValueError:
      pass  # a line being written
  return [row for row in rows if row["time"] >= since]


class Run:
  """One `python -m rlhf_jax.main` of the chain, and what its aim looks for."""

  def __init__(self, workdir, aim, reference, stderr_path):
    self.aim, self.workdir = aim, workdir
    self.stage_dir = os.path.join(workdir, "ppo" if aim["stage"] == "report" else aim["stage"])
    self.stale_saves = saves_in_progress(self.stage_dir)
    resume = (complete_steps(self.stage_dir) or [0])[-1]
    self.fresh = resume == 0
    rows = reference[os.path.basename(self.stage_dir)]
    logged = sorted({row["step"] for row in rows if row["step"] > 0})
    # Steps with two rows: training's, then the evaluation's.
    self.eval_steps = {s for s in logged if sum(row["step"] == s for row in rows) == 2}
    # A step aim stays in the first half of the stage, so that a kill a moment after it
    # cannot land after the stage finished; past that, the next logged step.
    later = [s for s in logged if s > resume]
    early = [s for s in later if s <= logged[-1] // 2] or later[:1] or [0]
    self.step = early[int(aim["u"] * len(early))]
    self.stderr_path = stderr_path
    self.since = time.time()
    with open(stderr_path, "w", encoding="utf-8") as stderr:
      self.process = start_main(workdir, stderr=stderr)

  def stderr(self) -> str:
    with open(self.stderr_path, encoding="utf-8") as f:
      return f.read()

  def at_aim(self) -> bool:
    """Whether the run is where the aim wants it (again checked once it is stopped)."""
    event = self.aim["event"]
    if event == "report":
      return ("all 4 stages done" in self.stderr()
              and not os.path.exists(os.path.join(self.workdir, "report.json")))
    if pipeline_runner.is_done(self.stage_dir):
      return False
    if event == "save":
      return bool(saves_in_progress(self.stage_dir) - self.stale_saves)
    rows = rows_since(self.stage_dir, self.since)
    if event == "step":
      return any(row["step"] >= self.step for row in rows)
    if not rows:  # a fresh start evaluates at step 0, after writing info.json
      info = os.path.join(self.stage_dir, "info.json")
      return self.fresh and os.path.exists(info) and os.path.getmtime(info) >= self.since
    step = rows[-1]["step"]
    return step in self.eval_steps and sum(row["step"] == step for row in rows) == 1

  def wait_for_aim(self, timeout=600):
    deadline = time.time() + timeout
    while not self.at_aim():
      assert self.process.poll() is None, (self.aim, self.stderr()[-3000:])
      assert time.time() < deadline, (self.aim, "not reached")
      time.sleep(0.01)
    time.sleep(self.aim["delay"])

  def kill(self) -> tuple[bool, str]:
    """SIGSTOP, then SIGKILL: (whether the run was where the aim wanted it, where it was)."""
    self.process.send_signal(signal.SIGSTOP)
    while (state := _state(self.process.pid)) not in "TtZ":  # T: nothing moves any more
      time.sleep(0.001)
    assert state != "Z", (self.aim, "the run ended first", self.stderr()[-3000:])
    landed = (self.at_aim() if self.aim["event"] != "step"
              else not pipeline_runner.is_done(self.stage_dir))
    rows = rows_since(self.stage_dir, self.since)
    saving = sorted(name for name, _ in saves_in_progress(self.stage_dir) - self.stale_saves)
    self.process.kill()
    self.process.wait()
    return landed, f"step {rows[-1]['step'] if rows else '-'} logged, saving {saving}"

  def terminate(self) -> tuple[bool, str]:
    """SIGTERM: status 143, the warning, a checkpoint at the step reached."""
    self.process.send_signal(signal.SIGTERM)
    assert self.process.wait(timeout=600) == 128 + signal.SIGTERM, self.stderr()[-3000:]
    stderr = self.stderr()
    assert "SIGTERM: the run stops after this step and saves a checkpoint" in stderr
    stopped = re.findall(r"stopped by signal 15; checkpoint saved at step (\d+)", stderr)
    assert len(stopped) == 1, stderr[-3000:]
    step = int(stopped[0])
    assert step >= self.step and complete_steps(self.stage_dir)[-1] == step, stderr[-3000:]
    return True, f"stopped at step {step}"


def _state(pid) -> str:
  """A process's state letter from /proc (T: stopped, Z: ended); without /proc, "T" after
  a moment."""
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      return f.read().rsplit(")", 1)[1].split()[0]
  except FileNotFoundError:
    time.sleep(0.1)
    return "T"


def test_interrupted_at_drawn_moments_of_every_stage_then_rerun_matches(smoke_pipeline,
                                                                        tmp_path):
  reference_dir = smoke_pipeline[0]
  reference = {stage: metrics.read_metrics(os.path.join(reference_dir, stage))
               for stage in STAGES}
  workdir = str(tmp_path / "interrupted")
  chain = draw_chain(int(os.environ.get("RLHF_JAX_KILLS", len(CHAIN))))
  notes, start = [], time.time()
  for i, aim in enumerate(chain):
    run = Run(workdir, aim, reference, str(tmp_path / f"run{i}.stderr"))
    run.wait_for_aim()
    landed, where = run.kill() if aim["signum"] == KILL else run.terminate()
    at = f"step {run.step}" if aim["event"] == "step" else aim["event"]
    notes.append(dict(aim, landed=landed, text=(
        f"{time.time() - start:5.1f}s {aim['stage']}: {signal.Signals(aim['signum']).name} "
        f"{aim['delay']:.2f}s after {at}: {'in it' if landed else 'MISSED'}, {where}")))
    print(notes[-1]["text"])  # shown when the test fails
  finish(start_main(workdir))
  print(f"{time.time() - start:5.1f}s finished")

  for stage in STAGES:
    assert rows_without_timing(os.path.join(workdir, stage)) == rows_without_timing(
        os.path.join(reference_dir, stage)), stage
  with open(os.path.join(workdir, "report.json")) as a, open(
      os.path.join(reference_dir, "report.json")) as b:
    assert json.load(a) == json.load(b)
  for event in ("save", "eval", "report"):  # a kill in each, somewhere
    assert any(note["landed"] for note in notes if note["event"] == event), [
        note["text"] for note in notes]
