#!/usr/bin/env bash
# Create (or reuse) .venv-sb3: a Python 3.11 venv with Stable-Baselines3, a CPU build of torch and
# Box2D (LunarLander),
# for experiments/sb3_reference.py (an outside reference; it does not import lktd_ppl, and none of
# this is in the project's install or CI).
# Usage: bash experiments/sb3_setup.sh    ($PYTHON311 overrides the interpreter, default python3)
# torch==2.13.0 is pinned so that pip takes the CPU wheel on this machine's disk: an unpinned torch
# (asked for by stable-baselines3's range) would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON311:-python3}
"$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
  echo "error: $py is not Python 3.11 (set PYTHON311=/path/to/python3.11)" >&2
  exit 1
}
[ -x .venv-sb3/bin/python ] || "$py" -m venv .venv-sb3
start=$(date +%s)
# torch first and alone, so the resolver never sees a range it could satisfy with another build
.venv-sb3/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
.venv-sb3/bin/python -m pip install -q torch==2.13.0 stable-baselines3==2.9.2 gymnasium==1.3.0 \
  box2d==2.3.10 pygame-ce==2.5.8 2>&1 | grep -v "^WARNING: Location" || true
.venv-sb3/bin/python - <<'EOF'
import gymnasium, stable_baselines3, torch
print(f"torch {torch.__version__} (cuda: {torch.version.cuda}), "
      f"stable-baselines3 {stable_baselines3.__version__}, gymnasium {gymnasium.__version__}")
EOF
echo "sb3_setup: $(( $(date +%s) - start )) s; $(du -sh .venv-sb3 | cut -f1) in .venv-sb3"
