"""Published numbers cannot drift: every number of the README's results section and of the
escape study's headline (RESULTS.md) carries a marker that names its row, metric and seeds, and
recomputes from the committed per-run data; an unmarked number there fails."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lktd_ppl.study import published

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "published_numbers", ROOT / "experiments/published_numbers.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


script = _script()


@pytest.fixture(scope="module")
def source():
    return published.Source(script.RESULTS, script.study_choices())


@pytest.mark.parametrize("block", script.BLOCKS, ids=lambda b: b[0].name)
def test_every_published_number_recomputes_from_the_committed_runs(block, source):
    path, start, end = block
    text = published.section(path.read_text(), start, end)
    assert published.MARK.search(text), f"no marked number in {path.name}'s {start!r}"
    assert published.check(text, source) == []


def test_the_calibrated_headline_names_its_fresh_seeds_and_the_networks_knowledge(source):
    """The README's calibrated row: fresh seeds 50-149 (0-49 chose its last step), untrimmed."""
    readme = published.section((ROOT / "README.md").read_text(), "## Results so far", "## ")
    row = "explore_N50000_buffer50000_m10_drop225_after"
    assert f"50-149<!--@ {row} seeds fresh-->" in readme
    assert "computes the next cell from (s, a)" in readme
    assert source.value(row, "chosen", "all") == "0-49"
    assert source.value(row, "runs", "fresh") == 100


class Fixed(published.Source):
    """A source whose every (row, metric, seeds) reads from a dict."""

    def __init__(self, values):
        self.values = values

    def value(self, row, metric, seeds):
        return self.values[row, metric, seeds]


def test_a_wrong_or_unmarked_number_is_reported_and_rewrite_fixes_the_marked_one():
    src = Fixed({("r", "et95", "all"): np.array([0.951, 0.9, 0.8, 0.7]), ("r", "runs", "all"): 12})
    text = (
        "coverage 0.95/0.91/0.80/0.70<!--@ r et95 all--> over 12<!--@ r runs all--> runs, 7 seeds"
    )
    problems = published.check(text, src)
    assert (
        problems[0] == "0.95/0.91/0.80/0.70<!--@ r et95 all-->: the data give 0.95/0.90/0.80/0.70"
    )
    assert (
        len(problems) == 2
        and problems[1].startswith("unmarked number: ")
        and "7 seeds" in (problems[1])
    )
    fixed = published.rewrite(text, src)
    assert fixed.startswith("coverage 0.95/0.90/0.80/0.70<!--@ r et95 all--> over 12<!--@")
    assert published.unmarked("`drop225` and the 95% coverage, the 50%\n level <!-- 3 -->") == []


@pytest.mark.parametrize(
    "written, value, want",
    [
        ("0.92", 0.9249, "0.92"),
        ("7.4e-5", 7.381e-5, "7.4e-5"),
        ("1.5e-3", 1.52e-3, "1.5e-3"),
        ("29%", 0.29, "29%"),
        ("+0.045/-0.001", np.array([0.04504, -0.00083]), "+0.045/-0.001"),
        ("0.000", np.array([0.5, 0.25]), "0.500/0.250"),
        ("100", 100, "100"),
        ("`x`", "`x`", "`x`"),
    ],
)
def test_a_recomputed_value_is_formatted_as_the_written_one(written, value, want):
    assert published.like(written, value) == want


def test_seed_ranges_are_written_as_ranges_where_consecutive():
    assert published.seed_range(np.array([52, 50, 51])) == "50-52"
    assert published.seed_range([0, 2]) == "0,2"
