"""Every experiment file: loads, has a run-book docstring, and its `:smoke` variant trains."""
import glob
import importlib.util
import os

import pytest

from rlhf_jax import metrics, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))


def load_experiment(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def shakespeare_like(path):
  """A plain-text play excerpt in tinyshakespeare's format (speaker, colon, lines)."""
  speakers = ["First Citizen", "MENENIUS", "CORIOLANUS", "Second Citizen"]
  lines = ["We are accounted poor citizens, the patricians good.",
           "What authority surfeits on would relieve us.",
           "Let us kill him, and we'll have corn at our own price.",
           "Nay, but speak not maliciously."]
  with open(path, "w", encoding="utf-8") as f:
    for i in range(600):
      f.write(f"{speakers[i % 4]}:\n{lines[i % 4]}\n{lines[(i * 7) % 4]}\n\n")
  return str(path)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_config_loads_and_documents_itself(path):
  module = load_experiment(path)
  doc = module.__doc__ or ""
  assert "python -m rlhf_jax.main" in doc and ":smoke" in doc, "run-book docstring"
  config = module.get_config()
  smoke = module.get_config("smoke")
  assert config.task == smoke.task
  with pytest.raises(ValueError):
    module.get_config("nonsense")


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if "pretrain" in p], ids=os.path.basename)
def test_smoke_variant_trains(path, tmp_path):
  config = load_experiment(path).get_config("smoke")
  if config.data.tfds_name:  # offline: the catalog default replaced by a local file
    config.data.path = shakespeare_like(tmp_path / "input.txt")
  workdir = str(tmp_path / "run")
  train.run(config, workdir)
  evals = [r["eval/loss"] for r in metrics.read_metrics(workdir) if "eval/loss" in r]
  assert len(evals) >= 2 and evals[-1] < evals[0], evals
