"""The benchmark's table (:mod:`lktd_ppl.study.bench`): how much each row group runs (``Sizes``),
its rows and columns, the machine and versions it was measured on, the targets read from the
rows, and the Markdown and CSV files."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import platform
from importlib import metadata
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each row group runs: ``full`` (the committed table) or ``tiny`` (the tests)."""

    hiddens: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64))
    method_reps: int = 500  # updates per timed scan (KOVA: kova_reps)
    kova_reps: int = 5
    repeats: int = 5
    lktd_widths: tuple[int, ...] = (28, 51, 96, 169, 320, 448, 544, 707, 996)  # p ~ 1e3 ... 1e6
    lktd_batches: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    batch_scan_width: int = 169  # p ~ 3e4 for the scan over n
    kova_widths: tuple[int, ...] = (28, 51, 96, 137)  # p ~ 1e3 ... 2e4
    scan_work: float = 3e8  # p * n * steps per timed scan of the scaling rows
    scaling_repeats: int = 3
    escape_steps: int = 1_000_000
    escape_repeats: int = 3
    chain_counts: tuple[int, ...] = (1, 4, 16)
    chain_steps: int = 20_000
    device_seeds: int = 16
    device_steps: int = 10_000
    cartpole_seeds: tuple[int, ...] = (1, 16, 256)
    cartpole_act_steps: int = 2000
    cartpole_train_steps: int = 500
    accel_seeds: int = 1000  # the accelerator group: many seeds of the paper preset at once
    accel_steps: int = 100_000
    accel_chain_counts: tuple[int, ...] = (1, 16)
    accel_chain_steps: int = 20_000


# the tiny mode: every row at toy sizes, with as few distinct compiled programs as the rows allow
# (two chain and seed counts; the accelerator rows' runs are the chains' and devices' programs,
# read back from the persistent compilation cache)
TINY = Sizes(
    hiddens=((8, 8),),
    method_reps=4,
    kova_reps=2,
    repeats=1,
    lktd_widths=(8, 16),
    lktd_batches=(32, 64),
    batch_scan_width=8,
    kova_widths=(8, 16),
    scan_work=3e6,
    scaling_repeats=1,
    escape_steps=2000,
    escape_repeats=1,
    chain_counts=(1, 2),
    chain_steps=2000,
    device_seeds=4,
    device_steps=2000,
    cartpole_seeds=(1, 2),
    cartpole_act_steps=20,
    cartpole_train_steps=200,
    accel_seeds=4,
    accel_steps=2000,
    accel_chain_counts=(1, 2),
    accel_chain_steps=2000,
)


SECTIONS = ("methods", "scaling", "escape", "chains", "devices", "cartpole", "accelerator")
COLUMNS = ("section", "row", "setting", "value", "unit", "ratio", "ratio_to", "status")
PENDING = "pending"
DEVICE_ROWS = (
    "1 device, vmapped",
    "1 device, one after another",
    "2 forced host devices",
    "2 processes",
)
SPLIT_ROWS = DEVICE_ROWS[2:]  # the split runs, whose per-seed results are compared with 1 device's


def row(
    section: str,
    name: str,
    setting: str,
    value: float,
    unit: str,
    ratio: float = 1.0,
    ratio_to: str = "-",
    status: str = "measured",
) -> dict:
    """One table row (the CSV's columns, in order)."""
    return dict(
        zip(COLUMNS, (section, name, setting, value, unit, ratio, ratio_to, status), strict=True)
    )


# ---------------------------------------------------------------- machine and versions


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Installed versions of the libraries the timings depend on."""
    out = {}
    for name in ("jax", "jaxlib", "numpyro", "blackjax", "flax", "gymnax"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, str]:
    load = os.getloadavg()
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        **versions(),
        "load_before": f"{load[0]:.2f}",
    }


# ---------------------------------------------------------------- targets and output


def find(rows: list[dict], section: str, name: str) -> dict | None:
    return next((r for r in rows if r["section"] == section and r["row"] == name), None)


def threshold_text(lo: float | None, hi: float | None) -> str:
    """A target's band as the table writes it: "0.8-1.15", ">= 20" or "<= 300"."""
    if lo is not None and hi is not None:
        return f"{lo:g}-{hi:g}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def targets(rows: list[dict], sizes: Sizes) -> list[tuple[str, float, str, bool | None]]:
    """(target, measured value, threshold, met) for each target whose rows were run."""
    big = sizes.cartpole_seeds[-1]
    # (target, section, row, column, lowest allowed, highest allowed)
    specs = [
        (
            "LKTD slope in p for p >= 1e5",
            "scaling",
            "lktd slope in p, p >= 1e5",
            "value",
            0.8,
            1.15,
        ),
        (
            f"{sizes.escape_steps:,}-step paper run, cold cache (s)",
            "escape",
            "paper run, cold cache: wall",
            "value",
            None,
            20,
        ),
        (
            f"CartPole env alone (random actions), {big} seeds / 1 seed (env steps/s)",
            "cartpole",
            f"env alone (random actions), {big} seed(s) vmapped",
            "ratio",
            20,
            None,
        ),
        (
            f"CartPole acting, {big} seeds / 1 seed (env steps/s)",
            "cartpole",
            f"acting + env, {big} seed(s) vmapped",
            "ratio",
            20,
            None,
        ),
    ]
    specs += [
        (
            f"CartPole training, {k} vmapped / one after another",
            "cartpole",
            f"lktd training, {k} seed(s) vmapped",
            "ratio",
            1,
            None,
        )
        for k in sizes.cartpole_seeds[1:]
    ]
    many = find(rows, "accelerator", "many seeds, compiled")
    if many is not None and not many["setting"].startswith("cpu"):  # targets for accelerators
        where = many["setting"].split(":")[0]
        first, last = sizes.accel_chain_counts[0], sizes.accel_chain_counts[-1]
        specs += [
            (
                f"{sizes.accel_seeds} seeds x {sizes.accel_steps:,} steps on {where} (s)",
                "accelerator",
                "many seeds, compiled",
                "value",
                None,
                300,
            ),
            (
                f"{last} chains / {first} chain (s)",
                "accelerator",
                f"{last} chain(s)",
                "ratio",
                None,
                2,
            ),
        ]
    specs += [
        (f"{name} / fastest single-process", "devices", name, "ratio", 1.6, None)
        for name in SPLIT_ROWS
    ]
    specs += [
        (
            f"{name}: per-seed results against 1 device (max relative difference)",
            "devices",
            f"{name}: per-seed results against 1 device",
            "value",
            None,
            1e-6,
        )
        for name in SPLIT_ROWS
    ]
    out: list[tuple[str, float, str, bool | None]] = []
    for name, section, row_name, key, lo, hi in specs:
        r = find(rows, section, row_name)
        if r is None:
            continue
        v = r[key]
        met = None if math.isnan(v) else bool((lo is None or v >= lo) and (hi is None or v <= hi))
        out.append((name, v, threshold_text(lo, hi), met))
    return out


def fmt(v: float) -> str:
    if isinstance(v, str):
        return v
    if math.isnan(v):
        return "pending"
    return f"{v:.4g}"


def markdown(rows: list[dict], info: dict, command: str, sizes: Sizes, seconds: float) -> str:
    lines = [
        "# Benchmark: every speed claim in one table",
        "",
        f"Command: `{command}`  ",
        f"Date: {info['date']}; {seconds:.0f} s in all  ",
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; "
        f"load average {info['load_before']} before, {info['load_after']} after  ",
        "Versions: " + ", ".join(f"{k} {info[k]}" for k in versions()),
        "",
        "Timings: medians of interleaved repeats after compilation unless a row says otherwise; "
        "ratios are against the row named in `ratio to`, measured in the same call. "
        "`pending`: not measured in this build (the sharded paths).",
        "",
        "## Targets",
        "",
        "| target | measured | threshold | met |",
        "|---|---|---|---|",
        *(
            f"| {t} | {fmt(v)} | {th} | {'pending' if m is None else ('yes' if m else 'NO')} |"
            for t, v, th, m in targets(rows, sizes)
        ),
    ]
    for section in SECTIONS:
        rs = [r for r in rows if r["section"] == section]
        if not rs:
            continue
        lines += [
            "",
            f"## {section}",
            "",
            "| row | setting | value | unit | ratio | ratio to |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['row']} | {r['setting']} | {fmt(r['value'])} | {r['unit']} | "
            f"{fmt(r['ratio'])} | {r['ratio_to']} |"
            for r in rs
        ]
    return "\n".join(lines) + "\n"


def write_tables(
    rows: list[dict], info: dict, command: str, sizes: Sizes, out: Path, seconds: float
) -> tuple[Path, Path]:
    """``out``.md and ``out``.csv (the CSV carries the machine lines as ``#`` comments)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    md, csv_path = out.with_suffix(".md"), out.with_suffix(".csv")
    md.write_text(markdown(rows, info, command, sizes, seconds))
    with csv_path.open("w", newline="") as f:
        f.write(f"# command: {command}\n")
        for k, v in info.items():
            f.write(f"# {k}: {v}\n")
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return md, csv_path


def read_csv(path: Path) -> list[dict]:
    """The rows of a table written by :func:`write_tables` (values as floats)."""
    lines = [x for x in Path(path).read_text().splitlines() if not x.startswith("#")]
    rows = list(csv.DictReader(lines))
    for r in rows:
        r["value"], r["ratio"] = float(r["value"]), float(r["ratio"])
    return rows
