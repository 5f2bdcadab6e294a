#!/usr/bin/env bash
# The one prepared script for a lent GPU (the workplace's `device` tool), sized for its 10-minute
# command limit:
#   1. the `paper` preset's full 15 + 120 epochs for seeds 0, 1 and 2, in parallel on the one GPU
#      (its accuracy over seeds is what is missing; sharing the GPU makes their times no speed
#      figure), stopped at PAPER_SECONDS (seed 0 alone once took 422 s sharing the GPU with 3
#      other runs, so 540 s should fit three);
#   2. then, when BEST_SECONDS > 0 (a second call, PAPER_SECONDS=0 BEST_SECONDS=540), `best`,
#      seed 0, alone (its wall time is a speed figure).
# Finished stages and runs are kept when a limit stops one. Results (no weights) are packed into
# $OUT/gpu_session.tgz, with each run's metrics.json (command, commit, date, machine, seed).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh               # on the GPU machine
#   TRAIN_ARGS="--train-limit 2000 --ae-epochs 1 --dnn-epochs 1 --finetune-epochs 1" DEVICE=cpu \
#     PAPER_SECONDS=60 BEST_SECONDS=60 OUT=/tmp/gpu bash benchmarks/gpu_session.sh
#                                                              # a quick rehearsal on a CPU
set -u
OUT=${OUT:?set OUT to the folder for the results}
WORK=${WORK:-$(mktemp -d)}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export DEEPAUTODNN_DATA=${DEEPAUTODNN_DATA:-.devdata}
mkdir -p "$OUT" "$WORK"
{ nvidia-smi -L; $PY -m deepautodnn info; } > "$WORK/machine.txt" 2>&1

train() {  # train PRESET SEED SECONDS: one training run, its wall time recorded
  local preset=$1 seed=$2 limit=$3 start
  start=$EPOCHREALTIME
  # SIGINT, so the CLI keeps what finished and exits cleanly.
  timeout -s INT "$limit" $PY -m deepautodnn train --preset "$preset" --device "$DEVICE" --seed "$seed" \
    --out "$WORK/$preset-seed$seed" --quiet ${TRAIN_ARGS:-} > "$WORK/$preset-seed$seed.log" 2>&1
  local status=$? end=$EPOCHREALTIME
  echo "$preset seed $seed: exit $status, wall seconds $(awk "BEGIN { print $end - $start }")" >> "$WORK/machine.txt"
}
if [ "${PAPER_SECONDS:-540}" -gt 0 ]; then
  for seed in 0 1 2; do
    train paper "$seed" "${PAPER_SECONDS:-540}" &
  done
  wait
fi
if [ "${BEST_SECONDS:-0}" -gt 0 ]; then
  train best 0 "$BEST_SECONDS"
fi
tar czf "$OUT/gpu_session.tgz" -C "$WORK" --exclude='*.safetensors' --exclude='*.onnx' .
tail -n 3 "$WORK"/*.log "$WORK/machine.txt"
