"""Stopping early on every process at the same step: two CPU processes under jax.distributed
(one fake device each, gloo collectives), and a single process that pays no collective."""
import json
import os
import signal
import subprocess
import sys

from rlhf_jax import preemption

from conftest import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Process 0 gets a Ctrl-C: both agree at the next fetch point (step 4), not before. Then
# process 1 alone gets a SIGTERM: JAX's preemption service stops both at one step, the one
# it arrived at (seen in about 1 run of 8) or a later one.
_WORKER = """
import json, os, signal, sys, time
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from rlhf_jax import preemption
me, seen = jax.process_index(), {"interrupt": None, "preempt": None}
with preemption.StopRequest() as stop:
  if me == 0:
    os.kill(os.getpid(), signal.SIGINT)
  for step in range(1, 9):
    if stop.agreed(step, fetch_point=step % 4 == 0):
      seen["interrupt"] = [step, stop.signum]
      break
with preemption.StopRequest() as stop:
  for step in range(100, 200):
    if me == 1 and step == 102:
      os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)
    if stop.agreed(step, fetch_point=False):
      seen["preempt"] = [step, stop.signum]
      break
print("SEEN", json.dumps(seen), flush=True)
jax.distributed.shutdown()
"""


def test_a_signal_to_one_process_stops_all_of_them_at_the_same_step(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  address = f"127.0.0.1:{free_port()}"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  workers = [subprocess.Popen([sys.executable, str(script), address, str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
  seen = []
  for worker in workers:
    out, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err[-3000:]
    seen.append(json.loads(out.split("SEEN ", 1)[1]))
  assert seen[0] == seen[1], seen
  assert seen[0]["interrupt"] == [4, signal.SIGINT]
  step, signum = seen[0]["preempt"]
  assert step >= 102 and signum == signal.SIGTERM


def test_one_process_reads_its_flag_without_a_collective(monkeypatch):
  def no_collective(values):
    raise AssertionError(f"a collective over {values} in a single-process run")

  monkeypatch.setattr(preemption.multihost_utils, "process_allgather", no_collective)
  monkeypatch.setattr(preemption.ocp.multihost, "reached_preemption", no_collective)
  stop = preemption.StopRequest()
  assert not stop.agreed(3, fetch_point=True)
  stop.signum = signal.SIGTERM
  assert stop.agreed(4, fetch_point=False)
