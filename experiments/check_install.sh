#!/usr/bin/env bash
# A non-editable install of this checkout into a fresh venv outside it, then the demo and a
# training run of a shipped model, run from an empty folder (no checkout on the path).
# Usage: bash experiments/check_install.sh [STEPS]   (writes experiments/results/check_install.md)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
steps=${1:-50000}
py=$("$repo/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
start=$(date +%s)
"$work/venv/bin/python" -m pip install -q "$repo" 2>&1 | grep -v "^WARNING: Location" || true
installed=$(( $(date +%s) - start ))
cd "$work" && mkdir run && cd run
where=$("$work/venv/bin/python" -c 'import lktd_ppl, os; print(os.path.dirname(lktd_ppl.__file__))')
start=$(date +%s)
"$work/venv/bin/lktd" demo --steps "$steps" --out demo -q > demo.txt
demo_s=$(( $(date +%s) - start ))
start=$(date +%s)
"$work/venv/bin/lktd" train --algo lktd --model mlp_q:sarsa_afterstate_spike_slab --steps 20000 \
  --set escape.window=5000 --out afterstate -q > train.txt
train_s=$(( $(date +%s) - start ))
{
  echo "# A non-editable install outside the checkout"
  echo
  echo "Made by: \`bash experiments/check_install.sh $steps\` on $(date -u +%Y-%m-%d) ($(nproc) cores)."
  echo "\`pip install $repo\` (not editable) into a fresh venv took ${installed} s; lktd_ppl installed"
  echo "at \`${where#"$work"/}\` under the venv. From an empty folder:"
  echo
  echo "- \`lktd demo --steps $steps --out demo -q\`: exit 0 in ${demo_s} s; its table:"
  echo
  sed -n '/^| action/,/^| avg/p' demo.txt
  echo
  echo "- \`lktd train --algo lktd --model mlp_q:sarsa_afterstate_spike_slab --steps 20000 --set escape.window=5000\`:"
  echo "  exit 0 in ${train_s} s; the run folder's model.py is the shipped file's copy: $(cmp -s afterstate/model.py "$where/models/mlp_q.py" && echo yes || echo NO)."
} > "$repo/experiments/results/check_install.md"
cat "$repo/experiments/results/check_install.md"
