#!/usr/bin/env bash
# The escape study on a lent GPU machine (one GPU, 16 cores, no network) for one call of at most
# about 9 minutes.  GPU_PROCS processes share the GPU (device memory allocated as needed, not
# preallocated), each running GPU_CONFIG's missing seeds one at a time (--shard i/GPU_PROCS); the
# cores left run CPU_CONFIGS (3 pinned workers per config, CPU_SEEDS seeds each).  Every process
# stops a run projected to miss the deadline.  Run files land in $STUDY/runs/ one per seed, as on
# this CPU (--no-aggregate leaves them unfolded); the new ones are packed into $OUT/new_runs.tar,
# logs into $OUT/logs/.  Unpack the tar into the study folder here and run
# `escape_study.py --aggregate-only`, which folds them into each row's compact runs.npz.
#
#   bash experiments/gpu_study.sh            (packages that machine lacks travel in .devpkgs/)
#
# What one GPU process, several sharing the GPU, and CPU workers beside them achieve is measured
# in experiments/results/bench_escape_run.md: size SECS, GPU_PROCS and CPU_CONFIGS from there.
set -u
SECS=${SECS:-520}
GPU_CONFIG=${GPU_CONFIG:-lktd_N10000_m10}
GPU_SEEDS=${GPU_SEEDS:-100}
GPU_PROCS=${GPU_PROCS:-4}
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

for i in $(seq 0 $((GPU_PROCS - 1))); do  # cores 15, 14, ... for the GPU processes' host loops
    XLA_PYTHON_CLIENT_PREALLOCATE=false pin $((15 - i)) timeout "$(left)" $PY $S \
        --configs "$GPU_CONFIG" --seeds "$GPU_SEEDS" --shard "$i/$GPU_PROCS" "${A[@]}" \
        --deadline-s "$(left)" > "$L/gpu_$i.log" 2>&1 &
done
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
