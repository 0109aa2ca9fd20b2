"""The host-loop harness: any algorithm's :class:`~lktd_ppl.agents.harness.Learner` on a Gymnasium
environment (:mod:`lktd_ppl.envs.gymnasium_env`), stepped in Python, the learner in JAX.

The protocol is the control harness's (:mod:`lktd_ppl.agents.control`, the same
:class:`GymnasiumConfig` fields and the same results): ``total_steps + 1`` environment steps per
seed, epsilon-greedy acting on the acting member's Q (the member drawn at every episode start),
SARSA tuples into a FIFO replay buffer (a' is the action taken next, or after an episode ended the
acting policy's action at its final observation), a training stage of ``gradient_steps`` updates
every ``train_every`` steps from ``train_start`` on, and every ``eval_every`` steps the greedy return
over ``eval_episodes`` episodes, the training return and every member's Q at the probe states; the
learner state with the best greedy return so far is kept and re-evaluated at the end on
``best_eval_episodes`` episodes of seeds no evaluation used (the best-model return).

What runs where:

- every seed has its own environment, reset with a seed drawn from the run's key
  (``env.reset(seed=...)`` once, then without a seed: the environment's own generator goes on);
  evaluation episodes run on separate environments, each episode reset with its own seed (from
  the run's key, the evaluation's index and the episode's);
- one jitted call per step, vmapped over seeds, stores the pending transitions (in place: the
  seeds write at a shared index, :func:`~lktd_ppl.replay.add_lockstep`) and picks the actions;
  the environments step on the host, one after the other (a Gymnasium vector environment would
  run the same loop for the few seeds of a run); a training stage and the greedy evaluation are
  jitted calls of their own.  Each jitted function is traced once per run (``train.traces``
  counts the traces);
- autoreset is done here, in the same step: when an episode ends, the transition's ``next_obs``
  is the step's own observation (the episode's last), the environment is reset and the next
  action is taken at the new episode's first observation, so no stored transition spans an
  episode boundary.  ``terminated`` is set on termination only; a truncated step (the time limit)
  bootstraps.

``make_host_train(config, learner)`` returns ``train(keys, progress, log)`` with the control
harness's contract; :mod:`lktd_ppl.control_run` writes the same run folder from its results.
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

from lktd_ppl import divergence
from lktd_ppl.agents.control import ControlConfig, progress_bar, report_progress
from lktd_ppl.agents.harness import Learner, epsilon_at, epsilon_greedy
from lktd_ppl.envs.gymnasium_env import GymnasiumTask, describe, make_env
from lktd_ppl.replay import Replay, add_lockstep, example_transition
from lktd_ppl.rng import fast_key, uniform

NUM_UNIFORMS = 5  # per env step: explore?, which action, the same two for a' at s', member
SEED_TAG = 0x5EED  # folded into a run's key to draw its environment seeds
RESUME_TAG = 0x2E5  # the reset seeds of the training environments after a resume
OUTPUTS = ("eval_return", "train_return", "train_episodes", "probe_q")  # per evaluation


@dataclass(frozen=True)
class GymnasiumConfig(ControlConfig):
    """The control protocol (:class:`~lktd_ppl.agents.control.ControlConfig`'s fields) on a
    Gymnasium environment: ``task`` describes it from Gymnasium instead of gymnax."""

    @cached_property
    def task(self) -> GymnasiumTask:  # type: ignore[override]
        return describe(self.env_id, self.max_episode_steps)


class HostState(NamedTuple):
    """The device side of a run (one per seed, vmapped); the environments live on the host."""

    key: jax.Array
    replay: Any
    learner: Any
    member: jax.Array
    updates: jax.Array  # updates done (the LKTD family's stage index)
    best_learner: Any  # the learner state of the best evaluation so far
    best_return: jax.Array  # its evaluation return (-inf before the first)
    health: divergence.Health


def env_seeds(key: jax.Array) -> jax.Array:
    """Two uint32 seeds from a run's key: the training environment's and the evaluations' base."""
    return jax.random.bits(jax.random.fold_in(key, SEED_TAG), (2,), jnp.uint32)


def eval_seed(base: int, evaluation: int, episode: int) -> int:
    """The reset seed of one evaluation episode."""
    return int(np.random.SeedSequence([base, evaluation, episode]).generate_state(1)[0])


def float_obs(obs: Any) -> np.ndarray:
    return np.asarray(obs, np.float32).reshape(-1)


class Pending(NamedTuple):
    """The transition of every seed's last step (host arrays, leading axis seeds); it waits for
    its next action."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray  # the step's own observation: the episode's last if it ended
    terminated: np.ndarray
    done: np.ndarray


def blank_pending(obs: np.ndarray) -> Pending:
    """A placeholder for the first step, which has no pending transition."""
    n = len(obs)
    zeros = np.zeros(n, np.float32)
    return Pending(obs, np.zeros(n, np.int32), zeros, obs, zeros, np.zeros(n, bool))


def make_host_train(config: GymnasiumConfig, learner: Learner) -> Callable[..., dict]:
    """``train(keys, progress=True, log=None) -> results``: one run per key, the learner vmapped
    over keys, one Gymnasium environment per key."""
    config.validate()
    task = config.task
    num_actions, m, d = task.num_actions, learner.members, task.obs_dim
    legal = jnp.ones(num_actions, jnp.int8)
    extra = learner.extra_item(jax.random.key(0)) if learner.extra_item else {}
    replay = Replay(
        config.buffer_size, config.batch_size, example_transition(d, num_actions, extra)
    )
    probe_stride = config.train_start // config.num_probes
    traces = {"init": 0, "first": 0, "act": 0, "train": 0, "greedy": 0, "probe_q": 0, "best": 0}

    def choose_member(u: jax.Array, learner_state: Any) -> jax.Array:
        if learner.acting_member is not None:
            return learner.acting_member(u, learner_state)
        return jnp.minimum(jnp.floor(u * m).astype(jnp.int32), m - 1)

    def init(key: jax.Array) -> tuple[HostState, jax.Array]:
        traces["init"] += 1
        seeds = env_seeds(key)
        key, k_learn, k_u = jax.random.split(fast_key(key), 3)
        learner_state = learner.init(k_learn)
        state = HostState(
            key=key,
            replay=replay.init(),
            learner=learner_state,
            member=choose_member(uniform(k_u, (1,))[0], learner_state),
            updates=jnp.zeros((), jnp.int32),
            best_learner=learner_state,
            best_return=jnp.full((), -jnp.inf, jnp.float32),  # strong: keep_best keeps its type
            health=divergence.healthy(),
        )
        return state, seeds

    def act(s: HostState, t: jax.Array, obs: jax.Array, pend: Pending):
        """One seed: the action at ``obs``, and the pending transition completed with its a'
        (the action now, or where its episode ended the acting policy's at its next_obs); a new
        acting member where the pending transition ended an episode."""
        key, k_u, k_extra = jax.random.split(s.key, 3)
        u = uniform(k_u, (NUM_UNIFORMS,))
        eps = epsilon_at(config, t)
        member = jnp.where(pend.done, choose_member(u[4], s.learner), s.member)
        # Q at the current observation (the action now) and at the pending transition's
        # next_obs (its a' where its episode ended): one forward pass for both
        q = learner.q_values(s.learner, member, jnp.stack([obs, pend.next_obs]))
        a = epsilon_greedy(u[0], u[1], q[0], legal, eps)
        a_end = epsilon_greedy(u[2], u[3], q[1], legal, eps)
        item = {
            "obs": pend.obs,
            "action": pend.action,
            "reward": pend.reward,
            "next_obs": pend.next_obs,
            "next_action": jnp.where(pend.done, a_end, a),
            "terminated": pend.terminated,
            "next_mask": legal,
        }
        if learner.extra_item is not None:
            item.update(learner.extra_item(k_extra))
        health = divergence.see_rewards(s.health, pend.reward)
        return s._replace(key=key, member=member, health=health), a, item

    def act_all(s: HostState, t: jax.Array, obs: jax.Array, pend: Pending, store: bool):
        """Every seed's action; the pending transitions go into the buffers where ``store`` (not
        at the first step, which has none)."""
        traces["act" if store else "first"] += 1
        s, a, item = jax.vmap(act)(s, t, obs, pend)
        if store:
            s = s._replace(replay=add_lockstep(s.replay, item))
        return s, a

    def sample(replay_state: Any, key: jax.Array) -> dict:
        if learner.minibatches == 1:
            return replay.sample(replay_state, key)
        keys = jax.random.split(key, learner.minibatches)
        return jax.vmap(lambda k: replay.sample(replay_state, k))(keys)

    def train_stage(s: HostState) -> HostState:
        """``gradient_steps`` updates, each on its own minibatch."""
        traces["train"] += 1
        key, k_batch, k_update, k_u = jax.random.split(s.key, 4)
        batches = jax.vmap(lambda k: sample(s.replay, k))(
            jax.random.split(k_batch, config.gradient_steps)
        )

        def one(carry, xs):
            learner_state, stage = carry
            k, batch = xs
            return (learner.update(k, learner_state, {**batch, "stage": stage}), stage + 1), None

        keys = jax.random.split(k_update, config.gradient_steps)
        learner_state, updates = jax.lax.scan(one, (s.learner, s.updates), (keys, batches))[0]
        # a stage that blows up is undone and freezes the seed (lktd_ppl.divergence); Q is
        # checked at the last minibatch's states
        h = s.health
        limit = divergence.q_limit(h, config.gamma, config.q_bound_reward, config.q_bound)
        q = learner.q_grid(learner_state, batches["obs"][-1].reshape(-1, d)[: config.batch_size])
        step = config.train_start + (s.updates // config.gradient_steps) * config.train_every
        learner_state, health = divergence.guard(
            h, s.learner, learner_state, q, limit, jnp.ones((), bool), s.updates, step
        )
        updates = jnp.where(health.diverged, s.updates, updates)
        member = s.member
        if learner.acting_member is not None:  # e.g. BootDQN: the acting head changes with updates
            member = learner.acting_member(uniform(k_u, (1,))[0], learner_state)
        return s._replace(
            key=key, learner=learner_state, member=member, updates=updates, health=health
        )

    def greedy(learner_state: Any, obs: jax.Array) -> jax.Array:
        """Greedy actions on the members' mean Q at ``obs`` (k, d)."""
        traces["greedy"] += 1
        return jnp.argmax(jnp.mean(learner.q_grid(learner_state, obs), axis=0), axis=-1)

    def probe_q(learner_state: Any, probes: jax.Array) -> jax.Array:
        traces["probe_q"] += 1
        return learner.q_grid(learner_state, probes)  # (members, probes, A)

    def keep_best(s: HostState, eval_return: jax.Array) -> HostState:
        """The learner state as the best one where ``eval_return`` beats the best so far (ties
        keep the earlier one)."""
        traces["best"] += 1
        better = eval_return > s.best_return
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), s.learner, s.best_learner)
        return s._replace(
            best_learner=best, best_return=jnp.where(better, eval_return, s.best_return)
        )

    init_v = jax.jit(jax.vmap(init))
    first_v = jax.jit(partial(act_all, store=False), donate_argnums=0)
    act_v = jax.jit(partial(act_all, store=True), donate_argnums=0)
    train_v = jax.jit(jax.vmap(train_stage), donate_argnums=0)
    greedy_v = jax.jit(jax.vmap(greedy))
    probe_v = jax.jit(jax.vmap(probe_q))
    best_v = jax.jit(jax.vmap(keep_best), donate_argnums=0)

    def step_envs(envs: list, obs: np.ndarray, actions: np.ndarray, stats: dict):
        """Step every seed's environment once, resetting those whose episode ended: the step's
        transitions, and the observations the next actions are taken at."""
        n = len(envs)
        pend = Pending(
            obs=obs,
            action=actions.astype(np.int32),
            reward=np.zeros(n, np.float32),
            next_obs=np.zeros_like(obs),
            terminated=np.zeros(n, np.float32),
            done=np.zeros(n, bool),
        )
        new_obs = np.zeros_like(obs)
        for i, env in enumerate(envs):
            o, r, term, trunc, _ = env.step(int(actions[i]) + task.action_start)
            pend.reward[i], pend.next_obs[i] = r, float_obs(o)
            pend.terminated[i], pend.done[i] = float(term), bool(term or trunc)
            stats["ep_return"][i] += float(r)
            stats["ep_length"][i] += 1
            if pend.done[i]:
                o, _ = env.reset()
            new_obs[i] = float_obs(o)
        return pend, new_obs

    def record_episodes(stats: dict, done: np.ndarray, t: int) -> None:
        """Book the training episodes that ended at step ``t``."""
        for i in np.flatnonzero(done):
            ret, length = stats["ep_return"][i], stats["ep_length"][i]
            stats["table"].append((i, t + 1, ret, length))
            stats["ret_sum"][i] += ret
            stats["ret_count"][i] += 1
            stats["ep_return"][i], stats["ep_length"][i] = 0.0, 0

    def evaluate(learner_state: Any, eval_envs: list, bases: np.ndarray, c: int) -> np.ndarray:
        """Undiscounted greedy returns (seeds, eval_episodes) of evaluation ``c``: every seed's
        episodes in lockstep, each reset with its own seed."""
        s, e = len(eval_envs), config.eval_episodes
        obs = np.zeros((s, e, d), np.float32)
        for i in range(s):
            for j in range(e):
                o, _ = eval_envs[i][j].reset(seed=eval_seed(int(bases[i]), c, j))
                obs[i, j] = float_obs(o)
        done = np.zeros((s, e), bool)
        returns = np.zeros((s, e))
        while not done.all():
            actions = np.asarray(greedy_v(learner_state, obs))
            obs = obs.copy()
            for i, j in zip(*np.nonzero(~done), strict=True):
                o, r, term, trunc, _ = eval_envs[i][j].step(int(actions[i, j]) + task.action_start)
                returns[i, j] += float(r)
                obs[i, j] = float_obs(o)
                done[i, j] = term or trunc
        return returns

    def best_model(state: HostState, eval_envs: list, bases: np.ndarray, first: int) -> np.ndarray:
        """The best learner's mean greedy return per seed over ``best_eval_episodes`` episodes, in
        rounds of ``eval_episodes`` numbered from ``first`` (after the run's evaluations)."""
        rounds = -(-config.best_eval_episodes // config.eval_episodes)
        returns = [evaluate(state.best_learner, eval_envs, bases, first + r) for r in range(rounds)]
        return np.concatenate(returns, axis=1)[:, : config.best_eval_episodes].mean(axis=1)

    def report(c: int, out: dict, t0: float, seeds: int, bar: Any, log: Any) -> None:
        report_progress(
            c, config.eval_every, out["eval_return"], out["train_return"], t0, seeds, bar, log
        )

    def open_envs(seeds: np.ndarray) -> tuple[list, list, np.ndarray]:
        """Every seed's training environment, reset with its seed, and its evaluation ones."""
        n = len(seeds)
        envs = [make_env(config.env_id, config.max_episode_steps) for _ in range(n)]
        eval_envs = [
            [make_env(config.env_id, config.max_episode_steps) for _ in range(config.eval_episodes)]
            for _ in range(n)
        ]
        obs = np.stack(
            [float_obs(env.reset(seed=int(seeds[i, 0]))[0]) for i, env in enumerate(envs)]
        )
        return envs, eval_envs, obs

    def interval(
        state: HostState,
        eval_envs: list,
        seeds: np.ndarray,
        probes: np.ndarray,
        stats: dict,
        c: int,
    ) -> tuple[HostState, dict]:
        """Evaluation ``c``: its outputs, and the state with the best learner updated; the
        training-return sums start again."""
        count = stats["ret_count"].copy()
        eval_return = evaluate(state.learner, eval_envs, seeds[:, 1], c).mean(axis=1)
        out = {
            "eval_return": eval_return,
            "train_return": np.where(count > 0, stats["ret_sum"] / np.maximum(count, 1), np.nan),
            "train_episodes": count,
            "probe_q": np.asarray(probe_v(state.learner, probes)),  # (seeds, members, probes, A)
        }
        stats["ret_sum"][:], stats["ret_count"][:] = 0.0, 0
        return best_v(state, eval_return.astype(np.float32)), out

    def collect(outs: list, stats: dict) -> dict:
        """The evaluations so far as results arrays (seeds, evaluations, ...)."""
        stacked = {k: np.stack([o[k] for o in outs], axis=1) for k in outs[0]}
        return {
            "config": asdict(config),
            "eval_steps": np.arange(1, len(outs) + 1) * config.eval_every,
            "eval_return": stacked["eval_return"],  # (seeds, evals)
            "train_return": stacked["train_return"],
            "train_episodes": stacked["train_episodes"],
            "probe_q": stacked["probe_q"],  # (seeds, evals, members, probes, A)
            "episodes": episode_table(stats["table"]),
        }

    def snapshot(state: HostState, probes: np.ndarray, stats: dict, outs: list) -> dict:
        """What a checkpoint holds: the device state, the host's sums and tables, the outputs."""
        host = {
            "probes": probes,
            "ret_sum": stats["ret_sum"],
            "ret_count": stats["ret_count"],
            "table": np.array(stats["table"], dtype=float).reshape(-1, 4),
        }
        trees = {"state": state, "host": host}
        if outs:
            trees["outs"] = {k: np.stack([o[k] for o in outs], axis=1) for k in outs[0]}
        return trees

    def resume(state: HostState, probes: np.ndarray, stats: dict, checkpoint: Any):
        """The state, probes, statistics, outputs, first step and seconds spent of the run the
        checkpoint holds (``None`` if it resumes none)."""
        like = {"state": state, "host": snapshot(state, probes, stats, [])["host"]}
        meta = checkpoint.saved_meta() if checkpoint is not None else None
        if meta is None:
            return None
        if meta["outputs"]:
            like["outs"] = dict.fromkeys(OUTPUTS, 0)
        trees, meta = checkpoint.restore(like)
        host = trees["host"]
        stats["ret_sum"][:], stats["ret_count"][:] = host["ret_sum"], host["ret_count"]
        stats["table"] = [tuple(row) for row in np.asarray(host["table"])]
        got = trees.get("outs", {})
        outs = [{k: np.asarray(v)[:, i] for k, v in got.items()} for i in range(meta["outputs"])]
        return (
            trees["state"],
            np.array(host["probes"]),
            outs,
            int(meta["t"]),
            float(meta["elapsed"]),
        )

    def train(
        keys: jax.Array,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        checkpoint: Any = None,
    ):
        keys = jnp.atleast_1d(keys)
        n_seeds = len(keys)
        t0 = time.perf_counter()
        bar = progress_bar(config.total_steps) if progress else None
        state, seeds = init_v(keys)
        seeds = np.asarray(seeds)
        envs, eval_envs, obs = open_envs(seeds)
        probes = np.zeros((n_seeds, config.num_probes, d), np.float32)
        stats = {
            "ep_return": np.zeros(n_seeds),
            "ep_length": np.zeros(n_seeds, np.int64),
            "ret_sum": np.zeros(n_seeds),
            "ret_count": np.zeros(n_seeds, np.int64),
            "table": [],
        }
        outs, first, spent = [], 0, 0.0
        saved = resume(state, probes, stats, checkpoint)
        if saved is not None:  # the episodes in progress when it stopped start again
            state, probes, outs, first, spent = saved
            obs = np.stack(
                [
                    float_obs(env.reset(seed=eval_seed(int(seeds[i, 0]), RESUME_TAG, first))[0])
                    for i, env in enumerate(envs)
                ]
            )
            if bar is not None:
                bar.update(first)
        pend = blank_pending(obs)
        seen: set[int] = set()
        try:
            for t in range(first, config.total_steps + 1):
                slot, take = divmod(t, probe_stride)
                if take == 0 and slot < config.num_probes:
                    probes[:, slot] = obs
                t_arr = np.full(n_seeds, t, np.int32)
                if t == first:  # no pending transition: the run's (or the resumed) first step
                    state, actions = first_v(state, t_arr, obs, pend)
                else:
                    state, actions = act_v(state, t_arr, obs, pend)
                pend, obs = step_envs(envs, obs, np.asarray(actions), stats)
                record_episodes(stats, pend.done, t)
                if t > 0 and t % config.train_every == 0 and t >= config.train_start:
                    state = train_v(state)
                if t > 0 and t % config.eval_every == 0:
                    c = t // config.eval_every - 1
                    state, out = interval(state, eval_envs, seeds, probes, stats, c)
                    outs.append(out)
                    divergence.log_new(state.health, seen, log)
                    if bar is not None or log is not None:
                        report(c, out, t0 - spent, n_seeds, bar, log)  # rate over both sessions
                if checkpoint is not None:
                    checkpoint.after_call(
                        t,
                        config.total_steps,
                        partial(snapshot, state, probes, stats, outs),
                        partial=partial(collect, outs, stats) if outs else None,
                        extra={
                            "t": t + 1,
                            "outputs": len(outs),
                            "elapsed": spent + time.perf_counter() - t0,
                        },
                    )
            best_return = best_model(state, eval_envs, seeds[:, 1], len(outs))
        finally:
            for env in [*envs, *(e for row in eval_envs for e in row)]:
                env.close()
            if bar is not None:
                bar.close()
        return {
            **collect(outs, stats),
            "best_return": best_return,  # (seeds,): the best evaluated learner, re-evaluated
            "best_eval_return": np.asarray(state.best_return),  # (seeds,): its evaluation
            "probes": probes,  # (seeds, probes, obs_dim)
            "wall_time": spent + time.perf_counter() - t0,
            "state": state,
            "divergence": divergence.as_dict(state.health),
        }

    train.traces = traces  # type: ignore[attr-defined]
    return train


def episode_table(rows: list[tuple]) -> dict[str, np.ndarray]:
    """Every training episode as the control harness gives them: ``seed_index``, ``step`` (the env
    steps done when it ended, the first step included), ``return``, ``length``; ordered by seed,
    then step."""
    table = np.array(rows, dtype=float).reshape(-1, 4)
    order = np.lexsort((table[:, 1], table[:, 0]))
    table = table[order]
    return {
        "seed_index": table[:, 0].astype(np.int64),
        "step": table[:, 1].astype(np.int64),
        "return": table[:, 2],
        "length": table[:, 3].astype(np.int64),
    }
