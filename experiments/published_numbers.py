"""Checks (or, with ``--write``, updates) the published numbers of the escape study: the README's
"Results so far" section and the headline of ``experiments/results/escape/RESULTS.md``. Every
number there carries a marker (row, metric, seeds) recomputed from the committed per-run data
(:mod:`lktd_ppl.study.published`); an unmarked number is an error.

    .venv/bin/python experiments/published_numbers.py           # check: exit 1 on any problem
    .venv/bin/python experiments/published_numbers.py --write   # rewrite the marked numbers
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from lktd_ppl.study.published import Source, check, rewrite, section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "escape"
# (file, the checked block's first line starts with, the line after it starts with)
BLOCKS = (
    (ROOT / "README.md", "## Results so far", "## "),
    (RESULTS / "RESULTS.md", "## Headline", "## "),
)


def study_choices() -> dict:
    """The seeds each study row's settings were chosen on (``escape_study.CHOICES``)."""
    spec = importlib.util.spec_from_file_location(
        "escape_study", ROOT / "experiments/escape_study.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CHOICES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--write", action="store_true", help="rewrite the marked numbers in place")
    args = p.parse_args(argv)
    source = Source(RESULTS, study_choices())
    problems = []
    for path, start, end in BLOCKS:
        text = path.read_text()
        block = section(text, start, end)
        if args.write:
            path.write_text(text.replace(block, rewrite(block, source), 1))
            block = section(path.read_text(), start, end)
        problems += [f"{path.relative_to(ROOT)}: {p}" for p in check(block, source)]
    print("\n".join(problems) or "every published number reproduces from the committed runs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
