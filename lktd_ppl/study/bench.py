"""One benchmark of every speed claim: ``lktd experiment bench`` writes one Markdown and one CSV
table (machine, versions, command, date, load) with these row groups (``--only`` picks some):

- ``methods``: one training stage and one inner step of every method (lktd, sgld, sghmc, dqn,
  bootdqn, qrdqn, kova, lmcdqn) at hidden [32, 32] and [64, 64], each in a jitted ``lax.scan`` on
  fresh minibatches of 100 (cycled from pre-drawn ones, so XLA cannot hoist loop-invariant work);
  ratios to LKTD's inner step at the same size;
- ``scaling``: LKTD's inner step over p (parameters) and n (minibatch), KOVA's update over p,
  with fitted log-log slopes (ratio column: slope / claimed slope);
- ``escape``: one run of the paper preset (one chain, [32, 32], buffer 10 000) in a fresh process,
  cold (an empty persistent compilation cache) and warm (the cache the cold run filled), median
  of the repeats; compile (trace, lowering, XLA compile or cache read) apart from the rest;
- ``chains``: m = 1, 4, 16 chains (compiled first; ratio to one chain);
- ``devices``: the same 16 escape seeds run in one process (vmapped; one after another), on 2
  forced host devices and on 2 processes (ratio: throughput over the fastest single-process way);
  one seed's 16 chains on one device and split over 2 (``chain_devices``);
- ``cartpole``: gymnax CartPole over 1, 16 and 256 vmapped seeds, acting and environment alone
  and with LKTD training (ratio: env steps/s per seed over one seed's, or total over one's);
- ``accelerator``: 1000 seeds x 100 000 steps of the paper preset at once, and 16 chains against
  one, on the default backend (by default only off a CPU).

``chains``, ``devices``, ``cartpole`` and ``accelerator`` are in :mod:`lktd_ppl.study.bench_scale`,
``escape`` in :mod:`lktd_ppl.study.bench_escape`.

Every timing is the median of interleaved repeats after compilation unless the row says
otherwise; ratios compare rows measured in the same call.  ``--tiny`` runs every row at toy sizes
(the tests check that every row and column is present).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lktd_ppl.study.bench_escape import ESCAPE_PARTS, bench_escape
from lktd_ppl.study.bench_scale import (
    bench_accelerator,
    bench_cartpole,
    bench_chains,
    bench_devices,
    median_times,
)

# the table (its rows, columns, targets and files) is bench_table's; the names tests read re-exported
from lktd_ppl.study.bench_table import (
    COLUMNS as COLUMNS,
)
from lktd_ppl.study.bench_table import (
    DEVICE_ROWS,
    SECTIONS,
    SPLIT_ROWS,
    machine,
    row,
    write_tables,
)
from lktd_ppl.study.bench_table import PENDING as PENDING
from lktd_ppl.study.bench_table import TINY as TINY
from lktd_ppl.study.bench_table import Sizes as Sizes
from lktd_ppl.study.bench_table import read_csv as read_csv
from lktd_ppl.study.bench_table import targets as targets

METHODS = ("lktd", "sgld", "sghmc", "dqn", "bootdqn", "qrdqn", "kova", "lmcdqn")
LKTD_FAMILY = ("lktd", "sgld", "sghmc")
NUM_BATCHES = 16  # distinct minibatches per timed scan, cycled
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "experiments" / "results" / "bench"


def fit_loglog_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of log y against log x: the exponent b of y ~ a x^b."""
    lx, ly = np.log(np.asarray(list(x), float)), np.log(np.asarray(list(y), float))
    if lx.size < 2 or np.ptp(lx) == 0:
        raise ValueError(f"a slope needs at least two distinct x values, got {lx.size}")
    return float(np.polyfit(lx, ly, 1)[0])


def mlp_q_params(width: int, obs_dim: int = 2, num_actions: int = 4) -> int:
    """Parameters of the shipped Q network ``models/mlp_q.py`` with HIDDEN = (width, width)."""
    sizes = [obs_dim, width, width, num_actions]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


# ---------------------------------------------------------------- timing helpers


def rl_batches(n: int, num_actions: int = 4, heads: int = 10) -> dict:
    """NUM_BATCHES escape-room minibatches of ``n`` SARSA transitions on a leading axis."""
    import jax
    import jax.numpy as jnp

    def one(key):
        k = jax.random.split(key, 5)
        return {
            "obs": jax.random.uniform(k[0], (n, 2)),
            "action": jax.random.randint(k[1], (n,), 0, num_actions),
            "reward": -1.0 + 0.1 * jax.random.normal(k[2], (n,)),
            "next_obs": jax.random.uniform(k[3], (n, 2)),
            "next_action": jax.random.randint(k[4], (n,), 0, num_actions),
            "terminated": jnp.zeros(n),
            "next_mask": jnp.ones((n, num_actions), jnp.int8),
            "boot_mask": jnp.ones((n, heads), jnp.int8),
        }

    stacked = jax.vmap(one)(jax.random.split(jax.random.key(0), NUM_BATCHES))
    return {**stacked, "stage": jnp.int32(100)}


def pick(batches: dict, i: Any, minibatches: int = 1) -> dict:
    """The ``i``-th minibatch (cyclically); with ``minibatches`` > 1, that many stacked."""
    import jax.numpy as jnp

    if minibatches == 1:
        idx = i % NUM_BATCHES
    else:
        idx = (i * minibatches + jnp.arange(minibatches)) % NUM_BATCHES
    return {k: (v if k == "stage" else v[idx]) for k, v in batches.items()}


def scan_updates(update: Callable, batches: dict, reps: int, minibatches: int = 1) -> Callable:
    """A jitted ``state -> state`` of ``reps`` calls ``update(key, state, batch)``."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(state):
        def body(s, xs):
            k, i = xs
            return update(k, s, pick(batches, i, minibatches)), None

        xs = (jax.random.split(jax.random.key(3), reps), jnp.arange(reps))
        return jax.lax.scan(body, state, xs)[0]

    return run


def model_with_hidden(hidden: tuple[int, ...], folder: Path) -> str:
    """A copy of the shipped ``models/mlp_q.py`` with another HIDDEN, as a user changes the
    network; returns its ``path:function`` (the spike-and-slab SARSA model)."""
    import lktd_ppl.models

    src = (Path(lktd_ppl.models.__file__).parent / "mlp_q.py").read_text()
    if "HIDDEN = (32, 32)" not in src:
        raise RuntimeError("models/mlp_q.py no longer sets HIDDEN = (32, 32)")
    path = folder / f"mlp_q_{'x'.join(map(str, hidden))}.py"
    path.write_text(src.replace("HIDDEN = (32, 32)", f"HIDDEN = {tuple(hidden)!r}"))
    return f"{path}:sarsa_spike_slab"


def default_sampler():
    """The LKTD family's sampler in its default (consistent) mode: the paper preset, compat off."""
    from lktd_ppl.filter import SamplerConfig
    from lktd_ppl.presets import preset

    fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    paper = {k: v for k, v in preset("paper", "lktd").items() if k in fields}
    return SamplerConfig(**{**paper, "compat": False})


def learners(hidden: tuple[int, ...], folder: Path, methods: Iterable[str] = METHODS) -> dict:
    """name -> harness Learner of each method on the escape room's shapes, batch 100."""
    from lktd_ppl.agents.bootdqn import BootDQNConfig, make_bootdqn_learner
    from lktd_ppl.agents.dqn import DQNConfig, make_dqn_learner
    from lktd_ppl.agents.harness import EscapeConfig
    from lktd_ppl.agents.kova import KOVAConfig, make_kova_learner
    from lktd_ppl.agents.lktd import LKTDAgentConfig, lktd_learner
    from lktd_ppl.agents.lmcdqn import LMCDQNConfig, make_lmcdqn_learner
    from lktd_ppl.agents.qrdqn import QRDQNConfig, make_qrdqn_learner

    makers = {
        "dqn": lambda: make_dqn_learner(DQNConfig(hidden=hidden)),
        "bootdqn": lambda: make_bootdqn_learner(BootDQNConfig(hidden=hidden)),
        "qrdqn": lambda: make_qrdqn_learner(QRDQNConfig(hidden=hidden)),
        "kova": lambda: make_kova_learner(KOVAConfig(hidden=hidden)),
        "lmcdqn": lambda: make_lmcdqn_learner(LMCDQNConfig(hidden=hidden)),
    }
    model = model_with_hidden(hidden, folder) if set(methods) & set(LKTD_FAMILY) else None
    escape = EscapeConfig(batch_size=100)
    out = {}
    for name in methods:
        if name in LKTD_FAMILY:
            config = LKTDAgentConfig(
                model=model, method=name, sampler=default_sampler(), num_chains=1
            )
            out[name] = lktd_learner(config, escape)
        else:
            out[name] = makers[name]()
    return out


# ---------------------------------------------------------------- row groups


def bench_methods(sizes: Sizes, folder: Path) -> list[dict]:
    """Per training stage and per inner step of every method at each hidden size."""
    import jax

    kappa = default_sampler().kappa
    batches = rl_batches(100)
    rows = []
    for hidden in sizes.hiddens:
        runs = {}
        for name, learner in learners(hidden, folder).items():
            reps = sizes.kova_reps if name == "kova" else sizes.method_reps
            run = scan_updates(learner.update, batches, reps, learner.minibatches)
            runs[name] = (run, learner.init(jax.random.key(1)), reps)
        stage = median_times(runs, sizes.repeats)
        inner = {k: v / (kappa if k in LKTD_FAMILY else 1) for k, v in stage.items()}
        # an LMCDQN stage is J minibatch updates: its inner step is one of them
        j = learners(hidden, folder, ["lmcdqn"])["lmcdqn"].minibatches
        inner["lmcdqn"] = stage["lmcdqn"] / j
        base = inner["lktd"]
        h = list(hidden)
        for name in runs:
            rows.append(
                row("methods", f"{name} stage", f"hidden {h}", stage[name] * 1e3, "ms")
                | {"ratio": stage[name] / base, "ratio_to": "lktd inner step"}
            )
            rows.append(
                row("methods", f"{name} inner step", f"hidden {h}", inner[name] * 1e3, "ms")
                | {"ratio": inner[name] / base, "ratio_to": "lktd inner step"}
            )
    return rows


def lktd_inner_step_time(width: int, n: int, sizes: Sizes, folder: Path) -> tuple[int, float]:
    """(p, seconds per LKTD inner step) of the shipped model at HIDDEN = (width, width), batch n."""
    import jax

    import lktd_ppl
    from lktd_ppl.api import load_model
    from lktd_ppl.filter import LKTDState, inner_step

    batches = rl_batches(n)
    one = pick(batches, 0)
    model = load_model(model_with_hidden((width, width), folder))
    ssm = lktd_ppl.from_numpyro(model, one)
    cfg = default_sampler()
    steps = int(min(2000, max(3, sizes.scan_work / (ssm.p * n))))
    state = LKTDState(0.1 * jax.random.normal(jax.random.key(1), (ssm.p,)), one["reward"])

    def update(key, s, batch):
        return inner_step(ssm, cfg, s, batch, cfg.step_size, key=key)

    run = scan_updates(update, batches, steps)
    return ssm.p, median_times({"x": (run, state, steps)}, sizes.scaling_repeats)["x"]


def kova_update_time(width: int, sizes: Sizes) -> tuple[int, float]:
    """(p, seconds per KOVA update) at hidden (width, width), batch 100."""
    import jax

    from lktd_ppl.agents.kova import KOVAConfig, make_kova_learner, mlp_num_params

    learner = make_kova_learner(KOVAConfig(hidden=(width, width), memory_limit_bytes=2**33))
    reps = min(3, sizes.kova_reps)
    run = scan_updates(learner.update, rl_batches(100), reps)
    p = mlp_num_params(2, (width, width), 4)
    return p, median_times({"x": (run, learner.init(jax.random.key(1)), reps)}, 1)["x"]


def slope_rows(name: str, setting: str, xs: list, ts: list, claim: float, lo: float = 0) -> dict:
    """The fitted log-log slope of ``ts`` over ``xs`` (those with x >= lo) as a row."""
    sel = [(x, t) for x, t in zip(xs, ts, strict=True) if x >= lo]
    if len(sel) < 2:  # too few points above lo (tiny mode): fit them all
        sel = list(zip(xs, ts, strict=True))
    slope = fit_loglog_slope(*zip(*sel, strict=True))
    span = f"{setting}, {min(x for x, _ in sel):.3g}-{max(x for x, _ in sel):.3g}"
    return row("scaling", name, span, slope, "log-log slope", slope / claim, f"claim {claim:g}")


def bench_scaling(sizes: Sizes, folder: Path) -> list[dict]:
    """LKTD's inner step over p (n = 100) and over n, KOVA's update over p, with slopes."""
    rows = []
    ps, ts = [], []
    for w in sizes.lktd_widths:
        p, t = lktd_inner_step_time(w, 100, sizes, folder)
        ps.append(p)
        ts.append(t)
        rows.append(
            row("scaling", "lktd inner step", f"p {p}, n 100", t * 1e3, "ms", t / ts[0], "min p")
        )
    rows.append(slope_rows("lktd slope in p", "n 100, all p", ps, ts, 1.0))
    rows.append(slope_rows("lktd slope in p, p >= 1e5", "n 100", ps, ts, 1.0, lo=1e5))
    ns, tn = [], []
    for n in sizes.lktd_batches:
        p, t = lktd_inner_step_time(sizes.batch_scan_width, n, sizes, folder)
        ns.append(n)
        tn.append(t)
        rows.append(
            row("scaling", "lktd inner step", f"p {p}, n {n}", t * 1e3, "ms", t / tn[0], "min n")
        )
    rows.append(slope_rows("lktd slope in n", f"p {p}", ns, tn, 1.0))
    kp, kt = [], []
    for w in sizes.kova_widths:
        p, t = kova_update_time(w, sizes)
        kp.append(p)
        kt.append(t)
        rows.append(
            row("scaling", "kova update", f"p {p}, n 100", t * 1e3, "ms", t / kt[0], "min p")
        )
    rows.append(slope_rows("kova slope in p", "n 100", kp, kt, 2.0))
    rows.append(slope_rows("kova slope in p, p >= 5e3", "n 100", kp, kt, 2.0, lo=5e3))
    return rows


def default_sections(tiny: bool) -> list[str]:
    """The row groups a run without ``--only`` measures: all of them, but the accelerator group
    only on an accelerator or in the tiny mode (on a CPU its full sizes take about an hour)."""
    import jax

    if tiny or jax.default_backend() != "cpu":
        return list(SECTIONS)
    return [s for s in SECTIONS if s != "accelerator"]


def expected_rows(sizes: Sizes, sections: Iterable[str] = SECTIONS) -> list[tuple[str, str]]:
    """(section, row) of every row the chosen groups write at ``sizes``, in order."""
    chosen = set(sections)
    out: list[tuple[str, str]] = []
    if "methods" in chosen:
        for _ in sizes.hiddens:
            out += [("methods", f"{m} {part}") for m in METHODS for part in ("stage", "inner step")]
    if "scaling" in chosen:
        out += [("scaling", "lktd inner step")] * len(sizes.lktd_widths)
        out += [("scaling", "lktd slope in p"), ("scaling", "lktd slope in p, p >= 1e5")]
        out += [("scaling", "lktd inner step")] * len(sizes.lktd_batches)
        out += [("scaling", "lktd slope in n")]
        out += [("scaling", "kova update")] * len(sizes.kova_widths)
        out += [("scaling", "kova slope in p"), ("scaling", "kova slope in p, p >= 5e3")]
    if "escape" in chosen:
        out += [
            ("escape", f"paper run, {cache} cache: {part}")
            for cache in ("cold", "warm")
            for part in ESCAPE_PARTS
        ]
    if "chains" in chosen:
        out += [("chains", f"{m} chain(s)") for m in sizes.chain_counts]
    if "devices" in chosen:
        out += [("devices", name) for name in DEVICE_ROWS]
        out += [("devices", f"{name}: per-seed results against 1 device") for name in SPLIT_ROWS]
        m = sizes.chain_counts[-1]
        out += [
            ("devices", f"{m} chains, 1 device"),
            ("devices", f"{m} chains split over 2 forced host devices"),
        ]
    if "cartpole" in chosen:
        for label in ("env alone (random actions)", "acting + env"):
            out += [("cartpole", f"{label}, {k} seed(s) vmapped") for k in sizes.cartpole_seeds]
        out += [("cartpole", f"lktd training, {k} seed(s) vmapped") for k in sizes.cartpole_seeds]
    if "accelerator" in chosen:
        out += [
            ("accelerator", name)
            for name in (
                "many seeds, first call",
                "many seeds, compiled",
                "many seeds, 1M steps (extrapolated, not measured)",
            )
        ]
        out += [("accelerator", f"{m} chain(s)") for m in sizes.accel_chain_counts]
    return out


def parse_only(text: str) -> list[str]:
    chosen = [s for s in text.split(",") if s]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise ValueError(
            f"--only {text}: unknown row group(s) {', '.join(unknown)}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    return chosen


def run(sections: Iterable[str], sizes: Sizes) -> list[dict]:
    """Rows of the chosen row groups, in the order of SECTIONS."""
    chosen = set(sections)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="lktd_bench_") as tmp:
        folder = Path(tmp)
        groups: dict[str, Callable[[], list[dict]]] = {
            "methods": lambda: bench_methods(sizes, folder),
            "scaling": lambda: bench_scaling(sizes, folder),
            "escape": lambda: bench_escape(sizes),
            "chains": lambda: bench_chains(sizes),
            "devices": lambda: bench_devices(sizes),
            "cartpole": lambda: bench_cartpole(sizes),
            "accelerator": lambda: bench_accelerator(sizes),
        }
        todo = [name for name in SECTIONS if name in chosen]
        for i, name in enumerate(todo, 1):
            print(f"bench: {name} ({i} of {len(todo)}) ...", flush=True)
            t = time.perf_counter()
            rows += groups[name]()
            print(f"bench: {name} done in {time.perf_counter() - t:.1f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(
        prog="lktd experiment bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--tiny", action="store_true", help="every row at toy sizes (the tests)")
    ap.add_argument("--only", default="", help=f"comma-separated row groups: {','.join(SECTIONS)}")
    ap.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="writes OUT.md and OUT.csv (default experiments/results/bench)",
    )
    args = ap.parse_args(argv)
    try:
        sections = parse_only(args.only) or default_sections(args.tiny)
    except ValueError as e:
        ap.error(str(e))
    sizes = TINY if args.tiny else Sizes()
    argv_used = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["lktd", "experiment", "bench", *argv_used])
    info = machine()
    info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t = time.perf_counter()
    rows = run(sections, sizes)
    info["load_after"] = f"{os.getloadavg()[0]:.2f}"
    md, csv_path = write_tables(rows, info, command, sizes, args.out, time.perf_counter() - t)
    print(md.read_text())
    print(f"bench: wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
