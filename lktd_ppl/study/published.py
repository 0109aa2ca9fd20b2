"""Published numbers that cannot drift: every number in a checked block of text carries a marker
that names what it measures, and :func:`check` recomputes it from the committed per-run data.

A marked number is written immediately before an HTML comment (invisible once rendered)::

    0.921/0.920/0.916/0.915<!--@ explore_N50000_buffer50000_m10_drop225_after et95 fresh-->

The marker says ``ROW METRIC SEEDS``:

- ROW: a study row (``runs/<row>/runs.npz`` under the results folder); ``paper:<row>``, the
  paper's value for that row (:data:`lktd_ppl.study.tables.PAPER`, in E/N/W/S order);
  ``best_paper_network``, the LKTD-family row with the paper's own network (input (x, y), one
  output per action) whose untrimmed calibration curve lies nearest the diagonal (rows of
  ``MIN_RUNS_CLOSEST`` runs or more); ``recommended``, the row the library's defaults come from
  (:meth:`Source.recommended`); ``target``, the calibrated configuration's targets.
- METRIC: a key of :data:`METRICS` (or of :data:`TARGETS` for ``target``).
  ``chosen`` gives the seeds (of the row's) that chose its settings.
- SEEDS: ``all``, ``fresh`` (the row's fresh seeds, :func:`lktd_ppl.study.aggregate.chosen_seeds`)
  or ``A-B`` (seeds A to B).

The recomputed value is formatted as the written one is (its decimals, ``e`` notation, a
percent sign, a leading ``+``, values per action joined by ``/``), so a marked number fails
when the data no longer round to it. Numbers left unmarked fail too (:func:`unmarked`), except
inside code spans (row names, settings) and nominal levels (``95% coverage``, ``50% level``).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lktd_ppl.study.aggregate import (
    ET_BAND,
    GAP_MAX,
    LAST_WINDOWS,
    MIN_RUNS_CLOSEST,
    MSE_MAX,
    aggregate,
    calibration_gap,
    chosen_seeds,
    fresh_mask,
    split_diverged,
    take_runs,
)
from lktd_ppl.study.data import load_runs

MARK = re.compile(
    r"(?P<value>`[^`]+`|[-+0-9.e/%]+)<!--@ (?P<row>\S+) (?P<metric>\S+) (?P<seeds>\S+)-->"
)
NUMBER = re.compile(r"\d[\d.,/-]*")
EXEMPT = (
    re.compile(r"`[^`]*`"),  # code spans: row names, settings, paths
    re.compile(r"\b(50|80|90|95)%\s+(coverage|level|interval)"),  # nominal levels
    re.compile(r"<!--.*?-->", re.S),  # comments (other than the markers)
)
# the models whose network is not the paper's (x, y) -> one output per action
OTHER_NETWORKS = ("action_input", "move_input", "afterstate")
UNDER = 0.90  # the "runs that cover under" threshold (metric under90)
# the library's defaults: the lowest-MSE LKTD-family row whose untrimmed equal-tailed 95% coverage
# on fresh seeds lies within this band on every action, over at least this many fresh runs
DEFAULTS_BAND = (0.90, 0.99)
DEFAULTS_MIN_RUNS = 20
TARGETS = {
    "et95_band": f"{ET_BAND[0]:.2f}-{ET_BAND[1]:.2f}",
    "defaults_band": f"{DEFAULTS_BAND[0]:.2f}-{DEFAULTS_BAND[1]:.2f}",
    "defaults_runs": f"{DEFAULTS_MIN_RUNS}",
    "under90_level": f"{UNDER:.2f}",
    "gap": f"{GAP_MAX:.2f}",
    "mse": f"{MSE_MAX:.0e}".replace("e-04", "e-4"),
}


def _plain(fam: str) -> Callable:
    return lambda s, d: s[fam]["plain"]


def _runs_below(level: float) -> Callable:
    """The fraction of runs whose equal-tailed 95% coverage (windows and actions averaged)
    is below ``level``."""

    def f(s, d):
        per_run = np.nanmean(d["w_coverage_equal_tailed"][:, -LAST_WINDOWS:], axis=(1, 2))
        return float(np.mean(per_run < level))

    return f


METRICS: dict[str, Callable[[dict, dict], object]] = {
    "runs": lambda s, d: s["runs"],
    "seeds": lambda s, d: seed_range(d["seeds"]),
    "et95": _plain("coverage_equal_tailed"),  # untrimmed, per action
    "et95_avg": lambda s, d: float(np.nanmean(s["coverage_equal_tailed"]["plain"])),
    "et95_se": lambda s, d: s["coverage_equal_tailed"]["avg_se"],  # of et95_avg, across runs
    "et95_trimmed": lambda s, d: s["coverage_equal_tailed"]["mean"],  # the paper's convention
    "et50": lambda s, d: s["calibration"][0],  # untrimmed, per action
    "gap": lambda s, d: calibration_gap(s),  # untrimmed curve, any level, any action
    "under90": _runs_below(UNDER),
    "cov": lambda s, d: s["coverage"]["mean"],  # the paper's coverage, trimmed
    "mse": lambda s, d: s["mse"]["mean"],  # trimmed
    "mse_avg": lambda s, d: float(np.nanmean(s["mse"]["mean"])),
    "mse_untrimmed": lambda s, d: float(np.nanmean(s["mse"]["plain"])),  # the defaults' choice
    # the median run's wall time here, in minutes (a batch's wall time over its seeds)
    "minutes_per_run": lambda s, d: float(np.median(d["wall_time"] / d["batch_size"]) / 60),
    "mse_se": lambda s, d: s["mse"]["avg_se"],
    "width_avg": lambda s, d: float(np.nanmean(s["width"]["mean"])),
    "trimmed_windows": lambda s, d: (
        s["coverage_equal_tailed"]["rows"] - s["coverage_equal_tailed"]["kept"]
    ),
    "windows": lambda s, d: s["coverage_equal_tailed"]["rows"],
}
# metrics of a row against the paper's: ``<metric>_vs_paper`` (difference; for MSE, ratio)
VS_PAPER = {
    "cov_vs_paper": ("coverage", lambda ours, paper: ours - paper),
    "mse_vs_paper": ("mse", lambda ours, paper: float(np.mean(ours) / np.mean(paper))),
}


def seed_range(seeds) -> str:
    """``A-B`` for consecutive seeds A..B, else the seeds joined by commas."""
    s = sorted(int(x) for x in np.asarray(seeds).tolist())
    if s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}-{s[-1]}"
    return ",".join(map(str, s))


def paper_network_rows(results: Path) -> list[str]:
    """The LKTD-family rows (LKTD, SGLD, SGHMC) whose model has the paper's network."""
    rows = []
    for f in sorted((results / "runs").glob("*/config.json")):
        c = json.loads(f.read_text())
        if c.get("method") in ("lktd", "sgld", "sghmc") and not any(
            k in c.get("model", "") for k in OTHER_NETWORKS
        ):
            rows.append(f.parent.name)
    return rows


class Source:
    """The committed per-run data of a results folder, loaded and summarised on demand."""

    def __init__(self, results: Path, choices: dict | None = None):
        self.results, self.choices = results, choices or {}
        self._data: dict[str, dict | None] = {}
        self._summary: dict[tuple[str, str], tuple[dict, dict]] = {}

    def data(self, row: str) -> dict:
        if row not in self._data:
            d = load_runs(self.results, row)
            self._data[row] = None if d is None else split_diverged(d)[0]
        if self._data[row] is None:
            raise ValueError(f"published: no finished runs of row {row!r}")
        return self._data[row]

    def summary(self, row: str, seeds: str) -> tuple[dict, dict]:
        """(summary, data) of ``row``'s runs on ``seeds`` (``all``, ``fresh`` or ``A-B``)."""
        if (row, seeds) not in self._summary:
            d = self.data(row)
            if seeds == "all":
                keep = np.ones(len(d["seeds"]), dtype=bool)
            elif seeds == "fresh":
                keep = fresh_mask(d["seeds"], chosen_seeds(row, self.choices))
            else:
                lo, hi = (int(x) for x in seeds.split("-"))
                keep = (d["seeds"] >= lo) & (d["seeds"] <= hi)
            if not keep.any():
                raise ValueError(f"published: row {row!r} has no runs on seeds {seeds!r}")
            sub = take_runs(d, keep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._summary[row, seeds] = (aggregate(sub), sub)
        return self._summary[row, seeds]

    def best_paper_network(self) -> str:
        """The paper-network row nearest calibrated (untrimmed curve), of enough runs."""
        rows = [r for r in paper_network_rows(self.results) if self.data_ok(r)]
        rows = [r for r in rows if len(self.data(r)["seeds"]) >= MIN_RUNS_CLOSEST]
        return min(rows, key=lambda r: calibration_gap(self.summary(r, "all")[0]))

    def recommended(self) -> str:
        """The row the library's defaults come from: of the LKTD-family rows with at least
        ``DEFAULTS_MIN_RUNS`` fresh runs whose untrimmed equal-tailed 95% coverage on those runs
        lies within ``DEFAULTS_BAND`` on every action, the one of lowest MSE (untrimmed, fresh
        runs, averaged over the actions)."""
        ok = []
        for f in sorted((self.results / "runs").glob("*/config.json")):
            row = f.parent.name
            if json.loads(f.read_text()).get("method") not in ("lktd", "sgld", "sghmc"):
                continue
            if not self.data_ok(row):
                continue
            d = self.data(row)
            fresh = fresh_mask(d["seeds"], chosen_seeds(row, self.choices))
            if fresh.sum() < DEFAULTS_MIN_RUNS:
                continue
            s, _ = self.summary(row, "fresh")
            et95 = np.asarray(s["coverage_equal_tailed"]["plain"])
            if np.all((et95 >= DEFAULTS_BAND[0]) & (et95 <= DEFAULTS_BAND[1])):
                ok.append((float(np.nanmean(s["mse"]["plain"])), row))
        if not ok:
            raise ValueError("published: no row meets the defaults' coverage band on fresh seeds")
        return min(ok)[1]

    def data_ok(self, row: str) -> bool:
        try:
            self.data(row)
        except ValueError:
            return False
        return True

    def value(self, row: str, metric: str, seeds: str):
        """The number (or per-action array, or text) a marker names."""
        from lktd_ppl.study.tables import PAPER

        if row == "target":
            return TARGETS[metric]
        if row == "best_paper_network":
            row = self.best_paper_network()
            if metric == "name":
                return f"`{row}`"
        if row == "recommended":
            row = self.recommended()
            if metric == "name":
                return f"`{row}`"
        if row.startswith("paper:"):
            fam = {"cov": "coverage", "mse": "mse"}[metric.removesuffix("_avg")]
            v = np.array(PAPER[row.removeprefix("paper:")][fam])
            return float(v.mean()) if metric.endswith("_avg") else v
        if metric == "chosen":  # the row's seeds its settings (or its parents') were chosen on
            d = self.data(row)
            chosen = chosen_seeds(row, self.choices) & set(d["seeds"].tolist())
            if not chosen:
                raise ValueError(f"published: no seed of row {row!r} chose a setting")
            return seed_range(sorted(chosen))
        if metric in VS_PAPER:
            fam, op = VS_PAPER[metric]
            s, _ = self.summary(row, seeds)
            return op(s[fam]["mean"], np.array(PAPER[row][fam]))
        if metric not in METRICS:
            raise ValueError(f"published: unknown metric {metric!r} (known: {', '.join(METRICS)})")
        return METRICS[metric](*self.summary(row, seeds))


def like(written: str, value) -> str:
    """``value`` formatted as ``written`` is: per action joined by ``/`` when it has parts, each
    part with the written decimals, ``e`` notation, ``%`` and leading ``+``."""
    if isinstance(value, str):
        return value
    parts = written.split("/")
    values = np.atleast_1d(np.asarray(value, dtype=float))
    if len(parts) != len(values):
        return "/".join(_one(parts[0], float(v)) for v in values)
    return "/".join(_one(p, float(v)) for p, v in zip(parts, values, strict=True))


def _one(written: str, x: float) -> str:
    sign = "+" if written.startswith("+") else ""
    body = written.lstrip("+")
    if body.endswith("%"):
        decimals = len(body[:-1].partition(".")[2])
        return f"{x * 100:{sign}.{decimals}f}%"
    if "e" in body:
        mantissa, _, _ = body.partition("e")
        decimals = len(mantissa.partition(".")[2])
        m, _, e = f"{x:{sign}.{decimals}e}".partition("e")
        return f"{m}e{int(e)}"
    decimals = len(body.partition(".")[2])
    return f"{x:{sign}.{decimals}f}"


def check(text: str, source: Source) -> list[str]:
    """One line per marked number that the data do not reproduce, and per unmarked number."""
    problems = []
    for m in MARK.finditer(text):
        try:
            want = like(m["value"], source.value(m["row"], m["metric"], m["seeds"]))
        except (ValueError, KeyError) as e:
            problems.append(f"{m[0]}: {e}")
            continue
        if want != m["value"]:
            problems.append(f"{m[0]}: the data give {want}")
    problems += [f"unmarked number: ...{s}..." for s in unmarked(text)]
    return problems


def rewrite(text: str, source: Source) -> str:
    """``text`` with every marked number replaced by the value the data give now."""

    def sub(m: re.Match) -> str:
        value = like(m["value"], source.value(m["row"], m["metric"], m["seeds"]))
        return m[0].replace(m["value"], value, 1)

    return MARK.sub(sub, text)


def unmarked(text: str) -> list[str]:
    """The snippets of ``text`` around each number that has no marker (code spans, comments and
    nominal levels aside)."""
    rest = MARK.sub(" ", text)
    for pattern in EXEMPT:
        rest = pattern.sub(" ", rest)
    return [rest[max(0, m.start() - 30) : m.end() + 30] for m in NUMBER.finditer(rest)]


def section(text: str, start: str, end: str) -> str:
    """The part of ``text`` from the line starting with ``start`` to the next line starting with
    ``end`` (excluded)."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, ln in enumerate(lines) if ln.startswith(start))
    last = next(i for i in range(first + 1, len(lines)) if lines[i].startswith(end))
    return "".join(lines[first:last])
