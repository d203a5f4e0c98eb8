#!/usr/bin/env bash
# Every GPU measurement of benchmarks/RESULTS.md in one call, within a time budget.
#
#   bash benchmarks/gpu_suite.sh [BUDGET_SECONDS]      # results under $OUT (default /tmp/gpu_out)
#   SUITE="pretrain_b32 smoke" bash benchmarks/gpu_suite.sh 360   # a subset
#
# Installs wheels from .whl/ when present (packages the machine lacks), then runs, in order
# of priority and each under what is left of the budget: pretraining throughput (GPT-2 124M,
# T = 1024, bf16, cuDNN attention, with a kernel-time breakdown), decode throughput, the PPO
# iteration, and the smoke pipeline end to end. One JSON line per benchmark goes to
# $OUT/results.jsonl; everything printed goes to $OUT/log.txt.
set -u
BUDGET=${1:-560}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
exec > >(tee -a "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

SUITE=${SUITE:-"pretrain_b32 ppo_lhp decode_b256 pretrain_b64 smoke"}
wanted() { [[ " $SUITE " == *" $1 "* ]]; }

bench() {  # bench NAME LIMIT_S COMMAND...: one JSON line from the command's last stdout line
  local name=$1 limit=$2; shift 2
  wanted "$name" || return 0
  local t=$(left); [ "$t" -lt "$limit" ] && limit=$t
  if [ "$limit" -lt 20 ]; then echo "== $name: skipped, budget spent"; return; fi
  echo "== $name (limit ${limit}s) $*"
  local begin=$(date +%s)
  timeout "$limit" "$@" > "/tmp/$name.out"; local rc=$?
  tail -n 1 "/tmp/$name.out" | python3 -c "import json,sys
line = sys.stdin.read().strip()
try: row = json.loads(line)
except ValueError: row = {'unparsed': line[-300:]}
row.update(name='$name', rc=$rc, wall_s=$(date +%s)-$begin)
print(json.dumps(row))" >> "$OUT/results.jsonl"
  echo "-- $name rc=$rc wall=$(( $(date +%s) - begin ))s"; tail -c 1500 "$OUT/results.jsonl" | tail -n 1 | cut -c1-1500
}

G="--preset=gpt2 --seq_len=1024 --dtype=bfloat16 --attention=cudnn --json"
bench pretrain_b32 150 python3 benchmarks/pretrain_throughput.py $G --batch=32 --steps=20 --warmup=3 --profile_steps=3
bench ppo_lhp 200 python3 benchmarks/ppo_iteration.py --preset=gpt2 --vocab=50257 --batch=512 \
  --prompt_len=64 --response_len=24 --epochs=4 --minibatches=8 --dtype=bfloat16 --steps=5 --json
bench decode_b256 120 python3 benchmarks/decode_throughput.py --preset=gpt2 --vocab=50257 \
  --batches=256 --prompt_len=128 --new_tokens=128 --framework=jax --dtype=bfloat16 \
  --param_dtype=bfloat16 --repeats=3 --json
bench pretrain_b64 100 python3 benchmarks/pretrain_throughput.py $G --batch=64 --steps=10 --warmup=2

t=$(left)
if wanted smoke && [ "$t" -gt 60 ]; then
  echo "== smoke pipeline (limit ${t}s)"
  begin=$(date +%s)
  timeout "$t" python3 -m rlhf_jax.main --config=experiments/chatgpt_world.py:smoke \
    --workdir=/tmp/smoke_pipeline > /tmp/smoke.log 2>&1; rc=$?
  echo "-- smoke pipeline rc=$rc wall=$(( $(date +%s) - begin ))s"
  grep -E "stage|report written|error" /tmp/smoke.log | tail -n 20
  cp /tmp/smoke.log "$OUT/smoke_pipeline.log"
  [ -f /tmp/smoke_pipeline/report.json ] && cp /tmp/smoke_pipeline/report.json "$OUT/smoke_report.json"
fi
echo "== done in $(( $(date +%s) - START ))s"
