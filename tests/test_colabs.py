"""Every notebook in colabs/ is valid nbformat 4, its code runs top to bottom, and it shows
what it says (`SHOWS`: checks on the namespace after the last cell).

The code cells run in one namespace, in-process, with the working directory set to
a temporary directory (so runs/ and other outputs stay out of the checkout).
Notebooks locate repository files through the installed package
(`pathlib.Path(rlhf_jax.__file__).parents[1]`), so they do not depend on the
working directory. Skipped: cells that start with a `%` or `!` magic and cells
whose first line is `# colab-only` (installation).

`chatgpt_quickstart.ipynb` finds its workdir holding the session's smoke pipeline stages
(`smoke_pipeline` in conftest.py, the same four smoke stages that test_pipeline_runner.py
tests): its pipeline cell skips the finished stages, as a rerun in Colab does, and the rest
of the notebook (report, curves, chat) runs on them.
"""
import glob
import json
import os
import shutil

import pytest

from conftest import SMOKE_PIPELINE_GROUP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))
# notebook -> the workdir (relative to its working directory) seeded with the smoke pipeline
SEEDED = {"chatgpt_quickstart.ipynb": "runs/chatgpt_quickstart"}
COLAB_ONLY = "# colab-only"


def _pretrain_quickstart(ns):
  import math  # pylint: disable=g-import-not-at-top
  from rlhf_jax import metrics  # pylint: disable=g-import-not-at-top
  assert ns["same"] is True  # the resumed params equal the returned state's
  assert int(ns["state"].step) == ns["config"].total_steps == 40
  evals = [row["eval/loss"] for row in metrics.read_metrics(ns["WORKDIR"]) if "eval/loss" in row]
  assert evals[-1] < evals[0] < math.log(ns["config"].tokenizer.vocab_size) + 0.5


def _world_tour(ns):
  assert all(ns["records"][kind] for kind in ns["KINDS"])
  means = {t: sum(g) / len(g) for t, g in ns["gold_by_tier"].items()}
  assert ns["tiers"][0] == "ideal" and means["ideal"] > 0.9, means


def _reward_model(ns):
  assert ns["rewards_NxK"].shape[0] == len(ns["test_rankings"]) > 0
  assert ns["pairs"], "the disagreement table needs pairs the judge does not tie"


def _chatgpt_quickstart(ns):
  report = ns["report"]
  assert {"base", "sft", "ppo"} <= set(report["policies"])
  assert set(ns["models"]) == {"sft", "ppo"}


# What each notebook shows, checked on its namespace after the last cell.
SHOWS = {"pretrain_quickstart.ipynb": _pretrain_quickstart, "world_tour.ipynb": _world_tour,
         "reward_model.ipynb": _reward_model, "chatgpt_quickstart.ipynb": _chatgpt_quickstart}


def load(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def source(cell) -> str:
  src = cell["source"]
  return src if isinstance(src, str) else "".join(src)


def runnable(cell) -> bool:
  if cell["cell_type"] != "code":
    return False
  text = source(cell).lstrip()
  return bool(text) and not text.startswith(("%", "!", COLAB_ONLY))


def test_notebooks_exist():
  names = {os.path.basename(p) for p in NOTEBOOKS}
  assert {"pretrain_quickstart.ipynb", "world_tour.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_format(path):
  nb = load(path)
  assert nb["nbformat"] == 4 and isinstance(nb["metadata"], dict)
  assert any(runnable(cell) for cell in nb["cells"])
  for i, cell in enumerate(nb["cells"]):
    assert cell["cell_type"] in ("markdown", "code"), (i, cell["cell_type"])
    assert isinstance(cell["metadata"], dict) and source(cell).strip(), f"cell {i} is empty"
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [] and cell["execution_count"] is None, \
          f"cell {i} has outputs; clear them before committing"
      assert "\t" not in source(cell), f"cell {i}: indent with 2 spaces"


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=SMOKE_PIPELINE_GROUP) if os.path.basename(p) in SEEDED else p
    for p in NOTEBOOKS], ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch, request):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  monkeypatch.chdir(tmp_path)
  name = os.path.basename(path)
  if name in SEEDED:
    pipeline_dir, _ = request.getfixturevalue("smoke_pipeline")
    for stage in ("pretrain", "sft", "rm", "ppo"):
      shutil.copytree(os.path.join(pipeline_dir, stage), tmp_path / SEEDED[name] / stage)
  namespace = {"__name__": "__main__"}
  try:
    for i, cell in enumerate(load(path)["cells"]):
      if runnable(cell):
        exec(compile(source(cell), f"{name}[cell {i}]", "exec"), namespace)  # pylint: disable=exec-used
  finally:
    plt.close("all")
  SHOWS[name](namespace)
