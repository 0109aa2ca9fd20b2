"""Writes the output blocks of ``docs/tutorial.md`` from the code as it is: runs the tutorial's
commands in a scratch folder, in order, and puts what they print (or write into their run
folders) under each ``<!-- output: NAME -->`` line of the tutorial.

    .venv/bin/python experiments/tutorial_outputs.py --write          # the tutorial's budgets
    .venv/bin/python experiments/tutorial_outputs.py --steps 20000    # tiny: print, write nothing

The blocks (:data:`OUTPUTS`): ``demo`` (the demo's table), ``priors`` (the three prior and
noise runs' averages, from their ``summary.md``), ``diagnose`` (``lktd diagnose``, abridged)
and ``exact`` (the exact-posterior check's printout); ``--write`` also copies the figures
(:data:`IMAGES`) from the same runs. Only the blocks up to the last one an
output needs are run (the control tasks and what follows them are not).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)
MARKER = re.compile(r"^<!-- output: (\w+) -->\n(```\w*\n.*?^```\n|(?:\|[^\n]*\n)+)", re.M | re.S)
# the runs the priors table reads: (its label, its run folder)
PRIOR_RUNS = (
    ("Gaussian, sd 0.5, SIGMA 0.1", "gaussian"),
    ("Laplace, scale 0.5, SIGMA 0.1", "laplace"),
    ("Laplace, scale 0.5, SIGMA 0.2", "laplace-sigma0.2"),
)
# the rows the abridged diagnose report keeps: actions of the convergence table, cells of the
# selected Q-values
DIAGNOSE_ACTIONS = ("E", "W", "all")
DIAGNOSE_CELLS = ("(0, 0) E", "(8, 9) W")
LAST_NEEDED = "linear_gaussian_posterior"  # the code of the last block an output needs
# the tutorial's figures (docs/ path -> the run folder's file), copied with --write
IMAGES = {
    "img/demo_coverage_over_time.png": "runs/demo/coverage_over_time.png",
    "img/gaussian_trace.png": "runs/gaussian/trace.png",
    "img/gaussian_calibration.png": "runs/gaussian/calibration.png",
}


def tutorial_blocks(text: str) -> list[tuple[str, str]]:
    """The tutorial's runnable blocks up to the last one an output needs: (kind, code)."""
    blocks = [(m[1], m[2]) for m in BLOCK.finditer(text)]
    last = max(i for i, (_, code) in enumerate(blocks) if LAST_NEEDED in code)
    return blocks[: last + 1]


def shrink(kind: str, code: str, steps: int | None) -> str:
    """``code`` with its budgets cut to ``steps`` (None: as written): ``--steps`` of every run
    and the demo's length (python blocks run as written, as in ``tests/test_cli.py``)."""
    if steps is None or kind == "python":
        return code
    code = re.sub(r"--steps (\d+)", lambda m: f"--steps {min(int(m[1]), steps)}", code)
    return re.sub(r"^lktd demo$", f"lktd demo --steps {steps}", code, flags=re.M)


def run_blocks(folder: Path, steps: int | None) -> list[tuple[str, str, str]]:
    """Runs the tutorial's blocks in ``folder`` (``models/`` linked in): (kind, code, stdout)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "models").exists():
        (folder / "models").symlink_to(ROOT / "models")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = []
    for kind, code in tutorial_blocks(TUTORIAL.read_text()):
        code = shrink(kind, code, steps)
        cmd = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable]
        cmd += ["-c", code] if kind == "python" else []
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tutorial block failed:\n{code}\n{proc.stderr[-2000:]}")
        done.append((kind, code, proc.stdout))
    return done


def output_of(done: list[tuple[str, str, str]], pattern: str) -> str:
    """The stdout of the block whose code matches ``pattern``."""
    for _, code, out in done:
        if re.search(pattern, code, re.M):
            return out
    raise LookupError(f"no tutorial block matches {pattern!r}")


def demo_block(stdout: str) -> str:
    """The demo's report: what it prints before the run folder's listing."""
    report = stdout.split("\nRun folder:")[0].rstrip("\n")
    return "```text\n" + report + "\n```\n"


def avg_row(summary: str) -> dict[str, str]:
    """The ``avg`` row of a run's ``summary.md`` table, by column."""
    lines = [ln for ln in summary.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    (avg,) = [ln for ln in lines if ln.startswith("| avg")]
    return dict(zip(head, (c.strip() for c in avg.strip("|").split("|")), strict=True))


def priors_block(folder: Path) -> str:
    """The prior and noise runs' action-averaged equal-tailed coverage, MSE and width."""
    rows = [
        "| prior, noise | equal-tailed coverage (avg) | MSE (avg) | width (avg) |",
        "|---|---|---|---|",
    ]
    for label, run in PRIOR_RUNS:
        a = avg_row((folder / "runs" / run / "summary.md").read_text())
        rows.append(f"| {label} | {a['equal-tailed']} | {a['MSE']} | {a['width']} |")
    return "\n".join(rows) + "\n"


def diagnose_block(stdout: str) -> str:
    """The report's summary line and its two tables, each cut to the rows the tutorial reads."""
    lines = stdout.splitlines()
    out, table = [next(ln for ln in lines if ln and not ln.startswith("#"))], None
    for ln in lines[1:]:
        if ln.startswith("## "):
            table = ln if ln.startswith(("## Convergence", "## Selected")) else None
            if table:
                out += ["", ln, ""]
            continue
        if table is None or not ln.startswith("|"):
            continue
        keep = DIAGNOSE_ACTIONS if table.startswith("## Convergence") else DIAGNOSE_CELLS
        first = ln.strip("|").split("|")[0].strip()
        if first in keep or ln.startswith("|---") or out[-1] == "":
            out.append(ln)
    return "```text\n" + "\n".join(out) + "\n```\n"


def exact_block(stdout: str) -> str:
    """The exact check's mean and sd lines."""
    keep = [ln for ln in stdout.splitlines() if ln.startswith(("LKTD  mean", "exact mean"))]
    return "```text\n" + "\n".join(keep) + "\n```\n"


def render(folder: Path, done: list[tuple[str, str, str]]) -> dict[str, str]:
    """Every output block from the runs in ``folder`` and the blocks' printouts ``done``."""
    return {
        "demo": demo_block(output_of(done, r"^lktd demo")),
        "priors": priors_block(folder),
        "diagnose": diagnose_block(output_of(done, r"^lktd diagnose runs/gaussian")),
        "exact": exact_block(output_of(done, LAST_NEEDED)),
    }


def written(text: str) -> dict[str, str]:
    """The output blocks the tutorial holds now, by name."""
    return {m[1]: m[2] for m in MARKER.finditer(text)}


def replace(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each marked output block replaced by ``blocks``' one."""
    missing = set(blocks) - set(written(text))
    if missing:
        raise LookupError(f"the tutorial has no '<!-- output: NAME -->' for {sorted(missing)}")
    return MARKER.sub(lambda m: f"<!-- output: {m[1]} -->\n{blocks[m[1]]}", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--write", action="store_true", help="write the blocks into docs/tutorial.md")
    p.add_argument(
        "--steps", type=int, help="cut every run to this many steps (default: as written)"
    )
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work or Path(tmp)
        blocks = render(folder, run_blocks(folder, args.steps))
        if args.write:
            TUTORIAL.write_text(replace(TUTORIAL.read_text(), blocks))
            for doc, run in IMAGES.items():
                shutil.copyfile(folder / run, TUTORIAL.parent / doc)
    if not args.write:
        print("\n".join(f"<!-- output: {k} -->\n{v}" for k, v in blocks.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
