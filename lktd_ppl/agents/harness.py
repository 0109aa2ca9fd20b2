"""The escape-room harness every algorithm runs in (spec section 4).

One run: ``total_steps`` environment steps of the JAX twin; epsilon-greedy acting over legal actions
(1.0 -> 0.01 over the first 10% of steps) on the acting member's Q (a chain for LKTD, drawn per
episode: Thompson sampling); SARSA transitions whose a' is the action actually taken next (after a
truncation, a' is drawn at s' by the acting policy) into a FIFO replay buffer; one training stage
every ``train_every`` steps once ``train_start`` transitions are stored; after the burn-in, every
member's Q-grid after every stage into a ring buffer of the last ``sample_size`` stages; metrics
(:mod:`lktd_ppl.metrics`) ``evals_per_window`` times per window, averaged per window on the host.

An algorithm is a :class:`Learner`; ``make_train(config, learner)`` returns ``train(keys)``, which
runs a Python loop over jitted chunks (one chunk = the steps between two evaluations; progress bar
and log lines between chunks), vmapped over seeds.  The protocol's settings (:class:`EscapeConfig`)
live in :mod:`lktd_ppl.agents.protocol`, re-exported here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lktd_ppl import divergence, scale
from lktd_ppl.agents.protocol import EscapeConfig
from lktd_ppl.agents.protocol import ReplayProtocol as ReplayProtocol
from lktd_ppl.envs import escape
from lktd_ppl.envs.truth import q_epsilon_greedy, q_star
from lktd_ppl.metrics import Metrics, greedy_policy_frequency, interval_metrics
from lktd_ppl.replay import Replay, example_transition
from lktd_ppl.rng import standard_normal, uniform

NUM_UNIFORMS = 5  # per env step: explore?, which action, the same two for a' at s', member
UNROLL = 5  # env steps unrolled per loop iteration: less loop overhead per step on CPU


class Learner(NamedTuple):
    """What the harness needs from an algorithm.  ``members``: chains, heads, or 1."""

    members: int
    init: Callable[[jax.Array], Any]
    q_values: Callable[
        [Any, jax.Array, jax.Array], jax.Array
    ]  # (state, member, obs (k,d)) -> (k,A)
    q_grid: Callable[[Any, jax.Array], jax.Array]  # (state, obs (cells,d)) -> (members, cells, A)
    update: Callable[[jax.Array, Any, dict], Any]  # (key, state, batch incl. "stage") -> state
    extra_item: Callable[[jax.Array], dict] | None = None  # per-transition extras (e.g. masks)
    # (u, state) -> the acting member, from one U[0, 1) draw; consulted at every episode start and
    # after every training stage.  None: uniform over members at each episode start (Thompson).
    acting_member: Callable[[jax.Array, Any], jax.Array] | None = None
    # minibatches drawn per stage: 1 gives ``update`` one (leaves (n, ...)); k > 1 gives k
    # independent ones stacked (leaves (k, n, ...); "stage" stays a scalar), e.g. one per chain
    minibatches: int = 1


class RunState(NamedTuple):
    key: jax.Array
    env: escape.EscapeState
    obs: jax.Array
    legal: jax.Array
    pend: dict  # the last transition, waiting for its next action
    replay: Any
    learner: Any
    member: jax.Array
    ring: jax.Array  # (cells*A, sample_size*members)
    valid: jax.Array  # (sample_size*members,)
    slot: jax.Array  # next ring slot (in stages)
    latest: jax.Array  # (members, cells, A): the last stored Q-grids
    qtab: jax.Array  # (members, cells, A): Q-grids of the current parameters, for acting
    ep_return: jax.Array
    ret_sum: jax.Array
    ret_count: jax.Array
    health: divergence.Health


def epsilon_at(config: EscapeConfig, t: jax.Array) -> jax.Array:
    frac = jnp.clip(t / (config.eps_fraction * config.total_steps), 0.0, 1.0)
    return config.eps_start + (config.eps_end - config.eps_start) * frac


def epsilon_greedy(
    u_explore: jax.Array, u_pick: jax.Array, q: jax.Array, legal: jax.Array, eps: jax.Array
) -> jax.Array:
    """Greedy legal action with probability 1 - eps, else uniform over the legal actions.

    Takes its two U[0, 1) draws as inputs (the harness draws a period's randomness at once).
    """
    legal = legal > 0
    greedy = jnp.argmax(jnp.where(legal, q, -jnp.inf))
    count = jnp.sum(legal)
    k = jnp.minimum(jnp.floor(u_pick * count).astype(jnp.int32), count - 1)
    random = jnp.argmax(legal & (jnp.cumsum(legal) - 1 == k))  # the k-th legal action
    return jnp.where(u_explore < eps, random, greedy).astype(jnp.int32)


class Task(NamedTuple):
    params: escape.EscapeParams
    grid_obs: jax.Array  # (cells, 2)
    truth: jax.Array  # (cells, A): Q of the epsilon-greedy optimal policy (0 where undefined)
    mask: jax.Array  # (cells, A) bool
    truth_star: jax.Array  # (cells, A): Q* (what DQN-type targets converge to)


def make_task(config: EscapeConfig) -> Task:
    truth = q_epsilon_greedy(config.size, config.gamma, config.truth_epsilon)
    params = escape.EscapeParams(
        size=config.size,
        reward_noise_sd=config.reward_noise_sd,
        max_steps=config.max_episode_steps,
    )
    star = q_star(config.size, config.gamma)
    return Task(
        params,
        jnp.asarray(escape.cell_observations(config.size)),
        jnp.asarray(np.nan_to_num(truth), jnp.float32),
        jnp.asarray(np.isfinite(truth)),
        jnp.asarray(np.nan_to_num(star), jnp.float32),
    )


def make_train(
    config: EscapeConfig,
    learner: Learner,
    chunks_per_call: int | None = None,
    devices: int | None = None,
) -> Callable[..., dict]:
    """``train(keys, progress=True, log=None, checkpoint=None) -> results``: one run per key,
    vmapped over keys.  ``chunks_per_call``: chunks per jitted call (it changes no result;
    default: a window's where the run is whole windows, else 1).  ``checkpoint``: a
    :class:`~lktd_ppl.checkpoint.Checkpointer` called after every call (saves the whole carry and
    the outputs so far; resumes from them).  ``devices``: the seeds are split over this many
    devices of every process (:mod:`lktd_ppl.scale`; it changes no result)."""
    config.validate()
    mesh = scale.seed_mesh(devices)
    task = make_task(config)
    params = task.params
    cells, num_actions = task.truth.shape
    m = learner.members
    extra = learner.extra_item(jax.random.key(0)) if learner.extra_item else {}
    replay = Replay(
        config.buffer_size, config.batch_size, example_transition(2, num_actions, extra)
    )
    periods = config.chunk_steps // config.train_every
    num_chunks = config.total_steps // config.chunk_steps
    burn_in = config.burn_in_steps

    def choose_member(u, learner_state):
        """The acting member for a new episode, from one U[0, 1) draw (Thompson sampling)."""
        if learner.acting_member is not None:
            return learner.acting_member(u, learner_state)
        return jnp.minimum(jnp.floor(u * m).astype(jnp.int32), m - 1)

    def init(key: jax.Array) -> RunState:
        key, k_env, k_learn, k_first, k_z = jax.random.split(key, 5)
        obs, env = escape.reset(k_env, params)
        legal = escape.action_mask(env, params)
        learner_state = learner.init(k_learn)
        u = uniform(k_first, (NUM_UNIFORMS + 2,))
        member = choose_member(u[-1], learner_state)
        state = RunState(
            key=key,
            env=env,
            obs=obs,
            legal=legal,
            pend={},
            replay=replay.init(),
            learner=learner_state,
            member=member,
            ring=jnp.zeros((cells * num_actions, config.sample_size * m), jnp.float32),
            valid=jnp.zeros(config.sample_size * m, bool),
            slot=jnp.zeros((), jnp.int32),
            latest=jnp.zeros((m, cells, num_actions), jnp.float32),
            qtab=learner.q_grid(learner_state, task.grid_obs),
            ep_return=jnp.zeros(()),
            ret_sum=jnp.zeros(()),
            ret_count=jnp.zeros(()),
            health=divergence.healthy(),
        )
        z = standard_normal(k_z, (1,))[0]
        return env_step(state, jnp.int32(0), (u[:NUM_UNIFORMS], z, k_first), first=True)

    def env_step(s: RunState, t: jax.Array, rand: tuple, first: bool = False) -> RunState:
        """One environment step; ``rand`` = (uniforms (NUM_UNIFORMS,), reward noise z, key)."""
        u, z, key = rand
        eps = epsilon_at(config, t)
        # the parameters change only at training stages, and every observation is a cell centre:
        # acting reads the Q-table of the grid (computed once per stage) instead of running the
        # network at every step
        qtab = s.qtab[s.member]
        a = epsilon_greedy(u[0], u[1], qtab[s.env.x * config.size + s.env.y], s.legal, eps)
        if first:
            replay_state = s.replay
        else:
            pend = dict(s.pend)
            done = pend.pop("done")
            next_cell = pend.pop("next_cell")
            a_end = epsilon_greedy(u[2], u[3], qtab[next_cell], pend["next_mask"], eps)
            item = {**pend, "next_action": jnp.where(done, a_end, a)}
            if learner.extra_item is not None:
                item.update(learner.extra_item(key))
            replay_state = replay.add(s.replay, item)
        obs2, env2, r, term, trunc, info = escape.step_with_noise(s.env, a, z, params)
        obs_r, env_r = escape.reset(None, params)  # the start is deterministic
        done = term | trunc
        pend = {
            "obs": s.obs,
            "action": a,
            "reward": r,
            "next_obs": obs2,
            "terminated": term.astype(jnp.float32),
            "next_mask": info["action_mask"],
            "done": done,
            "next_cell": env2.x * config.size + env2.y,
        }
        ep_return = s.ep_return + r
        new_member = choose_member(u[4], s.learner)
        return s._replace(
            env=jax.tree.map(lambda a_, b_: jnp.where(done, a_, b_), env_r, env2),
            obs=jnp.where(done, obs_r, obs2),
            legal=jnp.where(done, escape.action_mask(env_r, params), info["action_mask"]),
            pend=pend,
            replay=replay_state,
            member=jnp.where(done, new_member, s.member),
            ep_return=jnp.where(done, 0.0, ep_return),
            ret_sum=s.ret_sum + jnp.where(done, ep_return, 0.0),
            ret_count=s.ret_count + done,
        )

    def store_samples(s: RunState, grids: jax.Array, store: jax.Array) -> RunState:
        """Write every member's Q-grid ``grids`` (m, cells, A) into the ring where ``store``: a
        masked in-place update (a ``cond`` around the multi-MB ring would copy it at every
        stage)."""
        cols = grids.reshape(m, cells * num_actions).T
        start = (0, s.slot * m)
        old = jax.lax.dynamic_slice(s.ring, start, cols.shape)
        ring = jax.lax.dynamic_update_slice(s.ring, jnp.where(store, cols, old), start)
        old_valid = jax.lax.dynamic_slice(s.valid, (s.slot * m,), (m,))
        valid = jax.lax.dynamic_update_slice(s.valid, old_valid | store, (s.slot * m,))
        return s._replace(
            ring=ring,
            valid=valid,
            slot=jnp.where(store, (s.slot + 1) % config.sample_size, s.slot),
            latest=jnp.where(store, grids, s.latest),
            qtab=grids,
        )

    def period(s: RunState, g: jax.Array) -> tuple[RunState, None]:
        """train_every env steps, then (once allowed) one training stage and the sample store."""
        key, k_u, k_z, k_extra, k_train = jax.random.split(s.key, 5)
        s = s._replace(key=key)
        ts = g * config.train_every + jnp.arange(config.train_every)
        n = config.train_every
        extra_keys = jax.random.split(k_extra, n) if learner.extra_item else jnp.zeros(n)
        rand = (uniform(k_u, (n, NUM_UNIFORMS)), standard_normal(k_z, (n,)), extra_keys)

        def one(s, xs):
            t, r = xs
            s = env_step(s, t, r)
            return s, s.pend["reward"]

        s, rewards = jax.lax.scan(one, s, (ts, rand), unroll=UNROLL)
        t_end = (g + 1) * config.train_every
        stage = (t_end - config.train_start) // config.train_every  # 0 at the first stage
        do_train = t_end >= config.train_start
        # the minibatch is drawn outside the cond: with the replay buffer as an operand, the cond
        # would copy it at every stage
        k_batch, k_update = jax.random.split(k_train)
        if learner.minibatches == 1:
            batch = replay.sample(s.replay, k_batch)
        else:
            keys = jax.random.split(k_batch, learner.minibatches)
            batch = jax.vmap(lambda k: replay.sample(s.replay, k))(keys)
        batch = {**batch, "stage": stage}
        learner_state = jax.lax.cond(
            do_train,
            lambda l, b: learner.update(k_update, l, b),
            lambda l, b: l,
            s.learner,
            batch,
        )
        # a stage that blows up is undone and freezes the seed (lktd_ppl.divergence); a frozen
        # seed's update still runs and is dropped there: a predicate that depends on the seed
        # would turn the cond into a select under vmap, running the update before train_start
        health = divergence.see_rewards(s.health, rewards)
        limit = divergence.q_limit(health, config.gamma, config.q_bound_reward, config.q_bound)
        grids = learner.q_grid(learner_state, task.grid_obs)  # (m, cells, A)
        learner_state, health = divergence.guard(
            health, s.learner, learner_state, grids, limit, do_train, stage, t_end, task.mask
        )
        grids = jnp.where(health.diverged, s.qtab, grids)
        s = s._replace(learner=learner_state, health=health)
        if learner.acting_member is not None:  # e.g. BootDQN: the acting head changes with updates
            s = s._replace(member=learner.acting_member(rand[0][-1, -1], s.learner))
        store = do_train & (t_end > burn_in) & ~health.diverged
        return store_samples(s, grids, store), None

    def chunk(s: RunState, c: jax.Array) -> tuple[RunState, dict]:
        gs = c * periods + jnp.arange(periods)
        s, _ = jax.lax.scan(period, s, gs)
        t_end = (c + 1) * config.chunk_steps

        truths = jnp.stack([task.truth, task.truth_star])

        def evaluate(s):
            return interval_metrics(s.ring, s.valid, s.latest, truths, task.mask)

        def skip(s):
            nan = jnp.full((2, num_actions), jnp.nan)
            return Metrics(
                nan, nan, nan, nan, jnp.full((2, 4, num_actions), jnp.nan), nan, nan, nan
            )

        both = jax.lax.cond(t_end > burn_in, evaluate, skip, s)
        out = {
            "metrics": jax.tree.map(lambda x: x[0], both),
            "metrics_qstar": jax.tree.map(lambda x: x[1], both),
            "mean_return": s.ret_sum / jnp.maximum(s.ret_count, 1),
            "episodes": s.ret_count,
        }
        return s._replace(ret_sum=jnp.zeros(()), ret_count=jnp.zeros(())), out

    # one call runs a whole window of chunks where the run is made of whole windows: each call
    # moves the multi-MB carry (sample ring, replay buffer) in and out of the loop
    per_call = config.evals_per_window if num_chunks % config.evals_per_window == 0 else 1
    if chunks_per_call is not None:
        if chunks_per_call <= 0 or num_chunks % chunks_per_call:
            raise ValueError(
                f"chunks_per_call must divide the run's {num_chunks} chunks, got {chunks_per_call}"
            )
        per_call = chunks_per_call

    def chunks(s: RunState, c0: jax.Array) -> tuple[RunState, dict]:
        return jax.lax.scan(chunk, s, c0 + jnp.arange(per_call))

    init_v = scale.seed_map(init, mesh)
    chunks_v = scale.seed_map(chunks, mesh, (0, None), donate_argnums=(0,))

    def final_summary(s: RunState) -> dict:
        return {
            "policy_frequency": greedy_policy_frequency(s.ring, s.valid, task.mask),
            "samples": s.ring,
            "valid": s.valid,
            "slot": s.slot,
            "latest": s.latest,
        }

    final_v = scale.seed_map(final_summary, mesh)
    several = jax.process_count() > 1  # every process gathers whatever one of them reads

    def stack(outs: list) -> dict:
        return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *scale.to_host(outs))

    def snapshot(state: RunState, outs: list) -> dict:
        return {"state": state, "outs": stack(outs)}

    def collect(outs: list) -> dict:
        """The outputs of the calls so far as results arrays (seeds, evaluations, ...)."""
        stacked = stack(outs)
        return {
            "config": asdict(config),
            "eval_steps": np.arange(1, stacked["episodes"].shape[1] + 1) * config.chunk_steps,
            "metrics": stacked["metrics"]._asdict(),
            "metrics_qstar": stacked["metrics_qstar"]._asdict(),
            "mean_return": stacked["mean_return"],
            "episodes": stacked["episodes"],
        }

    def resume(state: RunState, checkpoint: Any) -> tuple[RunState, list, int, float]:
        """The carry, the per-call outputs, the chunks done and the seconds spent, from the
        checkpoint if it resumes one (else the fresh state)."""
        if checkpoint is None or not checkpoint.resume:
            return state, [], 0, 0.0
        like = {"state": state, "outs": jax.eval_shape(chunks_v, state, jnp.int32(0))[1]}
        trees, meta = checkpoint.restore(like)
        done = int(meta["chunks"])
        calls = done // per_call
        outs = [
            jax.tree.map(lambda x, i=i: x[:, i * per_call : (i + 1) * per_call], trees["outs"])
            for i in range(calls)
        ]
        return trees["state"], outs, done, float(meta["elapsed"])

    def train(
        keys: jax.Array,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        checkpoint: Any = None,
    ):
        keys = jnp.atleast_1d(keys)
        scale.check_seeds(len(keys), mesh)
        if several and checkpoint is not None:
            raise ValueError("mid-run checkpoints need a single process: pass checkpoint=None")
        t0 = time.perf_counter()
        state, outs, first, spent = resume(init_v(scale.put_seeds(keys, mesh)), checkpoint)
        seen: set[int] = set()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.total_steps, unit="step", unit_scale=True, leave=False)
            bar.update(first * config.chunk_steps)
        m_eval = config.evals_per_window
        for c0 in range(first, num_chunks, per_call):
            state, out = chunks_v(state, jnp.int32(c0))  # leaves (seeds, per_call, ...)
            outs.append(out)
            health = scale.to_host(state.health) if several else state.health
            divergence.log_new(health, seen, log)
            done_chunks = c0 + per_call
            if bar is not None or log is not None or several:
                steps = done_chunks * config.chunk_steps
                if bar is not None:
                    bar.update(per_call * config.chunk_steps)
                if done_chunks % m_eval == 0:
                    recent = scale.to_host(outs[-(m_eval // per_call) :])
                    covs = np.concatenate([o["metrics"].coverage for o in recent], axis=1)
                    cov = np.nanmean(covs) if np.isfinite(covs).any() else np.nan  # burn-in: none
                    ret = np.mean([o["mean_return"] for o in recent])
                    done_here = (done_chunks - first) * config.chunk_steps
                    rate = done_here * len(keys) / (time.perf_counter() - t0)
                    line = (
                        f"step {steps:>8d}  {rate:,.0f} steps/s  return {ret:7.2f}  "
                        f"coverage {cov:.3f}"
                    )
                    if bar is not None:
                        bar.set_postfix_str(line.split("  ", 1)[1])
                    if log is not None:
                        log(line)
            if checkpoint is not None:
                checkpoint.after_call(
                    done_chunks * config.chunk_steps,
                    config.total_steps,
                    partial(snapshot, state, outs),
                    partial=partial(collect, outs),
                    extra={"chunks": done_chunks, "elapsed": spent + time.perf_counter() - t0},
                )
        if bar is not None:
            bar.close()
        final = scale.to_host(final_v(state))
        if several:  # the whole seed axis on every process
            state = scale.to_host(state)
        return {
            **collect(outs),
            "final": final,
            "truth": np.asarray(task.truth),
            "mask": np.asarray(task.mask),
            "wall_time": spent + time.perf_counter() - t0,
            "state": state,
            "divergence": divergence.as_dict(state.health),
        }

    return train


def window_means(results: dict, which: str = "metrics") -> dict:
    """Average the per-evaluation metrics over each window: arrays (seeds, windows, ...).

    ``which``: "metrics" (against Q of the epsilon-greedy policy) or "metrics_qstar" (against Q*).
    """
    cfg = results["config"]
    m = cfg["evals_per_window"]
    out = {}
    for k, v in results[which].items():
        seeds, evals = v.shape[:2]
        with warnings.catch_warnings():  # windows inside the burn-in hold no evaluation: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out[k] = np.nanmean(v.reshape(seeds, evals // m, m, *v.shape[2:]), axis=2)
    return out
