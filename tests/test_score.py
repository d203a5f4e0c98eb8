"""`python -m rlhf_jax.score`: normalised rewards per record, every input form, file:line errors."""
import gzip
import json
import subprocess
import sys

import numpy as np

from rlhf_jax import score
from test_reward import rm_data, trained_rm  # pylint: disable=unused-import  (fixtures)
from test_train import REPO


def run_score(capsys, *argv):
  code = score.main(list(argv))
  out, err = capsys.readouterr()
  return code, [json.loads(line) for line in out.splitlines()], err


def test_scores_every_form_and_the_reference_mean_is_zero(trained_rm, rm_data, tmp_path, capsys):
  rankings, references = rm_data
  code, reference_rows, _ = run_score(capsys, "--workdir", trained_rm, "--data", references)
  assert code == 0 and len(reference_rows) == 24
  rewards = np.array([row["reward"] for row in reference_rows], np.float64)
  assert abs(rewards.mean()) < 1e-3 and rewards.std() > 1e-2

  out = tmp_path / "scores.jsonl"
  assert score.main(["--workdir", trained_rm, "--data", rankings, "--out", str(out)]) == 0
  records = [json.loads(line) for line in open(rankings)]
  scored = [json.loads(line) for line in open(out)]
  assert len(scored) == len(records)
  for record, row in zip(records[:20], scored):
    assert row["ranking"] == record["ranking"]
    assert len(row["rewards"]) == len(record["responses"])
  # A response scored alone, or as a pair, gets the reward it gets inside its ranking.
  record, row = records[3], scored[3]
  single = tmp_path / "single.jsonl.gz"
  with gzip.open(single, "wt", encoding="utf-8") as f:
    f.write(json.dumps({"prompt": record["prompt"], "response": record["responses"][1],
                        "meta": {"id": 3}}) + "\n")
    f.write(json.dumps({"prompt": record["prompt"], "chosen": record["responses"][1],
                        "rejected": record["responses"][0]}) + "\n")
  code, (alone, pair), _ = run_score(capsys, "--workdir", trained_rm, "--data", str(single))
  assert code == 0 and alone["meta"] == {"id": 3} and pair["ranking"] == [0, 1]
  np.testing.assert_allclose(alone["reward"], row["rewards"][1], atol=1e-5)
  np.testing.assert_allclose(pair["rewards"], [row["rewards"][1], row["rewards"][0]], atol=1e-5)


def test_a_bad_record_is_one_line_naming_file_and_line(trained_rm, tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"prompt": "hi", "response": "ok"}\n\n{"prompt": "hi", "responses": ["a"]}\n')
  result = subprocess.run([sys.executable, "-m", "rlhf_jax.score", "--workdir", trained_rm,
                           "--data", str(path)], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2 and result.stdout == ""
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {path}:3: 'responses' must be"), lines
