"""Divergence: a seed that blows up is frozen at its last finite state and marked, the others
finish; ``lktd train`` exits with status 3 and says which seed, where and why; the run folder
keeps the metrics up to the divergence and only finite draws.  Tiny budgets throughout."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lktd_ppl import cli, divergence, training
from lktd_ppl.agents.harness import Learner
from lktd_ppl.diagnostics import diagnose

# escape: 600 steps, training from step 200 every 10 steps, an evaluation every 200 steps, small
# buffers
TINY = [
    "--steps",
    "600",
    "--set",
    "escape.window=200",
    "--set",
    "escape.evals_per_window=1",
    "--set",
    "escape.train_start=200",
    "--set",
    "escape.burn_in_fraction=0.5",
    "--set",
    "escape.sample_size=50",
    "--set",
    "escape.buffer_size=1000",
    "-q",
]
POISON_STAGE = 3  # the training stage at which poisoned runs blow up
CONTROL = [  # CartPole: 800 steps, training from step 100, an evaluation every 100 steps
    "--env",
    "CartPole-v1",
    "--steps",
    "800",
    "--set",
    "control.train_start=100",
    "--set",
    "control.eval_every=100",
    "--set",
    "control.eval_episodes=2",
    "--set",
    "control.best_eval_episodes=2",
    "--set",
    "control.num_probes=8",
    "--set",
    "hidden=8",
    "-q",
]


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def poison(learner: Learner) -> Learner:
    """``learner`` whose update turns every float leaf NaN at stage ``POISON_STAGE`` on about half
    of the runs (a draw from the update's key, which the run's key fixes)."""

    def update(key, state, batch):
        new = learner.update(key, state, batch)
        blow = (batch["stage"] == POISON_STAGE) & (
            jax.random.uniform(jax.random.fold_in(key, 7)) < 0.5
        )

        def spoil(x):
            return jnp.where(blow, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.floating) else x

        return jax.tree.map(spoil, new)

    return learner._replace(update=update)


def verdict_line(tree, label: str, mask=None) -> str:
    """The verdict computed here from ArviZ's own functions on the draws of ``tree``."""
    import arviz_stats as azs

    def over(x):
        v = np.asarray(x["q"].values)
        return v[mask] if mask is not None else v.reshape(-1)

    worst = float(np.max(over(azs.rhat(tree))))
    bulk = float(np.min(over(azs.ess(tree, method="bulk"))))
    tail = float(np.min(over(azs.ess(tree, method="tail"))))
    mixed = worst < 1.01 and bulk >= 400 and tail >= 400
    return (
        f"Mixing ({label}): {'mixed' if mixed else 'not mixed'} (max R-hat {worst:.3f}, wanted "
        f"< 1.01; min bulk ESS {bulk:.0f}, min tail ESS {tail:.0f}, wanted >= 400). This is "
        "about mixing, not calibration."
    )


def all_finite(path) -> bool:
    with np.load(path) as z:
        return all(np.isfinite(z[k]).all() for k in z.files if z[k].dtype.kind == "f")


def test_large_step_size_exits_3_with_the_metrics_so_far(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--algo", "lktd", *TINY, "--set", "sampler.step_size=1", "--out", str(out)]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0] == (
        "lktd train: diverged: seed 0 chain 0 diverged at training stage 0 (environment step "
        "200): non-finite parameters; likely cause: the step size eps0 (sampler.step_size=1) is "
        "too large for the pseudo-population N (sampler.pseudo_population=50000) and the model's "
        "measurement sd sigma (the drift grows with eps0 N / sigma^2): lower sampler.step_size. "
        "0 of 1 seed(s) finished; metrics.csv holds the metrics up to the divergence and "
        "checkpoint.npz the last finite state (summary.md lists the diverged seeds)"
    )
    rows = read_rows(out / "metrics.csv")
    assert [(r["step"], r["diverged"]) for r in rows] == [("200", "1"), ("400", "1"), ("600", "1")]
    assert all(np.isnan(float(r["mse_E"])) for r in rows)
    # no all-NaN posterior: the only seed diverged, so no samples.nc; the checkpoint is finite
    assert not (out / "samples.nc").exists()
    with np.load(out / "checkpoint.npz") as z:
        assert all(np.isfinite(z[k]).all() for k in z.files if z[k].dtype.kind == "f")
    status = json.loads((out / "status.json").read_text())  # finished, and says it diverged
    assert status["state"] == "finished"
    assert status["message"].startswith("seed 0 chain 0 diverged at training stage 0")
    summary = (out / "summary.md").read_text()
    assert "- seed 0 chain 0 diverged at training stage 0 (environment step 200)" in summary
    assert "Every seed diverged: no samples.nc was written." in summary


def test_control_freezes_the_diverged_seed_and_the_other_finishes(tmp_path, capsys, monkeypatch):
    make = training.make_learner
    monkeypatch.setattr(training, "make_learner", lambda spec: poison(make(spec)))
    out = tmp_path / "run"
    assert cli.main(["train", "--algo", "dqn", *CONTROL, "--seeds", "2", "--out", str(out)]) == 3
    bad, good = 1, 0  # the key of seed 1 poisons its run at stage POISON_STAGE, seed 0's not
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"lktd train: diverged: seed {bad} chain 0 diverged at training stage {POISON_STAGE} "
        f"(environment step {100 + 4 * POISON_STAGE}): non-finite parameters; likely "
        "cause: the learning rate (learning_rate=0.001) is too large. 1 of 2 seed(s) finished"
    )
    rows = read_rows(out / "metrics.csv")
    by_seed = {s: [r for r in rows if int(r["seed"]) == s] for s in (bad, good)}
    assert [r["diverged"] for r in by_seed[bad]] == ["0"] + ["1"] * 7
    assert [r["diverged"] for r in by_seed[good]] == ["0"] * 8
    assert np.isfinite(float(by_seed[bad][0]["eval_return"]))
    assert all(np.isnan(float(r["eval_return"])) for r in by_seed[bad][1:])
    assert all(np.isfinite(float(r["eval_return"])) for r in by_seed[good])
    assert all_finite(out / "checkpoint.npz")  # the diverged seed's last finite state
    from lktd_ppl import diagnostics as dg

    tree = dg.load_datatree(out / "samples.nc")
    q = tree.posterior["q"].values
    assert q.shape[0] == 1 and np.isfinite(q).all()  # the healthy seed's chain only
    assert np.atleast_1d(tree.attrs["diverged_seeds"]).tolist() == [bad]
    summary = (out / "summary.md").read_text()
    assert f"- seed {bad} chain 0 diverged at training stage {POISON_STAGE}" in summary
    # lktd diagnose: the verdict first (one chain: split R-hat, labelled so), with ArviZ's numbers
    # over the last 4 of the 8 evaluations, and the diverged seed named
    report = diagnose(out).splitlines()
    assert report[2] == verdict_line(tree.isel(draw=slice(4, None)), "split R-hat within one chain")
    assert report[3] == f"Seed(s) {bad} diverged and are left out of samples.nc (see summary.md)."


def test_host_loop_freezes_the_diverged_seed(monkeypatch):
    from lktd_ppl.config import build_spec

    sys.path.insert(0, str(Path(__file__).parent))  # chain_env, importable as a module
    spec = build_spec(
        algo="dqn",
        env="chain_env:Chain-v0",
        steps=300,
        seeds=2,
        sets=[
            "hidden=8",
            "control.train_start=100",
            "control.eval_every=100",
            "control.eval_episodes=2",
            "control.best_eval_episodes=2",
            "control.num_probes=8",
        ],
    )
    make = training.make_learner
    monkeypatch.setattr(training, "make_learner", lambda spec: poison(make(spec)))
    results = training.make_train(spec)(
        jnp.stack([jax.random.key(0), jax.random.key(1)]), progress=False
    )
    d = results["divergence"]
    assert d["diverged"].tolist() == [False, True]  # seed 1's key poisons its run here
    assert (int(d["stage"][1]), int(d["step"][1]), int(d["cause"][1])) == (
        POISON_STAGE,
        100 + 4 * POISON_STAGE,
        1,
    )
    params = jax.tree.leaves(results["state"].learner)
    assert all(np.isfinite(np.asarray(x)).all() for x in params if np.asarray(x).dtype.kind == "f")
    assert np.isfinite(results["eval_return"][0]).all()


def test_assess_and_guard_freeze_the_bad_seed():
    limit = divergence.q_limit(
        divergence.healthy()._replace(reward_max=jnp.float32(1.0)), 0.9, None, True
    )
    assert float(limit) == pytest.approx(100.0)
    assert float(divergence.q_limit(divergence.healthy(), 0.9, None, True)) == np.inf  # R = 0
    assert float(divergence.q_limit(divergence.healthy(), 0.9, 2.0, True)) == pytest.approx(200.0)
    assert float(divergence.q_limit(divergence.healthy(), 0.9, 2.0, False)) == np.inf
    ok = {"w": jnp.ones(3)}
    q = jnp.array([[1.0, -2.0], [150.0, 0.0]])  # member 1 beyond the bound 100
    bad, member, cause, q_abs = divergence.assess(ok, q, limit)
    assert (bool(bad), int(member), int(cause), float(q_abs)) == (True, 1, 3, 150.0)
    q_nan = jnp.array([[1.0, jnp.nan], [1.0, 0.0]])
    assert [int(x) for x in divergence.assess(ok, q_nan, limit)[1:3]] == [0, 2]
    assert int(divergence.assess({"w": jnp.array([jnp.inf])}, q_nan, limit)[2]) == 1
    before, after = {"w": jnp.zeros(3)}, {"w": jnp.full(3, jnp.nan)}
    h = divergence.healthy()
    state, h = divergence.guard(h, before, after, q_nan, limit, jnp.bool_(True), 4, 240)
    assert np.array_equal(state["w"], np.zeros(3)) and bool(h.diverged)
    assert (int(h.stage), int(h.step), int(h.member), int(h.cause)) == (4, 240, 0, 1)
    # once frozen, a finite update is dropped and the record kept
    state, h = divergence.guard(h, state, ok, q, jnp.inf, jnp.bool_(True), 5, 250)
    assert np.array_equal(state["w"], np.zeros(3)) and int(h.stage) == 4


def test_diagnose_an_escape_run_starts_with_the_verdict(tmp_path):
    """A run folder of one chain (draws of a Gaussian around the truth, the second half shifted:
    not mixed): the verdict is the split R-hat within the chain, labelled so, and its numbers are
    ArviZ's over the scored entries; non-finite draws are flagged by chain."""
    from lktd_ppl import diagnostics as dg
    from lktd_ppl.agents.harness import make_task
    from lktd_ppl.config import build_spec
    from lktd_ppl.run_folder import sample_attrs, write_config

    spec = build_spec(algo="dqn", steps=2000, sets=["escape.window=1000"])
    out = tmp_path / "run"
    write_config(out, spec)
    task = make_task(spec.escape)
    mask = np.asarray(task.mask)
    truth = np.where(mask, np.asarray(task.truth), np.nan)
    rng = np.random.default_rng(0)
    q = np.nan_to_num(truth) + 0.1 * rng.standard_normal((1, 60, *truth.shape))
    q[:, 30:] += 0.2
    attrs = {**sample_attrs(spec, 1, np.arange(1, 61) * 10), "grid_size": 10}
    tree = dg.q_samples_to_datatree(q.astype(np.float32), truth=truth, mask=mask, attrs=attrs)
    dg.save_datatree(tree, out / "samples.nc")
    report = diagnose(out).splitlines()
    assert report[2] == verdict_line(tree, "split R-hat within one chain", mask)
    assert "not mixed" in report[2]
    from lktd_ppl.diagnostics.report import non_finite_lines

    q = np.concatenate([q, q])
    q[1, 3, 5, 1] = np.nan
    lines = non_finite_lines(q, 1, {})
    assert lines == [
        "Non-finite draws: 1 of 48000 Q-values, in chain(s) 1 (seed-major, 1 member(s) per "
        "seed): the run diverged; its R-hat, ESS and intervals are not meaningful."
    ]


def test_study_tables_count_diverged_runs():
    """The escape study leaves flagged runs out and counts them; the control study's row summary
    counts its diverged seeds, whose returns from the divergence on are NaN and out of the IQM."""
    from lktd_ppl.study import aggregate as agg
    from lktd_ppl.study.control import summarise_row

    data = {
        "w_mse": np.full((3, 6, 4), 1e-3),
        "diverged": np.array([False, True, False]),
        "seeds": np.arange(3),
    }
    kept, bad = agg.split_diverged(data)
    assert bad == 1 and kept["seeds"].tolist() == [0, 2]
    returns = np.array([[10.0, 20.0, 30.0], [10.0, np.nan, np.nan], [12.0, 22.0, 32.0]])
    diverged = divergence.mask_after(
        np.array([[10.0, 20.0, 30.0], [10.0, 500.0, 500.0], [12.0, 22.0, 32.0]]),
        np.array([100, 200, 300]),
        {"diverged": np.array([False, True, False]), "step": np.array([-1, 150, -1])},
    )
    np.testing.assert_array_equal(diverged, returns)
    row = {
        "seeds": np.arange(3),
        "eval_return": diverged,
        "train_return": diverged,
        "best_return": np.array([30.0, 10.0, 32.0]),
        "wall_time": np.ones(3),
        "batch_size": np.full(3, 3),
        "diverged": np.array([False, True, False]),
    }
    s = summarise_row(row)
    assert (s["runs"], s["diverged"]) == (3, 1)
    assert s["final"][0] == pytest.approx(21.0)  # the IQM of the two finite seeds' means 20, 22
