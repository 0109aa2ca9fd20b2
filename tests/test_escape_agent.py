"""The LKTD agent in the escape harness (spec section 4): learning, in-scan metrics, seeds."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MODELS

from lktd_ppl import diagnostics
from lktd_ppl.agents.harness import EscapeConfig, Learner, epsilon_greedy, make_task
from lktd_ppl.agents.lktd import LKTDAgentConfig, lktd_learner, make_lktd_train
from lktd_ppl.filter import SamplerConfig
from lktd_ppl.metrics import LEVELS, PROBS, final_cells, interval_metrics

TASK = make_task(EscapeConfig())


def _ring_samples(final: dict, seed: int = 0) -> np.ndarray:
    """The saved sample buffer of one run as (S, cells, A)."""
    ring, valid = final["samples"][seed], final["valid"][seed]
    return ring[:, valid].T.reshape(-1, 100, 4)


@pytest.fixture(scope="module")
def run_200k():
    train = make_lktd_train(LKTDAgentConfig(), EscapeConfig(total_steps=200_000))
    return train(jax.random.key(0)[None], progress=False)


def test_200k_run_learns_the_start_cell(run_200k):
    samples = _ring_samples(run_200k["final"])
    assert samples.shape == (3000, 100, 4)
    truth = np.asarray(TASK.truth)
    start_mean = samples[:, 0, :2].mean(axis=0)  # cell (0, 0), actions E and N
    assert np.all(np.abs(start_mean - truth[0, :2]) < 0.1), (start_mean, truth[0, :2])
    assert run_200k["mean_return"][0, -10:].mean() > -20  # greedy path: 18 steps


def test_in_scan_metrics_equal_metrics_of_saved_samples(run_200k):
    res = run_200k
    samples = _ring_samples(res["final"])
    ref = diagnostics.interval_metrics(
        samples, res["final"]["latest"][0], np.asarray(TASK.truth), np.asarray(TASK.mask)
    )
    last = {k: v[0, -1] for k, v in res["metrics"].items()}  # the last evaluation
    np.testing.assert_allclose(last["mse"], ref["mse"], rtol=1e-4)
    np.testing.assert_allclose(last["width"], ref["width"], rtol=1e-4)
    np.testing.assert_allclose(last["coverage"], ref["coverage"], atol=1 / 90)
    np.testing.assert_allclose(
        last["coverage_equal_tailed"], ref["coverage_equal_tailed"], atol=1 / 90
    )
    np.testing.assert_allclose(last["calibration"], ref["calibration"], atol=1 / 90)


def test_final_cells_give_the_last_evaluations_intervals(run_200k):
    """The per-cell summary a study keeps with each run: its quantiles are the ones the last
    evaluation scored, so the calibration curve recomputed from them is the in-scan one."""
    f = run_200k["final"]
    cells = final_cells(f["samples"][0], f["valid"][0], f["slot"][0], 1, (100, 4))
    truth, mask = np.asarray(TASK.truth), np.asarray(TASK.mask)
    q = dict(zip(PROBS, cells["quantiles"], strict=True))
    covered = np.stack([(q[(1 - lv) / 2] < truth) & (truth < q[(1 + lv) / 2]) for lv in LEVELS])
    curve = (covered & mask).sum(axis=1) / mask.sum(axis=0)  # (levels, A) over the legal cells
    np.testing.assert_allclose(curve, run_200k["metrics"]["calibration"][0, -1], atol=1e-6)
    samples = _ring_samples(f)
    np.testing.assert_allclose(cells["mean"], samples.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cells["chain_mean"][..., 0], cells["mean"], atol=1e-6)


def test_jax_metrics_equal_numpy_reference_while_filling():
    rng = np.random.default_rng(0)
    m, cap, filled = 3, 50, 37  # 3 members, 50 stages, 37 stored
    ring = np.zeros((400, cap * m), np.float32)
    centre = np.asarray(TASK.truth).reshape(-1, 1) + rng.normal(size=(400, 1))  # calibrated
    ring[:, : filled * m] = rng.normal(size=(400, filled * m)) + centre
    valid = np.arange(cap * m) < filled * m
    latest = rng.normal(size=(m, 100, 4)).astype(np.float32) + np.asarray(TASK.truth)
    got = jax.jit(interval_metrics)(
        jnp.asarray(ring), jnp.asarray(valid), jnp.asarray(latest), TASK.truth, TASK.mask
    )
    samples = ring[:, valid].T.reshape(-1, 100, 4)
    ref = diagnostics.interval_metrics(
        samples, latest, np.asarray(TASK.truth), np.asarray(TASK.mask)
    )
    for k in ("mse", "width"):
        np.testing.assert_allclose(getattr(got, k), ref[k], rtol=1e-4)
    for k in ("coverage", "coverage_equal_tailed", "calibration"):
        np.testing.assert_allclose(getattr(got, k), ref[k], atol=1e-6)
    assert 0.2 < float(np.mean(ref["coverage_equal_tailed"])) < 1.0  # a non-trivial case


def test_seeds_differ_and_repeat():
    cfg, escape = LKTDAgentConfig(), EscapeConfig(total_steps=20_000)
    learner = lktd_learner(cfg, escape)
    a, b = learner.init(jax.random.key(1)), learner.init(jax.random.key(2))
    assert float(jnp.max(jnp.abs(a.position - b.position))) > 0.1
    train = make_lktd_train(cfg, escape)
    keys = jnp.stack([jax.random.key(1), jax.random.key(2), jax.random.key(1)])
    res = train(keys, progress=False)
    pos = np.asarray(res["state"].learner.position)  # (seeds, chains, p)
    np.testing.assert_array_equal(pos[0], pos[2])  # same seed, same run
    assert np.max(np.abs(pos[0] - pos[1])) > 0.05  # different seeds diverge
    np.testing.assert_array_equal(res["metrics"]["mse"][0], res["metrics"]["mse"][2])


def test_epsilon_greedy_only_picks_legal_actions():
    legal = jnp.array([0, 1, 0, 1], jnp.int8)
    q = jnp.array([10.0, 1.0, 9.0, 2.0])  # the illegal actions have the highest values
    us = jnp.linspace(0, 0.999, 50)
    greedy = jax.vmap(lambda u: epsilon_greedy(0.5, u, q, legal, 0.0))(us)
    assert set(np.asarray(greedy)) == {3}
    explore = jax.vmap(lambda u: epsilon_greedy(0.0, u, q, legal, 1.0))(us)
    assert set(np.asarray(explore)) == {1, 3}
    assert abs(float(jnp.mean(explore == 1)) - 0.5) < 0.05


@pytest.mark.parametrize(
    "overrides",
    [
        dict(method="sgld", sampler=SamplerConfig(compat=True)),
        dict(method="sghmc", sampler=SamplerConfig(compat=True)),  # the official SGHMC
        dict(model=f"{MODELS}/mlp_q.py:sarsa_gaussian"),  # another model file, no code change
        dict(num_chains=3),
        dict(num_chains=2, own_minibatches=True),  # the harness draws a minibatch per chain
    ],
    ids=["sgld", "sghmc", "gaussian-prior-model", "3-chains", "2-chains-own-minibatches"],
)
def test_variants_learn_in_the_same_harness(overrides):
    cfg = LKTDAgentConfig(**overrides)
    res = make_lktd_train(cfg, EscapeConfig(total_steps=60_000))(jax.random.key(3)[None], False)
    assert res["mean_return"][0, -10:].mean() > -20
    samples = _ring_samples(res["final"])
    assert samples.shape[0] == 3000 * cfg.num_chains
    err = np.abs(samples[:, 0, :2].mean(0) - np.asarray(TASK.truth)[0, :2])
    assert np.all(err < 0.5), err


def _random_batch(seed: int, stage: int) -> dict:
    """A minibatch of 100 transitions at random points (keys seed, seed + 1), reward -1."""
    from lktd_ppl.replay import example_transition

    rows = {k: jnp.broadcast_to(v, (100, *v.shape)) for k, v in example_transition(2, 4).items()}
    return {
        **rows,
        "obs": jax.random.uniform(jax.random.key(seed), (100, 2)),
        "next_obs": jax.random.uniform(jax.random.key(seed + 1), (100, 2)),
        "reward": -jnp.ones(100),
        "stage": jnp.int32(stage),
    }


def jitted_update(learner: Learner) -> Callable:
    """The learner's update compiled whole, as the harness runs it (op by op, the chains' vmap
    and the stage's inner loops cost several times the compilation)."""
    return jax.jit(learner.update)


def test_annealed_step_size_is_the_constant_one_at_that_stage():
    """step_size_decay: a stage at t uses eps0 (1 + t / t0)^-decay, else the same kernel."""
    annealed = LKTDAgentConfig(
        sampler=SamplerConfig(step_size=2e-5), step_size_decay=1.0, step_size_decay_stages=100.0
    )
    at_300 = LKTDAgentConfig(
        sampler=SamplerConfig(step_size=2e-5 / 4.0)
    )  # (1 + 300 / 100)^-1 = 1/4
    batch = _random_batch(seed=7, stage=300)
    outs = []
    for cfg in (annealed, at_300, LKTDAgentConfig(sampler=SamplerConfig(step_size=2e-5))):
        learner = lktd_learner(cfg)
        state = learner.init(jax.random.key(1))
        outs.append(np.asarray(jitted_update(learner)(jax.random.key(2), state, batch).position))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-7)
    assert np.abs(outs[0] - outs[2]).max() > 1e-4  # the constant eps0 moves differently


def test_the_protocols_gamma_reaches_the_model():
    """The LKTD agent hands the model gamma (1 - terminated) of the run's protocol: the
    measurement's loc is Q(s, a) - gamma (1 - terminated) Q(s', a') at gamma = 0.5 (the model
    file's GAMMA is 0.9), and at the file's own 0.9 a stage is bit for bit the stage of the model
    discounting by itself (no ``discount`` key)."""
    from lktd_ppl.agents.lktd import lktd_kernel, with_discount

    config = LKTDAgentConfig(model=f"{MODELS}/mlp_q.py:sarsa_gaussian")
    batch = _random_batch(seed=3, stage=5)
    batch = {
        **batch,
        "action": jnp.arange(100) % 4,
        "next_action": (jnp.arange(100) + 1) % 4,
        "terminated": (jnp.arange(100) % 5 == 0).astype(jnp.float32),
    }
    ssm, kernel, _ = lktd_kernel(config, 100)
    theta = 0.3 * jax.random.normal(jax.random.key(0), (ssm.p,))
    q = np.asarray(ssm.deterministic(theta, batch, "q"))
    q_next = np.asarray(ssm.deterministic(theta, {**batch, "obs": batch["next_obs"]}, "q"))
    rows = np.arange(100)
    not_done = 1.0 - np.asarray(batch["terminated"])
    for gamma in (0.5, 0.9):
        loc = ssm.measure(theta, with_discount(batch, gamma)).loc
        want = q[rows, batch["action"]] - gamma * not_done * q_next[rows, batch["next_action"]]
        np.testing.assert_allclose(loc, want, rtol=1e-5, atol=1e-6)
    key = jax.random.key(4)
    own = {}
    for gamma in (0.5, 0.9):
        learner = lktd_learner(config, EscapeConfig(gamma=gamma))
        state = learner.init(jax.random.key(1))
        own[gamma] = np.asarray(jitted_update(learner)(key, state, batch).position[0])
    by_itself = jax.jit(kernel.step)(key, jax.tree.map(lambda x: x[0], state), batch)[0]
    np.testing.assert_array_equal(own[0.9], np.asarray(by_itself.position))
    assert np.abs(own[0.5] - own[0.9]).max() > 1e-6


def test_step_size_drops_are_piecewise_and_move_the_chain_as_that_constant_step():
    """step_size_drops: the factor of the last stage reached (times any annealing), and a stage
    under a drop moves the chain exactly as the constant step it gives."""
    from lktd_ppl.agents.lktd import stage_step_size

    drops = LKTDAgentConfig(
        sampler=SamplerConfig(step_size=2e-5), step_size_drops=[[100, 0.1], [200, 0.01]]
    )
    assert drops.step_size_drops == ((100, 0.1), (200, 0.01))  # JSON's lists become tuples
    got = [float(stage_step_size(drops, jnp.int32(t))) for t in (0, 99, 100, 199, 200, 10**5)]
    np.testing.assert_allclose(got, [2e-5, 2e-5, 2e-6, 2e-6, 2e-7, 2e-7], rtol=1e-6)
    both = LKTDAgentConfig(
        sampler=SamplerConfig(step_size=2e-5),
        step_size_decay=1.0,
        step_size_decay_stages=100.0,
        step_size_drops=((200, 0.5),),
    )
    np.testing.assert_allclose(float(stage_step_size(both, jnp.int32(300))), 2e-5 / 8, rtol=1e-6)
    batch = _random_batch(seed=7, stage=300)
    outs = []
    for cfg in (drops, LKTDAgentConfig(sampler=SamplerConfig(step_size=2e-7))):
        learner = lktd_learner(cfg)
        state = learner.init(jax.random.key(1))
        outs.append(np.asarray(jitted_update(learner)(jax.random.key(2), state, batch).position))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="step_size_drops: stages must be"):
        LKTDAgentConfig(step_size_drops=((200, 0.1), (100, 0.01)))
    with pytest.raises(ValueError, match=r"step_size_drops: give \(stage, factor\) pairs"):
        LKTDAgentConfig(step_size_drops=((200, 0.1, 3),))
    with pytest.raises(ValueError, match="step_size_drops: factors must be positive"):
        LKTDAgentConfig(step_size_drops=((200, 0.0),))


def test_chains_side_by_side_equal_chains_one_after_another():
    """chain_batching: vmapped chains (an accelerator's way) move exactly as mapped ones (CPU's)."""
    batch = _random_batch(seed=5, stage=3)
    outs = []
    for batching in ("map", "vmap"):
        learner = lktd_learner(LKTDAgentConfig(num_chains=3, chain_batching=batching))
        state = learner.init(jax.random.key(1))
        outs.append(np.asarray(jitted_update(learner)(jax.random.key(2), state, batch).position))
    assert np.abs(outs[0][0] - outs[0][1]).max() > 1e-3  # the chains differ from each other
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chain_batching"):
        lktd_learner(LKTDAgentConfig(chain_batching="pmap"))
    with pytest.raises(ValueError, match="temperature applies to method 'lktd' only"):
        lktd_learner(LKTDAgentConfig(method="sgld", sampler=SamplerConfig(temperature=0.5)))


@pytest.mark.parametrize("batching", ["map", "vmap"])
def test_own_minibatches_give_each_chain_its_draw(batching):
    """own_minibatches: chain i moves as it would in a shared-minibatch run fed minibatch i."""
    first, second = _random_batch(seed=5, stage=3), _random_batch(seed=11, stage=3)
    stacked = {k: jnp.stack([first[k], second[k]]) for k in first if k != "stage"}
    stacked["stage"] = first["stage"]
    own = lktd_learner(LKTDAgentConfig(num_chains=2, own_minibatches=True, chain_batching=batching))
    shared = lktd_learner(LKTDAgentConfig(num_chains=2))
    assert (own.minibatches, shared.minibatches) == (2, 1)
    own_update, shared_update = jitted_update(own), jitted_update(shared)
    state = own.init(jax.random.key(1))
    moved = np.asarray(own_update(jax.random.key(2), state, stacked).position)
    for i, batch in enumerate((first, second)):
        expect = np.asarray(shared_update(jax.random.key(2), state, batch).position)[i]
        np.testing.assert_allclose(moved[i], expect, rtol=1e-5, atol=1e-6)
    wrong = np.asarray(shared_update(jax.random.key(2), state, second).position)[0]
    assert np.abs(moved[0] - wrong).max() > 1e-3  # the other minibatch moves chain 0 elsewhere
