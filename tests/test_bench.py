"""The benchmark command (``lktd experiment bench``, :mod:`lktd_ppl.study.bench`): the slope fit on
synthetic timings of known slope, the table's files and targets from synthetic rows, the README's
numbers against the committed table, and the ``--tiny`` table (started beside the other tests, at a
lower priority) with every row and column present, every measured value finite, and the split
runs' per-seed results equal to the one-device run's."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from subprocess import STDOUT, Popen

import numpy as np
import pytest

from lktd_ppl.study import bench

ROOT = Path(__file__).resolve().parents[1]


def test_slope_fit_recovers_a_known_exponent():
    p = np.array([1e3, 1e4, 1e5, 1e6])
    assert bench.fit_loglog_slope(p, 2e-9 * p**1.3) == pytest.approx(1.3, abs=1e-9)
    # multiplicative noise of +-5% moves the fitted slope by less than 0.03 over three decades
    noisy = 2e-9 * p**2 * np.array([1.05, 0.95, 1.05, 0.95])
    assert abs(bench.fit_loglog_slope(p, noisy) - 2.0) < 0.03


def test_slope_fit_refuses_one_point():
    with pytest.raises(ValueError, match="at least two distinct x values, got 1"):
        bench.fit_loglog_slope([1e3], [1.0])


def test_mlp_q_params_at_the_paper_size():
    assert bench.mlp_q_params(32) == 1284  # the escape model's p ([2, 32, 32, 4])


def test_only_refuses_an_unknown_group():
    with pytest.raises(ValueError) as err:
        bench.parse_only("methods,gpu")
    assert str(err.value) == (
        "--only methods,gpu: unknown row group(s) gpu; choose from "
        "methods, scaling, escape, chains, devices, cartpole, accelerator"
    )


def synthetic_rows() -> list[dict]:
    return [
        bench.row("scaling", "lktd slope in p, p >= 1e5", "n 100", 1.2, "log-log slope", 1.2),
        bench.row("escape", "paper run, cold cache: wall", "1 run", 19.5, "s"),
        bench.row(
            "devices",
            "2 processes",
            "16 seeds",
            math.nan,
            "env steps/s",
            math.nan,
            "fastest single-process",
            bench.PENDING,
        ),
    ]


def test_targets_from_rows():
    got = bench.targets(synthetic_rows(), bench.Sizes())
    assert got == [
        ("LKTD slope in p for p >= 1e5", 1.2, "0.8-1.15", False),
        ("1,000,000-step paper run, cold cache (s)", 19.5, "<= 20", True),
        (
            "2 processes / fastest single-process",
            pytest.approx(math.nan, nan_ok=True),
            ">= 1.6",
            None,
        ),
    ]


def accelerator_rows(where: str) -> list[dict]:
    return [
        bench.row("accelerator", "many seeds, compiled", f"{where}: 1000 seeds", 240.0, "s", 0.5),
        bench.row("accelerator", "1 chain(s)", f"{where}: 1 seed", 10.0, "s", 1.0),
        bench.row("accelerator", "16 chain(s)", f"{where}: 1 seed", 25.0, "s", 2.5),
    ]


def test_accelerator_targets_only_on_an_accelerator():
    got = bench.targets(accelerator_rows("gpu (NVIDIA H100)"), bench.Sizes())
    assert got == [
        ("1000 seeds x 100,000 steps on gpu (NVIDIA H100) (s)", 240.0, "<= 300", True),
        ("16 chains / 1 chain (s)", 2.5, "<= 2", False),
    ]
    assert bench.targets(accelerator_rows("cpu (cpu)"), bench.Sizes()) == []


def test_the_accelerator_group_runs_by_default_only_off_a_cpu_or_in_tiny_mode():
    assert "accelerator" not in bench.default_sections(tiny=False)  # the tests run on CPU
    assert bench.default_sections(tiny=True) == list(bench.SECTIONS)
    names = [name for section, name in bench.expected_rows(bench.TINY, ["accelerator"])]
    assert names == [
        "many seeds, first call",
        "many seeds, compiled",
        "many seeds, 1M steps (extrapolated, not measured)",
        "1 chain(s)",
        "2 chain(s)",
    ]


def test_tables_round_trip(tmp_path):
    info = {**bench.machine(), "date": "2026-12-07 06:00 UTC", "load_after": "1.00"}
    md, csv_path = bench.write_tables(
        synthetic_rows(), info, "lktd experiment bench", bench.Sizes(), tmp_path / "b", 1.0
    )
    rows = bench.read_csv(csv_path)
    assert [r["row"] for r in rows] == [r["row"] for r in synthetic_rows()]
    assert rows[0]["value"] == 1.2 and math.isnan(rows[2]["value"])
    text = md.read_text()
    assert "| LKTD slope in p for p >= 1e5 | 1.2 | 0.8-1.15 | NO |" in text
    assert (
        "| 2 processes | 16 seeds | pending | env steps/s | pending | fastest single-process |"
        in text
    )


BENCH = [sys.executable, "-m", "lktd_ppl.cli", "experiment", "bench", "--tiny"]
DIFFERENCE = "max relative difference"  # the unit of the split runs' per-seed comparison rows


def start_background_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Popen]:
    """The whole ``--tiny`` table, started (at a lower CPU priority) when the module starts, so
    that its compilations go on beside the other test files; called by ``tests/conftest.py``.
    Its output goes to a file (a pipe nobody reads until the end could fill and block it)."""
    out = tmp_path_factory.mktemp("bench") / "bench"
    log = out.with_suffix(".log").open("w")
    proc = Popen(
        ["nice", "-n", "10", *BENCH, "--out", str(out)], cwd=ROOT, stdout=log, stderr=STDOUT
    )
    return out, proc


def tiny_rows(background_runs) -> list[dict]:
    """The rows of the tiny table (once its process has finished without an error)."""
    out, proc = background_runs
    assert proc.wait(timeout=1800) == 0, out.with_suffix(".log").read_text()[-2000:]
    return bench.read_csv(out.with_suffix(".csv"))


def test_tiny_table_has_every_row_and_column(background_runs):
    """Every row of every group at the tiny sizes, every column, finite values, and the machine
    and command lines."""
    out, _ = background_runs
    rows = tiny_rows(background_runs)
    assert list(rows[0]) == list(bench.COLUMNS)
    assert [(r["section"], r["row"]) for r in rows] == bench.expected_rows(bench.TINY)
    # lktd_ppl.scale is in: no row is pending
    assert [r["row"] for r in rows if r["status"] == bench.PENDING] == []
    for r in rows:
        assert math.isfinite(r["value"]) and math.isfinite(r["ratio"]), r
        assert r["value"] > 0 or "slope" in r["row"] or r["unit"] == DIFFERENCE, r
    md = out.with_suffix(".md").read_text()
    assert "Command: `lktd experiment bench --tiny" in md
    for name in ("jax", "jaxlib", "numpyro", "blackjax"):
        assert f"{name} " in md.split("Versions:")[1].splitlines()[0]
    csv_head = out.with_suffix(".csv").read_text().splitlines()[:3]
    assert csv_head[0].startswith("# command: lktd experiment bench --tiny")


def test_split_runs_give_each_seed_the_one_device_numbers(background_runs):
    """The tiny table's runs on 2 forced host devices and on a 2-process jax.distributed job
    (gloo over 127.0.0.1; 4 seeds of the paper preset, 2 a device or a process) repeat, seed by
    seed, the one-device run: its training (learner state, sample ring, returns, divergence
    record) to the bit, and the evaluations' metrics, which XLA may sum in another order when a
    device holds fewer seeds, within 1e-6 relative; the table says which arrays differ."""
    rows = tiny_rows(background_runs)
    compared = {r["row"]: r for r in rows if r["unit"] == DIFFERENCE}
    assert sorted(compared) == [
        "2 forced host devices: per-seed results against 1 device",
        "2 processes: per-seed results against 1 device",
    ]
    for r in compared.values():
        assert 0.0 <= r["value"] <= 1e-6, r
        count, names = re.fullmatch(
            r"4 seeds x 2,000 steps; arrays not equal to the bit: (\d+) of \d+ \((.*)\)",
            r["setting"],
        ).groups()
        differing = [] if names == "none" else names.split(", ")
        assert len(differing) == int(count)
        assert all(n.startswith(("['metrics']", "['metrics_qstar']")) for n in differing), r
    md = background_runs[0].with_suffix(".md").read_text()
    line = "| 2 processes: per-seed results against 1 device (max relative difference) | "
    assert line in md and md.split(line)[1].split("\n")[0].endswith("| <= 1e-06 | yes |")


def test_readme_quotes_the_committed_bench_table():
    """The README's benchmark numbers are the committed table's (experiments/results/bench.csv)."""
    rows = bench.read_csv(ROOT / "experiments" / "results" / "bench.csv")

    def value(section: str, name: str, key: str = "value") -> float:
        return next(r[key] for r in rows if r["section"] == section and r["row"] == name)

    readme = " ".join((ROOT / "README.md").read_text().split())  # line breaks as spaces
    quoted = [
        f"p >= 1e5 {value('scaling', 'lktd slope in p, p >= 1e5'):.2f} (target",
        f"{value('scaling', 'lktd slope in p'):.2f} over all p",
        f"{value('scaling', 'lktd slope in n'):.2f} in n",
        f"KOVA's {value('scaling', 'kova slope in p'):.2f}",
        f"2 forced host devices {value('devices', '2 forced host devices', 'ratio'):.2f}x",
        f"2 processes {value('devices', '2 processes', 'ratio'):.2f}x",
        "metrics within "
        f"{value('devices', '2 processes: per-seed results against 1 device'):.1e} relative",
        f"alone {value('cartpole', 'env alone (random actions), 256 seed(s) vmapped', 'ratio'):.1f}x",
        f"environment {value('cartpole', 'acting + env, 256 seed(s) vmapped', 'ratio'):.1f}x",
        f"training vmapped {value('cartpole', 'lktd training, 16 seed(s) vmapped', 'ratio'):.2f}-"
        f"{value('cartpole', 'lktd training, 256 seed(s) vmapped', 'ratio'):.2f}x",
        f"paper run {value('escape', 'paper run, cold cache: wall'):.1f} s cold",
        f"{value('escape', 'paper run, warm cache: wall'):.1f} s with the compilation cache",
        f"run {value('devices', '16 chains split over 2 forced host devices', 'ratio'):.2f} times",
        f"at {value('devices', '2 processes', 'ratio'):.2f} times the throughput",
        f"at {value('devices', '2 forced host devices', 'ratio'):.2f} times.",
    ]
    # the numbers quoted from the Intel Xeon's table of the day before
    xeon = bench.read_csv(ROOT / "experiments" / "results" / "bench_xeon_2026-12-07.csv")
    slope = next(r["value"] for r in xeon if r["row"] == "lktd slope in p, p >= 1e5")
    two = [next(r["ratio"] for r in xeon if r["row"] == n) for n in bench.SPLIT_ROWS]
    quoted += [f"{slope:.2f} on the Xeon", f"{two[0]:.2f}x and {two[1]:.2f}x on the Xeon"]
    # and from the three repeats of the scaling group on this machine
    repeats = sorted((ROOT / "experiments" / "results" / "bench_repeats").glob("*.csv"))
    slopes = {
        f"{r['value']:.2f}"
        for path in repeats
        for r in bench.read_csv(path)
        if r["row"] == "lktd slope in p, p >= 1e5"
    }
    assert len(repeats) == 3 and len(slopes) == 1
    quoted.append(f"{slopes.pop()} in each of three repeats")
    for text in quoted:
        assert text in readme, text
