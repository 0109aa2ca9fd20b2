"""The control-task harness: any algorithm's :class:`~lktd_ppl.agents.harness.Learner` on a gymnax
environment (discrete actions, flat observations), the whole run in JAX.

One run: ``total_steps`` environment steps.  Acting: epsilon-greedy (linear schedule ``eps_start``
-> ``eps_end`` over the first ``eps_fraction`` of the steps) on the acting member's Q; the member
(an LKTD chain, a BootDQN head) is drawn uniformly at every episode start, so with several chains
the agent does Thompson sampling over chains with epsilon-greedy on top (one chain: plain
epsilon-greedy on it).  Transitions go into a FIFO replay buffer (:mod:`lktd_ppl.replay`) as SARSA
tuples: a' is the action taken next, or after the episode ended the acting policy's action at the
final observation.  gymnax resets automatically; a stored transition's ``next_obs`` is the step's
``info["final_observation"]``, never the next episode's first observation, and ``terminated`` is
set on true termination only (a truncated step bootstraps).  Once ``train_start`` steps are done,
every ``train_every`` steps one training stage runs ``gradient_steps`` updates, each on its own
minibatch (for the LKTD family one update is one stage of kappa inner steps).

Every ``eval_every`` steps: the greedy return over ``eval_episodes`` episodes (greedy on the mean
of the members' Q, vmapped over episodes; the learner state with the best such return so far is
kept, and re-evaluated at the end on ``best_eval_episodes`` fresh episodes: the best-model
return), the mean return of the training episodes that ended
since the previous evaluation, and every member's Q at ``num_probes`` probe states: observations
taken at evenly spaced steps before ``train_start``, fixed for the run.  Every training episode's
return and length are kept as well.

The first environment step happens when the run state is made (it has no pending transition to
complete); the chunks then take steps 1, 2, ..., so a run takes ``total_steps + 1`` steps.

``make_control_train(config, learner)`` returns ``train(keys, progress, log)``: a Python loop over
jitted chunks (one chunk = the steps between two evaluations), vmapped over seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lktd_ppl import divergence, scale, validation
from lktd_ppl.agents.harness import Learner, epsilon_at, epsilon_greedy
from lktd_ppl.agents.protocol import ReplayProtocol
from lktd_ppl.envs.gymnax_env import ControlEnv, make_env
from lktd_ppl.replay import Replay, example_transition
from lktd_ppl.rng import fast_key, uniform

NUM_UNIFORMS = 5  # per env step: explore?, which action, the same two for a' at s', member


@dataclass(frozen=True)
class ControlConfig(ReplayProtocol):
    """The control protocol.  Defaults follow the RL-Baselines3-Zoo CartPole row (spec section 7)
    where they apply to every algorithm; the environment comes from ``env_id``;
    ``max_episode_steps`` 0 keeps the environment's own time limit."""

    env_id: str = "CartPole-v1"
    eval_every: int = 5000
    eval_episodes: int = 10
    best_eval_episodes: int = 100  # the best evaluated learner, re-evaluated at the end
    num_probes: int = 32
    gradient_steps: int = 1  # updates (minibatches) per training stage
    # the zoo's values where they differ from the shared protocol's defaults
    total_steps: int = 50_000
    max_episode_steps: int = 0
    gamma: float = 0.99
    batch_size: int = 64
    train_every: int = 4
    eps_end: float = 0.04
    eps_fraction: float = 0.16

    @cached_property
    def task(self) -> ControlEnv:
        return make_env(self.env_id, self.max_episode_steps)

    @property
    def obs_dim(self) -> int:
        return self.task.obs_dim

    @property
    def num_actions(self) -> int:
        return self.task.num_actions

    def validate(self) -> None:
        validation.check(self, "control.", ValueError)  # each field's range (the table's)
        problems = self.replay_problems()
        if self.eval_every <= 0:
            problems.append("eval_every must be positive")
        elif self.total_steps % self.eval_every:
            problems.append(
                f"total_steps ({self.total_steps}) must be a multiple of eval_every "
                f"({self.eval_every})"
            )
        elif self.train_every > 0 and self.eval_every % self.train_every:
            problems.append(
                f"eval_every ({self.eval_every}) must be a multiple of train_every "
                f"({self.train_every})"
            )
        if self.total_steps <= self.train_start:
            problems.append("total_steps must exceed train_start")
        for name in ("gradient_steps", "eval_episodes", "best_eval_episodes", "num_probes"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if self.num_probes > self.train_start:
            problems.append("num_probes must be at most train_start")
        if not 0.0 < self.gamma <= 1.0:
            problems.append(f"gamma must be in (0, 1], got {self.gamma}")
        if problems:
            raise ValueError(f"control: {problems[0]}")


class ControlState(NamedTuple):
    key: jax.Array
    env: Any
    obs: jax.Array
    pend: dict  # the last transition, waiting for its next action
    replay: Any
    learner: Any
    member: jax.Array
    probes: jax.Array  # (num_probes, obs_dim)
    updates: jax.Array  # updates done (the LKTD family's stage index)
    ep_return: jax.Array
    ep_length: jax.Array
    ret_sum: jax.Array  # over the training episodes ended since the previous evaluation
    ret_count: jax.Array
    best_learner: Any  # the learner state of the best evaluation so far
    best_return: jax.Array  # its evaluation return (-inf before the first)
    health: divergence.Health


def make_control_train(
    config: ControlConfig, learner: Learner, devices: int | None = None
) -> Callable[..., dict]:
    """``train(keys, progress=True, log=None) -> results``: one run per key, vmapped over keys.
    ``devices``: the seeds are split over this many devices of every process
    (:mod:`lktd_ppl.scale`; it changes no result)."""
    config.validate()
    mesh = scale.seed_mesh(devices)
    several = jax.process_count() > 1  # every process gathers whatever one of them reads
    task = config.task
    env, params = task.env, task.params
    num_actions, m = task.num_actions, learner.members
    legal = jnp.ones(num_actions, jnp.int8)
    extra = learner.extra_item(jax.random.key(0)) if learner.extra_item else {}
    replay = Replay(
        config.buffer_size, config.batch_size, example_transition(task.obs_dim, num_actions, extra)
    )
    n = config.train_every
    periods = config.eval_every // n
    num_chunks = config.total_steps // config.eval_every
    probe_stride = config.train_start // config.num_probes

    def choose_member(u: jax.Array, learner_state: Any) -> jax.Array:
        if learner.acting_member is not None:
            return learner.acting_member(u, learner_state)
        return jnp.minimum(jnp.floor(u * m).astype(jnp.int32), m - 1)

    def env_step(s: ControlState, t: jax.Array, u: jax.Array, k_env, k_extra, first=False):
        """One environment step at step ``t``; returns the state and (ended, return, length)."""
        eps = epsilon_at(config, t)
        # Q at the current observation (the action now) and at the pending transition's final
        # observation (its a' if its episode ended): one forward pass for both
        q = learner.q_values(s.learner, s.member, jnp.stack([s.obs, s.pend["next_obs"]]))
        a = epsilon_greedy(u[0], u[1], q[0], legal, eps)
        replay_state = s.replay
        if not first:
            pend = dict(s.pend)
            done = pend.pop("done")
            a_end = epsilon_greedy(u[2], u[3], q[1], legal, eps)
            item = {**pend, "next_action": jnp.where(done, a_end, a)}
            if learner.extra_item is not None:
                item.update(learner.extra_item(k_extra))
            replay_state = replay.add(s.replay, item)
        obs, env_state, r, term, trunc, info = env.step(k_env, s.env, a, params)
        r = jnp.asarray(r, jnp.float32)
        done = term | trunc
        pend = {
            "obs": s.obs,
            "action": a,
            "reward": r,
            "next_obs": info["final_observation"].astype(jnp.float32).reshape(-1),
            "terminated": term.astype(jnp.float32),
            "next_mask": legal,
            "done": done,
        }
        ep_return, ep_length = s.ep_return + r, s.ep_length + 1
        slot = t // probe_stride
        take = (t % probe_stride == 0) & (slot < config.num_probes)
        probes = s.probes.at[jnp.minimum(slot, config.num_probes - 1)].set(
            jnp.where(take, s.obs, s.probes[jnp.minimum(slot, config.num_probes - 1)])
        )
        new = s._replace(
            env=env_state,
            obs=jnp.asarray(obs, jnp.float32).reshape(-1),
            pend=pend,
            replay=replay_state,
            member=jnp.where(done, choose_member(u[4], s.learner), s.member),
            probes=probes,
            ep_return=jnp.where(done, 0.0, ep_return),
            ep_length=jnp.where(done, 0, ep_length),
            ret_sum=s.ret_sum + jnp.where(done, ep_return, 0.0),
            ret_count=s.ret_count + done,
        )
        return new, (done, ep_return, ep_length)

    def init(key: jax.Array) -> ControlState:
        key = fast_key(key)
        key, k_env, k_learn, k_u, k_step, k_extra = jax.random.split(key, 6)
        obs, env_state = env.reset(k_env, params)
        obs = jnp.asarray(obs, jnp.float32).reshape(-1)
        learner_state = learner.init(k_learn)
        u = uniform(k_u, (NUM_UNIFORMS + 1,))
        pend = {**example_transition(task.obs_dim, num_actions), "done": jnp.zeros((), bool)}
        pend.pop("next_action")
        state = ControlState(
            key=key,
            env=env_state,
            obs=obs,
            pend=pend,
            replay=replay.init(),
            learner=learner_state,
            member=choose_member(u[-1], learner_state),
            probes=jnp.zeros((config.num_probes, task.obs_dim), jnp.float32),
            updates=jnp.zeros((), jnp.int32),
            ep_return=jnp.zeros(()),
            ep_length=jnp.zeros((), jnp.int32),
            ret_sum=jnp.zeros(()),
            ret_count=jnp.zeros((), jnp.int32),
            best_learner=learner_state,
            best_return=jnp.full((), -jnp.inf, jnp.float32),
            health=divergence.healthy(),
        )
        return env_step(state, jnp.int32(0), u[:NUM_UNIFORMS], k_step, k_extra, first=True)[0]

    def sample(replay_state: Any, key: jax.Array) -> dict:
        if learner.minibatches == 1:
            return replay.sample(replay_state, key)
        keys = jax.random.split(key, learner.minibatches)
        return jax.vmap(lambda k: replay.sample(replay_state, k))(keys)

    def train_stage(
        s: ControlState, key: jax.Array, do_train: jax.Array, step: jax.Array
    ) -> ControlState:
        """``gradient_steps`` updates, each on its own minibatch, where ``do_train``; ``step``:
        the environment steps done."""
        k_batch, k_update = jax.random.split(key)
        # the minibatches are drawn outside the cond: with the replay buffer as an operand, the
        # cond would copy it at every stage
        batches = jax.vmap(lambda k: sample(s.replay, k))(
            jax.random.split(k_batch, config.gradient_steps)
        )

        def one(carry, xs):
            learner_state, stage = carry
            k, batch = xs
            return (learner.update(k, learner_state, {**batch, "stage": stage}), stage + 1), None

        def run(learner_state, updates):
            keys = jax.random.split(k_update, config.gradient_steps)
            return jax.lax.scan(one, (learner_state, updates), (keys, batches))[0]

        learner_state, updates = jax.lax.cond(
            do_train, run, lambda ls, up: (ls, up), s.learner, s.updates
        )
        # a stage that blows up is undone and freezes the seed (lktd_ppl.divergence; a frozen
        # seed's updates run and are dropped there, so the cond's predicate stays unbatched);
        # Q is checked at the probe states (observations from before train_start)
        h = s.health
        limit = divergence.q_limit(h, config.gamma, config.q_bound_reward, config.q_bound)
        q = learner.q_grid(learner_state, s.probes)
        learner_state, health = divergence.guard(
            h, s.learner, learner_state, q, limit, do_train, s.updates, step
        )
        updates = jnp.where(health.diverged, s.updates, updates)
        return s._replace(learner=learner_state, updates=updates, health=health)

    def period(s: ControlState, g: jax.Array) -> tuple[ControlState, tuple]:
        """``train_every`` env steps, then (from ``train_start`` on) one training stage."""
        key, k_u, k_env, k_extra, k_train = jax.random.split(s.key, 5)
        s = s._replace(key=key)
        ts = g * n + 1 + jnp.arange(n)  # step 0 is init's
        xs = (ts, uniform(k_u, (n, NUM_UNIFORMS)), jax.random.split(k_env, n))
        xs += (jax.random.split(k_extra, n),)

        def one(s, x):
            s, ended = env_step(s, *x)
            return s, (ended, s.pend["reward"])

        s, (ended, rewards) = jax.lax.scan(one, s, xs)
        s = s._replace(health=divergence.see_rewards(s.health, rewards))
        s = train_stage(s, k_train, (g + 1) * n >= config.train_start, (g + 1) * n)
        if learner.acting_member is not None:  # e.g. BootDQN: the acting head changes with updates
            s = s._replace(member=learner.acting_member(xs[1][-1, -1], s.learner))
        return s, ended

    def greedy_q(learner_state: Any, obs: jax.Array) -> jax.Array:
        return jnp.mean(learner.q_grid(learner_state, obs[None]), axis=0)[0]

    def eval_episode(learner_state: Any, key: jax.Array) -> jax.Array:
        """The undiscounted return of one greedy episode."""
        k_reset, k_run = jax.random.split(key)
        obs, env_state = env.reset(k_reset, params)

        def cond(c):
            return ~c[3]

        def body(c):
            env_state, obs, ret, _, k = c
            k, k_step = jax.random.split(k)
            a = jnp.argmax(greedy_q(learner_state, jnp.asarray(obs, jnp.float32).reshape(-1)))
            obs, env_state, r, term, trunc, _ = env.step(k_step, env_state, a, params)
            return env_state, obs, ret + r, term | trunc, k

        init = (env_state, obs, jnp.zeros(()), jnp.zeros((), bool), k_run)
        return jax.lax.while_loop(cond, body, init)[2]

    def greedy_returns(learner_state: Any, key: jax.Array, episodes: int) -> jax.Array:
        keys = jax.random.split(key, episodes)
        return jax.vmap(eval_episode, in_axes=(None, 0))(learner_state, keys)

    def keep_best(s: ControlState, eval_return: jax.Array) -> ControlState:
        better = eval_return > s.best_return  # ties keep the earlier one
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), s.learner, s.best_learner)
        return s._replace(
            best_learner=best, best_return=jnp.where(better, eval_return, s.best_return)
        )

    def chunk(s: ControlState, c: jax.Array) -> tuple[ControlState, dict]:
        s, (ended, ret, length) = jax.lax.scan(period, s, c * periods + jnp.arange(periods))
        key, k_eval = jax.random.split(s.key)
        eval_return = jnp.mean(greedy_returns(s.learner, k_eval, config.eval_episodes))
        s = keep_best(s, eval_return)
        out = {
            "eval_return": eval_return,
            "train_return": s.ret_sum / jnp.maximum(s.ret_count, 1),
            "train_episodes": s.ret_count,
            "probe_q": learner.q_grid(s.learner, s.probes),  # (members, probes, A)
            "ended": ended.reshape(-1),
            "episode_return": ret.reshape(-1),
            "episode_length": length.reshape(-1),
        }
        reset = s._replace(key=key, ret_sum=jnp.zeros(()), ret_count=jnp.zeros((), jnp.int32))
        return reset, out

    def best_model(s: ControlState) -> jax.Array:
        """The best evaluated learner's mean greedy return over ``best_eval_episodes`` episodes
        on keys that no evaluation used."""
        k_best = jax.random.split(s.key)[1]
        return jnp.mean(greedy_returns(s.best_learner, k_best, config.best_eval_episodes))

    init_v = scale.seed_map(init, mesh)
    chunk_v = scale.seed_map(chunk, mesh, (0, None), donate_argnums=(0,))
    best_v = scale.seed_map(best_model, mesh)

    def report(c: int, out: dict, t0: float, seeds: int, bar: Any, log: Any) -> None:
        got = scale.to_host(out)
        train_ret = np.where(got["train_episodes"] > 0, got["train_return"], np.nan)
        report_progress(c, config.eval_every, got["eval_return"], train_ret, t0, seeds, bar, log)

    def collect(outs: list) -> dict:
        """The evaluations so far as results arrays (seeds, evaluations, ...)."""
        stacked = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *scale.to_host(outs))
        return {
            "config": asdict(config),
            "eval_steps": np.arange(1, len(outs) + 1) * config.eval_every,
            "eval_return": stacked["eval_return"],  # (seeds, evals)
            "train_return": np.where(
                stacked["train_episodes"] > 0, stacked["train_return"], np.nan
            ),
            "train_episodes": stacked["train_episodes"],
            "probe_q": stacked["probe_q"],  # (seeds, evals, members, probes, A)
            "episodes": episode_table(stacked),
        }

    def resume(state: ControlState, checkpoint: Any) -> tuple[ControlState, list, float]:
        """The carry, the per-chunk outputs and the seconds spent, from the checkpoint if it
        resumes one (else the fresh state)."""
        if checkpoint is None or not checkpoint.resume:
            return state, [], 0.0
        like = {"state": state, "outs": jax.eval_shape(chunk_v, state, jnp.int32(0))[1]}
        trees, meta = checkpoint.restore(like)
        outs = [jax.tree.map(lambda x, i=i: x[:, i], trees["outs"]) for i in range(meta["chunks"])]
        return trees["state"], outs, float(meta["elapsed"])

    def snapshot(state: ControlState, outs: list) -> dict:
        stacked = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *scale.to_host(outs))
        return {"state": state, "outs": stacked}

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
        state, outs, spent = resume(init_v(scale.put_seeds(keys, mesh)), checkpoint)
        bar = progress_bar(config.total_steps) if progress else None
        if bar is not None:
            bar.update(len(outs) * config.eval_every)
        seen: set[int] = set()
        for c in range(len(outs), num_chunks):
            state, out = chunk_v(state, jnp.int32(c))
            outs.append(out)
            divergence.log_new(scale.to_host(state.health) if several else state.health, seen, log)
            if bar is not None or log is not None or several:
                report(c, out, t0 - spent, len(keys), bar, log)  # rate over both sessions
            if checkpoint is not None:
                checkpoint.after_call(
                    (c + 1) * config.eval_every,
                    config.total_steps,
                    partial(snapshot, state, outs),
                    partial=partial(collect, outs),
                    extra={"chunks": c + 1, "elapsed": spent + time.perf_counter() - t0},
                )
        best_return = np.asarray(scale.to_host(best_v(state)))
        if several:  # the whole seed axis on every process
            state = scale.to_host(state)
        if bar is not None:
            bar.close()
        return {
            **collect(outs),
            "best_return": best_return,  # (seeds,): the best evaluated learner, re-evaluated
            "best_eval_return": np.asarray(state.best_return),  # (seeds,): its evaluation
            "probes": np.asarray(state.probes),  # (seeds, probes, obs_dim)
            "wall_time": spent + time.perf_counter() - t0,
            "state": state,
            "divergence": divergence.as_dict(state.health),
        }

    return train


def report_progress(
    c: int,
    every: int,
    eval_return: np.ndarray,
    train_return: np.ndarray,
    t0: float,
    seeds: int,
    bar: Any,
    log: Callable[[str], None] | None,
) -> None:
    """Advance the progress bar and write a log line after evaluation ``c`` (every ``every``
    steps): steps/s over all seeds, the mean evaluation and training returns (NaN: none ended)."""
    steps = (c + 1) * every
    train = np.nanmean(train_return) if np.isfinite(train_return).any() else np.nan
    line = (
        f"step {steps:>8d}  {steps * seeds / (time.perf_counter() - t0):,.0f} steps/s  "
        f"eval return {np.mean(eval_return):8.2f}  train return {train:8.2f}"
    )
    if bar is not None:
        bar.update(every)
        bar.set_postfix_str(line.split("  ", 1)[1])
    if log is not None:
        log(line)


def progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, leave=False)


def episode_table(stacked: dict) -> dict[str, np.ndarray]:
    """Every training episode: ``seed_index``, ``step`` (the env steps done when it ended, init's
    first step included), ``return``, ``length``, from the chunks' per-step outputs (seeds, chunks,
    steps)."""
    ended = np.asarray(stacked["ended"])
    seeds, chunks, per = ended.shape
    seed_index, flat_step = np.nonzero(ended.reshape(seeds, chunks * per))
    return {
        "seed_index": seed_index,
        "step": flat_step + 2,
        "return": np.asarray(stacked["episode_return"]).reshape(seeds, -1)[
            ended.reshape(seeds, -1)
        ],
        "length": np.asarray(stacked["episode_length"]).reshape(seeds, -1)[
            ended.reshape(seeds, -1)
        ],
    }
