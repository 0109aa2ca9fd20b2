"""LKTD's target-network option (``target_every``): the bootstrap at s' reads each chain's target
copy, which is refreshed after every ``target_every``-th stage; with the copy equal to the current
parameters a stage is the no-target stage exactly; a model that ignores the copy is refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_lmcdqn import minibatches

from lktd_ppl.agents.control import ControlConfig
from lktd_ppl.agents.lktd import LKTDAgentConfig, TargetState, lktd_learner
from lktd_ppl.ssm import ModelError

MODEL = "mlp_control:qlearning_gaussian"
N = 32


def learner(every: int, chains: int = 1, own: bool = False):
    config = LKTDAgentConfig(
        model=MODEL, num_chains=chains, own_minibatches=own, target_every=every, init_sd=0.3
    )
    return lktd_learner(config, ControlConfig(env_id="CartPole-v1", batch_size=N))


def batch_for(chains: int, own: bool, stage: int) -> dict:
    b = minibatches(4, 2, chains if own else 1, N)
    if not own:
        b = jax.tree.map(lambda x: x[0], b)
    return {**b, "stage": jnp.int32(stage)}


@pytest.mark.parametrize(
    "chains,own", [(1, False), (2, False), pytest.param(2, True, marks=pytest.mark.slow)]
)
def test_target_equal_to_parameters_gives_the_plain_stage(chains, own):
    with_t, plain = learner(5, chains, own), learner(0, chains, own)
    key = jax.random.key(3)
    state = with_t.init(jax.random.key(0))
    batch = batch_for(chains, own, stage=0)
    new = jax.jit(with_t.update)(key, state, batch)
    ref = jax.jit(plain.update)(key, state.chains, batch)
    np.testing.assert_allclose(new.chains.position, ref.position, rtol=1e-5, atol=2e-6)
    # stage 0 of every 5: the copy stays the start
    np.testing.assert_array_equal(new.target, state.target)
    # another target changes the stage (every chain's)
    other = TargetState(state.chains, state.target * 0.5)
    moved = jax.jit(with_t.update)(key, other, batch)
    diff = np.abs(np.asarray(moved.chains.position) - np.asarray(ref.position)).max(axis=-1)
    assert (diff > 1e-4).all(), diff


def test_target_refreshed_after_every_kth_stage():
    lrn = learner(4)
    state = lrn.init(jax.random.key(1))
    update = jax.jit(lrn.update)
    for stage in range(8):
        new = update(jax.random.key(stage), state, batch_for(1, False, stage))
        if (stage + 1) % 4 == 0:
            np.testing.assert_array_equal(new.target, new.chains.position)
        else:
            np.testing.assert_array_equal(new.target, state.target)
            assert float(jnp.abs(new.target - new.chains.position).max()) > 1e-6
        state = new


def test_model_without_target_reader_refused():
    config = LKTDAgentConfig(model="mlp_q:sarsa_spike_slab", target_every=10)
    with pytest.raises(ModelError, match="next_q_target"):
        lktd_learner(config)
