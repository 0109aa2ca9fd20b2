#!/usr/bin/env bash
# The escape study on a lent GPU machine (one GPU, 16 cores, no network) for one call of at most
# about 9 minutes.  One process runs GPU_CONFIG's missing seeds on the GPU, GPU_BATCH seeds vmapped
# per batch (device memory allocated as needed, not preallocated); the cores left run CPU_CONFIGS
# (a 3-process job per config, CPU_SEEDS seeds each).  Every process stops a run projected to miss
# the deadline.  Run files land in $STUDY/runs/ one per batch, as on this CPU (--no-aggregate
# leaves them unfolded); the new ones are packed into $OUT/new_runs.tar, logs into $OUT/logs/.
# Unpack the tar into the study folder here and run `escape_study.py --aggregate-only`, which
# folds them into each row's compact runs.npz.
#
#   bash experiments/gpu_study.sh            (packages that machine lacks travel in .devpkgs/)
#
# Several processes sharing one GPU added no throughput (experiments/results/bench_escape_run.md);
# vmapped seeds are the way to fill it (`lktd experiment bench --only accelerator` times them).
set -u
SECS=${SECS:-520}
GPU_CONFIG=${GPU_CONFIG:-lktd_N10000_m10}
GPU_SEEDS=${GPU_SEEDS:-100}
GPU_BATCH=${GPU_BATCH:-16}
CPU_CONFIGS=${CPU_CONFIGS:-}
CPU_SEEDS=${CPU_SEEDS:-4}
STEPS=${STEPS:-1000000}
STUDY=${STUDY:-experiments/results/escape}  # the study folder (runs/ under it)
OUT=${OUT:-/tmp/gpu_study_out}
PY=${PY:-python3}
PIN=${PIN:-1}  # 0: no core pinning (a dry run on a smaller machine)

export PYTHONPATH=$PWD/.devpkgs:$PWD PYTHONUNBUFFERED=1
end=$((SECONDS + SECS))
left() { echo $((end - SECONDS > 1 ? end - SECONDS : 1)); }
pin() { if [ "$PIN" = 1 ]; then taskset -c "$@"; else "${@:2}"; fi; }
S=experiments/escape_study.py
A=(--steps "$STEPS" --out "$STUDY" --no-aggregate)
L=$OUT/logs
mkdir -p "$L"
touch /tmp/gpu_study_t0
{ nvidia-smi -L; nproc; $PY -c "import jax; print(jax.__version__, jax.devices())"; } > "$L/env.log" 2>&1

XLA_PYTHON_CLIENT_PREALLOCATE=false pin 15 timeout "$(left)" $PY $S \
    --configs "$GPU_CONFIG" --seeds "$GPU_SEEDS" --batch "$GPU_BATCH" "${A[@]}" \
    --deadline-s "$(left)" > "$L/gpu.log" 2>&1 &
j=0
for c in $CPU_CONFIGS; do  # cores 0-2, 3-5, ...
    JAX_PLATFORMS=cpu pin $((3 * j))-$((3 * j + 2)) timeout "$(left)" \
        $PY $S --configs "$c" --seeds "$CPU_SEEDS" --workers 3 "${A[@]}" \
        --deadline-s "$(left)" > "$L/cpu_$c.log" 2>&1 &
    j=$((j + 1))
done
wait
(cd "$STUDY" && find runs -name 'seeds_*.npz' -newer /tmp/gpu_study_t0 \
    | tar cf "$OUT/new_runs.tar" -T -)
tar tf "$OUT/new_runs.tar" | wc -l
