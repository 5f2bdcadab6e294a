#!/usr/bin/env bash
# The one prepared script for a lent GPU (the workplace's `device` tool): in parallel processes on
# one GPU, the `paper` preset's full 15 + 120-epoch run (seed 0) and the ablation study (seeds 0, 1,
# 2, one process each, sharing one folder). Everything stops at GPU_SESSION_SECONDS; finished
# epochs and rows are kept. Results (no weights) are packed into $OUT/gpu_session.tgz.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh               # on the GPU machine
#   TRAIN_ARGS="--train-limit 2000 --ae-epochs 1 --dnn-epochs 2" ABLATE_ARGS="--train-limit 2000 \
#     --labels 100,all" DEVICE=cpu GPU_SESSION_SECONDS=120 OUT=/tmp/gpu bash benchmarks/gpu_session.sh
#                                                              # a quick rehearsal on a CPU
set -u
OUT=${OUT:?set OUT to the folder for the results}
WORK=${WORK:-$(mktemp -d)}
LIMIT=${GPU_SESSION_SECONDS:-480}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export DEEPAUTODNN_DATA=${DEEPAUTODNN_DATA:-.devdata}
mkdir -p "$OUT" "$WORK"
{ nvidia-smi -L; $PY -m deepautodnn info; } > "$WORK/machine.txt" 2>&1
start=$(date +%s)
# SIGINT, so the CLI keeps what finished and exits cleanly.
timeout -s INT "$LIMIT" $PY -m deepautodnn train --preset paper --device "$DEVICE" --seed 0 \
  --out "$WORK/paper-seed0" --quiet ${TRAIN_ARGS:-} > "$WORK/paper-seed0.log" 2>&1 &
for seed in 0 1 2; do
  timeout -s INT "$LIMIT" $PY -m deepautodnn ablate --device "$DEVICE" --seeds "$seed" \
    --out "$WORK/ablation" ${ABLATE_ARGS:-} > "$WORK/ablation-seed$seed.log" 2>&1 &
done
wait
echo "wall seconds: $(( $(date +%s) - start ))" >> "$WORK/machine.txt"
tar czf "$OUT/gpu_session.tgz" -C "$WORK" --exclude='*.safetensors' .
tail -n 3 "$WORK"/*.log
