"""Every command and code block of README.md runs (with tiny budgets), so none can rot.

Quick start: the demo command runs here with ``--steps 20000``; ``bash .ci/run`` is what CI runs.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TINY = [  # (pattern, replacement): the README's budgets -> test budgets
    ("total_steps=1_000_000", "total_steps=20_000"),
    ("jax.random.split(jax.random.key(0), 4)", "jax.random.split(jax.random.key(0), 1)"),
    ("num_samples=2000", "num_samples=50"),
]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def tiny(code: str) -> str:
    for a, b in TINY:
        code = code.replace(a, b)
    return code


@pytest.mark.parametrize("code", blocks("python"), ids=lambda c: c.splitlines()[0][:40])
def test_python_blocks_run(code):
    out = subprocess.run(
        [sys.executable, "-c", tiny(code)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_bash_blocks_run(tmp_path):
    cmds = [line for b in blocks("bash") for line in b.splitlines() if line.strip()]
    assert cmds == [".venv/bin/python experiments/escape_study.py"]
    args = ["--steps", "20000", "--seeds", "1", "--configs", "lktd_N10000_compat"]
    out = subprocess.run(
        [sys.executable, "experiments/escape_study.py", *args, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| lktd_N10000_compat | 1 |" in (tmp_path / "table.md").read_text()


def test_quick_start_commands():
    quick = README.split("## Quick start")[1].split("##")[0]
    assert "bash .ci/setup && .venv/bin/lktd demo" in quick
    assert "bash .ci/run" in quick
    assert "bash .ci/setup test,exact" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("sub", ["demo", "train", "diagnose", "experiment"])
def test_cli_synopsis_matches_help(sub):
    """Every flag the README's synopsis shows for a subcommand is in its --help."""
    synopsis = README.split("The command line:")[1].split("A run folder")[0]
    lines = [ln for ln in synopsis.splitlines() if ln.strip()]
    text = " ".join(
        ln for ln in lines if f"lktd {sub}" in ln or (sub == "train" and "--config" in ln)
    )
    flags = set(re.findall(r"--[a-z][a-z-]*", text))
    out = subprocess.run(
        [sys.executable, "-m", "lktd_ppl.cli", sub, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    missing = {f for f in flags if f not in out.stdout}
    assert not missing, f"README shows flags that `lktd {sub} --help` lacks: {missing}"
