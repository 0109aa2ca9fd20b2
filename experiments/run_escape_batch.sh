#!/usr/bin/env bash
# The seed schedule run in the background (resumable: finished batches are skipped). Extend the
# counts and rerun to add seeds; the full counts are escape_study.py's defaults.
set -u
cd "$(dirname "$0")/.."
py=.venv/bin/python
run() { $py experiments/escape_study.py --configs "$1" --seeds "$2" ; }
run lktd_N10000_compat 10
run lktd_N10000_eqspeed 4
run lktd_N10000 4
run sgld_N10000_compat 4
run sghmc_N10000_compat 4
run dqn 4
run bootdqn 3
run qrdqn 3
run lktd_N10000_m10 2
# exploration towards a calibrated configuration (see RESULTS.md), run beside the schedule:
run explore_N40000 2
run explore_N40000_compat 2
run explore_N10000_m4 1
run explore_N40000_m4 1
run explore_N10000_eps5e-6 2
run explore_N10000_batch500 2
run lktd_N2500_compat 3
run lktd_N5000_compat 3
run lktd_N2500 2
run lktd_N5000 2
run lktd_N10000_compat 20
run lktd_N10000_m10 6      # ran in a second process beside the lines below
run lktd_N10000_compat 30
run dqn 8
run qrdqn 6
run sgld_N10000_compat 8
run sghmc_N10000_compat 8
run kova_compat 1          # about 3 h per 1M-step run on this CPU: not finished this session
# second session (2026-11-27), after the speed-ups; what actually ran:
run dqn_flax_init 20        # (ran as "dqn" and "qrdqn" before the official initialisation)
run qrdqn_flax_init 20
run sgld_N10000_compat 20
run sghmc_N10000_compat 16  # stopped at 16 to free the CPU
# the 100 official-configuration runs, from scratch with the current code, timed (30.1 min):
$py experiments/escape_study.py --configs lktd_N10000_compat --seeds 100 --workers 2
$py experiments/escape_study.py --configs dqn,qrdqn --seeds 20 --workers 2
$py experiments/escape_study.py --configs explore_N10000_anneal1,explore_N10000_m4_anneal1 --workers 2
$py experiments/escape_study.py --configs bootdqn --seeds 20 --workers 2   # stopped when the session ended
# third session (2026-11-27 afternoon); workers now pinned one per core:
$py experiments/escape_study.py --configs kova_compat --seeds 5 --workers 2      # about 10 min per run
$py experiments/escape_study.py --configs explore_N10000_m4_anneal2,explore_N10000_m4_anneal1.5 --workers 2
$py experiments/escape_study.py --configs lktd_N10000 --seeds 100 --workers 2 --out /tmp/timing   # the timed run (22.4 min), copied into runs/
$py experiments/escape_study.py --configs bootdqn_official_masks --seeds 10 --workers 2
$py experiments/escape_study.py --configs bootdqn,sghmc_N10000_compat,lktd_N2500_compat,lktd_N5000_compat,lktd_N2500,lktd_N5000,lktd_N10000_eqspeed --seeds 20 --workers 2
$py experiments/escape_study.py --configs explore_N10000_m10_anneal1.5,explore_N10000_m10_anneal2 --workers 2
$py experiments/escape_study.py --configs kova --seeds 1                          # diverged at about 900k steps
$py experiments/escape_study.py --configs lktd_N10000_m10 --seeds 100 --workers 2   # stopped when the session ended
# fourth session (2026-11-27 evening): a lent H200 machine (bench_escape_run.md). Its first call
# (an earlier gpu_study.sh: 86 headline seeds vmapped on the GPU, stopped as too slow; 12 cores on
# exploration rows) gave explore_N{40000,160000}_m10{,_anneal1.5}, 3 seeds each; its third, one
# process on the GPU (of 8 started; the rest had no GPU memory), headline seeds 17 and 25:
#   CPU_CONFIGS="explore_N40000_m10 explore_N160000_m10 explore_N40000_m10_anneal1.5 explore_N160000_m10_anneal1.5" CPU_SEEDS=6 ...
#   python3 experiments/escape_study.py --configs lktd_N10000_m10 --seeds 100 --shard 3/8 --no-aggregate
$py experiments/escape_study.py --configs explore_N10000_m10_anneal1.5_batch500 --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N10000_m10_anneal1.5_shared --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N10000_m10_anneal1.5_T0.25 --seeds 2 --workers 2
$py experiments/decompose_spread.py explore_N10000_m10_anneal1.5 --seed 7          # and ..._shared
$py experiments/escape_study.py --configs explore_N10000_m20 --seeds 4 --workers 2
$py experiments/escape_study.py --configs lktd_N10000_m10 --seeds 100 --workers 2   # 16 -> 48 runs, stopped to leave time for CI
# fifth session (2026-11-27 night): the headline's 52 missing runs (6782 s with two workers), the
# chains' cost at full length, the three-chain check of decompose_spread.py --subsets
$py experiments/escape_study.py --configs lktd_N10000_m10 --seeds 100 --workers 2   # 48 -> 100 runs
$py experiments/bench_escape_run.py --chains-only --chain-steps 1000000
$py experiments/decompose_spread.py --from-npz SAVED.npz --subsets                 # both saved runs
$py experiments/escape_study.py --configs explore_N10000_m3_anneal1.5 --seeds 8 --workers 2
# sixth session (2026-11-28 small hours): the error the chains share, twice the step, the
# preconditioner (one chain, plain and annealed)
$py experiments/escape_study.py --configs explore_N10000_m10_eps4.4e-5 --seeds 4 --workers 2
$py experiments/escape_study.py --configs explore_N10000_precond10,explore_N10000_precond100 --seeds 4 --workers 2
$py experiments/escape_study.py --configs explore_N10000_precond100_anneal1,explore_N10000_precond100_anneal1.5,explore_N10000_precond1000,explore_N10000_precond1000_anneal1,explore_N10000_precond1000_anneal1.5 --seeds 4 --workers 2
$py experiments/decompose_spread.py explore_N10000_m4 --seed 7 --set '{}'            # and the --set variants in spread_decomposition.md
$py experiments/decompose_spread.py --from-npz SAVED.npz --plot experiments/results/escape/error_map_m10_anneal1.5_seed7.png
$py experiments/escape_study.py --configs explore_N10000_m10_precond100 --seeds 4 --workers 2   # 843 s
$py experiments/bench_escape_run.py --precond-only --chain-steps 1000000
# seventh session (2026-11-28): ten chains annealed ^-1 on a lent H200 (4 GPU processes; the CPU
# rows beside them were stopped by the deadline, nothing kept), the frozen-buffer posteriors, twice
# the sample window
# (the exact call, with its three CPU rows, is in experiments/results/bench_escape_run.md)
SECS=480 GPU_CONFIG=explore_N10000_m10_anneal1 GPU_SEEDS=40 GPU_PROCS=4 \
    bash experiments/gpu_study.sh                                               # on the GPU machine
$py experiments/frozen_buffer.py --seeds 0 1 2 3 4 5 6 7                       # two processes
$py experiments/frozen_buffer.py --seeds 0 --set '{"escape": {"buffer_size": 30000}}'   # and 1
$py experiments/frozen_buffer.py --seeds 0 --run-only --windows 1000 3000 6000 \
    --set '{"escape": {"sample_size": 10000, "evals_per_window": 1}}'            # and 1
$py experiments/escape_study.py --configs explore_N10000_m10_window6000 --seeds 8 --workers 2
$py experiments/escape_study.py --configs explore_N10000_m10_window6000 --seeds 16 --workers 2   # 1514 s
# eighth session (2026-11-28): ten chains with a plain Gaussian prior; the frozen-buffer posteriors'
# calibration, at the run's step and at a tenth of it
$py experiments/escape_study.py --configs explore_N10000_m10_gauss --seeds 8 --workers 2
$py experiments/frozen_buffer.py --seeds 0 1 2 3                              # and 4 5 6 7 beside it
$py experiments/frozen_buffer.py --seeds 0 --warmup 40000 --frozen-set '{"step_size": 2.2e-6}'   # and 1
$py experiments/frozen_buffer.py --seeds 0 --set '{"pseudo_population": 30000, "escape": {"buffer_size": 30000}}' \
    --warmup 120000 --frozen-phases 2.2e-6:40000,7e-7:40000 --frozen-set '{"step_size": 2.2e-7}'   # and 1; and 50000 with --mode-iters 0
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_anneal1.5,explore_N50000_buffer50000_m10 --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10 --seeds 4 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10 --seeds 8 --workers 2
# ninth session: eps0 lowered by degrees near the end only (step_size_drops)
$py experiments/escape_study.py --configs explore_N30000_buffer30000_m10_drop100,explore_N50000_buffer50000_m10_drop30 --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop50,explore_N50000_buffer50000_m10_drop100 --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100_early --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100 --seeds 6 --workers 2
$py experiments/decompose_spread.py explore_N50000_buffer50000_m10_drop100 --seed 0 --subsets   # and --seed 1 beside it
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m20_drop100 --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100 --seeds 8 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100_precond100 --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N100000_buffer100000_m10_drop100 --seeds 2 --workers 2
# tenth session: one shared start for the drop's chains; the headline's ten chains with one mild
# late drop (eps0 / 3 or / 10 from stage 70 000); the action-input network (models/mlp_q.py)
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100_shared,explore_N10000_m10_drop10at70k,explore_N10000_m10_drop3at70k --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100_actin --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N10000_m10_drop3at70k --seeds 32 --workers 2
# eleventh session: the late drop at the paper's settings towards the issue's 100 runs (stopped
# where the session's time ran out; the same command resumes it)
$py experiments/escape_study.py --configs explore_N10000_m10_drop3at70k --seeds 100 --workers 2
# and beside it, on one worker: fewer chains with the action-input network after the drop
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m2_drop100_actin --seeds 2 --workers 1
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m3_drop100_actin,explore_N50000_buffer50000_m3_drop30_actin --seeds 2 --workers 1
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m5_drop100_actin --seeds 8 --workers 1
# twelfth session: the late drop at the paper's settings finished to 100 runs; four chains at 1/30;
# the near-point model of the calibration curve (reads the runs, writes near_point_calibration.md)
$py experiments/escape_study.py --configs explore_N10000_m10_drop3at70k --seeds 100 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m4_drop30_actin --seeds 4 --workers 2
$py experiments/near_point_calibration.py
# thirteenth session: networks that tie a rare action to the common ones (models/mlp_q.py: the
# action as its move, and the afterstate), buffer and N 50 000, the late drops
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m5_drop100_after,explore_N50000_buffer50000_m5_drop100_move --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m5_drop30_after,explore_N50000_buffer50000_m3_drop100_after,explore_N10000_m5_drop100_after --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m5_drop100_early_after,explore_N50000_buffer50000_m10_drop100_after --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m5_drop100_after_temp0.5,explore_N50000_buffer50000_m5_drop300_after,explore_N50000_buffer50000_m4_drop100_after --seeds 2 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop150_after --seeds 4 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100_after --seeds 12 --workers 2
# fourteenth session: the afterstate row to the study's 20 runs, then 10 more
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100_after --seeds 20 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop100_after --seeds 30 --workers 2
$py experiments/per_run_calibration.py explore_N50000_buffer50000_m10_drop100_after explore_N50000_buffer50000_m10_drop150_after explore_N50000_buffer50000_m5_drop100_after explore_N50000_buffer50000_m5_drop300_after explore_N50000_buffer50000_m5_drop100_actin
# fifteenth session: ten afterstate chains at a last step of 1/150 to 30 runs (seeds 0-29, the
# seeds the step was chosen on), then seeds 30-49 held out; the paired change against 1/100; the
# verdict on each set of seeds
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop150_after --seeds 20 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop150_after --seeds 30 --workers 2
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop150_after --seeds 50 --workers 2
$py experiments/per_run_calibration.py explore_N50000_buffer50000_m10_drop100_after explore_N50000_buffer50000_m10_drop150_after explore_N50000_buffer50000_m5_drop100_after explore_N50000_buffer50000_m5_drop300_after explore_N50000_buffer50000_m5_drop100_actin --paired explore_N50000_buffer50000_m10_drop100_after explore_N50000_buffer50000_m10_drop150_after
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop150_after --held-out-from 30
$py experiments/escape_study.py --aggregate-only
# sixteenth session: the prediction for a last step of 1/225 (written before any run finished),
# then the row over seeds 0-49 in order (resumable; the count it reached is in table.md)
$py experiments/per_run_calibration.py --project explore_N50000_buffer50000_m10_drop100_after explore_N50000_buffer50000_m10_drop150_after
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop225_after --seeds 50 --workers 2
# seventeenth-eighteenth sessions: the prediction for held-out seeds 50-99 from seeds 0-49 alone
# (written before any of them finished), the held-out seeds (stop rule: whatever finished by a
# fixed time: seeds 50-81), the prediction for seeds 82-99 from seeds 0-81, the rest, the verdicts
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop225_after --held-out-from 50 --predict 50
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop225_after --seeds 100 --workers 2
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop225_after --held-out-from 50 --seeds-below 82
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop225_after --held-out-from 82 --predict 18 --seeds-below 100 --out experiments/results/escape/predicted_explore_N50000_buffer50000_m10_drop225_after_seeds82-99.md
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop225_after --held-out-from 82 --seeds-below 100 --out experiments/results/escape/held_out_explore_N50000_buffer50000_m10_drop225_after_seeds82-99.md
$py experiments/escape_study.py --aggregate-only
# nineteenth session: seeds 50-99 as one held-out set of 50; the prediction for seeds 100-149 from
# seeds 0-99 (written before any finished; the held-out set is what finished by 01:25 UTC); those
# seeds, which keep their last window per cell; whether their misses are what calibrated
# intervals with errors as correlated over the grid would give; the verdicts
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop225_after --held-out-from 50 --seeds-below 100 --out experiments/results/escape/held_out_explore_N50000_buffer50000_m10_drop225_after_seeds50-99.md
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop225_after --held-out-from 100 --predict 50 --out experiments/results/escape/predicted_explore_N50000_buffer50000_m10_drop225_after_seeds100+.md
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_drop225_after --seeds 150 --workers 2
$py experiments/held_out.py explore_N50000_buffer50000_m10_drop225_after --held-out-from 100 --out experiments/results/escape/held_out_explore_N50000_buffer50000_m10_drop225_after_seeds100+.md
$py experiments/error_correlation.py explore_N50000_buffer50000_m10_drop225_after --from-seed 100
# the same ten afterstate chains at the full step to the end (no drops): do the drops make the
# 1/225 row's shared low error?
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_nodrop_after --seeds 10 --workers 2 --no-aggregate
$py experiments/escape_study.py --configs explore_N50000_buffer50000_m10_nodrop_after --seeds 20 --workers 2 --no-aggregate
$py experiments/error_correlation.py explore_N50000_buffer50000_m10_nodrop_after
$py experiments/escape_study.py --aggregate-only
