#!/usr/bin/env bash
# The one prepared script for a lent GPU (the workplace's `device` tool). One run at a time, so each
# wall time is a real speed figure: the `paper` preset's full 15 + 120 epochs, then `fast`, then
# `best`, all seed 0, each stopped at its own time limit (finished stages are kept). Afterwards
# `deepautodnn bench --what infer` on the GPU machine's CPU is not run: timings there say nothing
# about this project's CPU. Results (no weights) are packed into $OUT/gpu_session.tgz.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh               # on the GPU machine
#   TRAIN_ARGS="--train-limit 2000 --ae-epochs 1 --dnn-epochs 1 --finetune-epochs 1" DEVICE=cpu \
#     PAPER_SECONDS=60 FAST_SECONDS=60 BEST_SECONDS=60 OUT=/tmp/gpu bash benchmarks/gpu_session.sh
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

run() {  # run PRESET SECONDS: one training run alone on the GPU, its wall time recorded
  local preset=$1 limit=$2 start
  start=$EPOCHREALTIME
  # SIGINT, so the CLI keeps what finished and exits cleanly.
  timeout -s INT "$limit" $PY -m deepautodnn train --preset "$preset" --device "$DEVICE" --seed 0 \
    --out "$WORK/$preset-seed0" --quiet ${TRAIN_ARGS:-} > "$WORK/$preset-seed0.log" 2>&1
  local status=$? end=$EPOCHREALTIME
  echo "$preset: exit $status, wall seconds $(awk "BEGIN { print $end - $start }")" >> "$WORK/machine.txt"
}
run paper "${PAPER_SECONDS:-240}"
run fast "${FAST_SECONDS:-120}"
run best "${BEST_SECONDS:-240}"
tar czf "$OUT/gpu_session.tgz" -C "$WORK" --exclude='*.safetensors' --exclude='*.onnx' .
tail -n 3 "$WORK"/*.log "$WORK/machine.txt"
