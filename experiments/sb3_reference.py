"""An outside reference for the classic-control study: Stable-Baselines3's DQN with the
RL-Baselines3-Zoo settings of spec section 7, one process per call, seeds run one after another.

Runs under the SB3 venv (``bash experiments/sb3_setup.sh``), not the project's: it does not import
lktd_ppl.  Each (environment, seed) writes one file in the study's batch layout,
``OUT/runs/<env>/sb3_dqn/seeds_<SSS>-<SSS>.npz`` with the keys of the study's batch files
(``seeds``, ``eval_steps``, ``eval_return`` and ``train_return`` and ``train_episodes`` of shape
(1, evals), ``best_return`` (1,), ``wall_time``, ``batch_size`` = 1), so that
``lktd_ppl.study.control.load_row`` reads them as a row named ``sb3_dqn``.  A seed whose file
exists is skipped, so an interrupted call resumes.

Per run: greedy evaluation (``deterministic=True``, 10 episodes) every ``eval_every`` steps on a
separate environment seeded from the run's seed; the mean return of the training episodes
(Monitor) that ended since the previous evaluation (NaN if none); the best evaluation's policy
re-evaluated on 100 fresh episodes; the wall time from building the model to the end of that
re-evaluation (training and every evaluation).  torch runs on one thread.

    .venv-sb3/bin/python experiments/sb3_reference.py --envs CartPole-v1 --seeds 0-9
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "experiments" / "results" / "control"
ROW = "sb3_dqn"
EVAL_EPISODES = 10
BEST_EPISODES = 100
EVAL_SEED_OFFSET = 10_000  # the evaluation environment's seed: run seed + offset
BEST_SEED_OFFSET = 20_000  # the best-model re-evaluation's seed

# Per environment: (total steps, evaluation interval, SB3 DQN keyword arguments) -- the zoo's
# dqn.yml rows as listed in spec section 7; the rest are SB3's defaults (tau 1, Adam,
# max_grad_norm 10, initial epsilon 1, Huber loss).
ZOO: dict[str, tuple[int, int, dict[str, Any]]] = {
    "CartPole-v1": (50_000, 2500, dict(
        learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
        gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
        exploration_fraction=0.16, exploration_final_eps=0.04,
    )),
    "Acrobot-v1": (100_000, 5000, dict(
        learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0,
        gamma=0.99, target_update_interval=250, train_freq=4, gradient_steps=-1,
        exploration_fraction=0.12, exploration_final_eps=0.1,
    )),
    "MountainCar-v0": (120_000, 6000, dict(
        learning_rate=4e-3, batch_size=128, buffer_size=10_000, learning_starts=1000,
        gamma=0.98, target_update_interval=600, train_freq=16, gradient_steps=8,
        exploration_fraction=0.2, exploration_final_eps=0.07,
    )),
    # the zoo's LunarLander-v2 row, on v3 (Gymnasium's current version of the same task)
    "LunarLander-v3": (100_000, 5000, dict(
        learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0,
        gamma=0.99, target_update_interval=250, train_freq=4, gradient_steps=-1,
        exploration_fraction=0.12, exploration_final_eps=0.1,
    )),
}  # fmt: skip
NET_ARCH = [256, 256]


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` or ``"0,3,5"`` (or a mix, ``"0-2,7"``) -> the seeds, in order."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return seeds


def seed_path(out: Path, env_id: str, seed: int) -> Path:
    """The study's batch file of a one-seed batch."""
    return out / "runs" / env_id / ROW / f"seeds_{seed:03d}-{seed:03d}.npz"


def mean_since(returns: list[float], start: int) -> tuple[float, int]:
    """Mean of ``returns[start:]`` (NaN if empty) and how many there are."""
    new = returns[start:]
    return (float(np.mean(new)) if new else float("nan")), len(new)


def run_seed(env_id: str, seed: int, log: bool = True) -> dict[str, Any]:
    """Train SB3's DQN on ``env_id`` with ``seed``; the arrays of one batch file."""
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    steps, every, kwargs = ZOO[env_id]

    def eval_env(offset: int) -> DummyVecEnv:
        venv = DummyVecEnv([lambda: Monitor(gym.make(env_id))])
        venv.seed(seed + offset)  # applies at the first reset; later resets continue its RNG
        return venv

    class Evaluate(BaseCallback):
        """Greedy evaluation every ``every`` env steps; keeps the best evaluation's weights."""

        def __init__(self, monitor: Monitor) -> None:
            super().__init__()
            self.monitor = monitor
            self.env = eval_env(EVAL_SEED_OFFSET)
            self.rows: list[tuple[int, float, float, int]] = []
            self.seen = 0  # training episodes already counted
            self.best = -np.inf
            self.best_state: dict | None = None
            self.eval_s = 0.0

        def _on_step(self) -> bool:
            if self.num_timesteps % every:
                return True
            t0 = time.perf_counter()
            ret, _ = evaluate_policy(
                self.model, self.env, n_eval_episodes=EVAL_EPISODES, deterministic=True
            )
            train, count = mean_since(self.monitor.get_episode_rewards(), self.seen)
            self.seen += count
            self.rows.append((self.num_timesteps, float(ret), train, count))
            if ret > self.best:  # ties keep the earlier one
                self.best = float(ret)
                self.best_state = copy.deepcopy(self.model.policy.state_dict())
            self.eval_s += time.perf_counter() - t0
            if log:
                print(f"  {env_id} seed {seed} step {self.num_timesteps}: eval {ret:.1f}, "
                      f"train {train:.1f} ({count} episodes)", flush=True)  # fmt: skip
            return True

    t0 = time.perf_counter()
    monitor = Monitor(gym.make(env_id))
    model = DQN(
        "MlpPolicy",
        monitor,
        policy_kwargs=dict(net_arch=NET_ARCH),
        seed=seed,
        device="cpu",
        verbose=0,
        **kwargs,
    )
    callback = Evaluate(monitor)
    model.learn(total_timesteps=steps, callback=callback)
    model.policy.load_state_dict(callback.best_state)
    best, _ = evaluate_policy(
        model, eval_env(BEST_SEED_OFFSET), n_eval_episodes=BEST_EPISODES, deterministic=True
    )
    wall = time.perf_counter() - t0
    step, ret, train, count = (np.array(c) for c in zip(*callback.rows, strict=True))
    if log:
        print(f"{env_id} seed {seed}: wall {wall:.1f} s (evaluations {callback.eval_s:.1f} s), "
              f"final {ret[-3:].mean():.1f}, best-model {best:.1f}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    return {
        "seeds": np.array([seed]),
        "eval_steps": step,
        "eval_return": ret[None].astype(np.float32),
        "train_return": train[None].astype(np.float32),
        "train_episodes": count[None].astype(np.int32),
        "best_return": np.array([best], np.float32),
        "wall_time": np.float64(wall),  # training, every evaluation and the best-model one
        "batch_size": np.int32(1),
    }


def write(path: Path, arrays: dict[str, Any]) -> None:
    """Write ``arrays`` to ``path`` whole (a temporary file, then a rename); the temporary name
    does not match the ``seeds_*.npz`` that readers look for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", default=",".join(ZOO), help="comma-separated, of " + ", ".join(ZOO))
    p.add_argument("--seeds", default="0-9", help='e.g. "0-9" or "0,3"')
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--force", action="store_true", help="rerun seeds whose file exists")
    args = p.parse_args(argv)

    import gymnasium
    import stable_baselines3
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} thread), stable-baselines3 "
          f"{stable_baselines3.__version__}, gymnasium {gymnasium.__version__}", flush=True)  # fmt: skip
    for env_id in args.envs.split(","):
        if env_id not in ZOO:
            raise SystemExit(f"unknown env {env_id!r}; known: {', '.join(ZOO)}")
        for seed in parse_seeds(args.seeds):
            path = seed_path(args.out, env_id, seed)
            if path.exists() and not args.force:
                print(f"{env_id} seed {seed}: exists, skipped", flush=True)
                continue
            write(path, run_seed(env_id, seed))


if __name__ == "__main__":
    main()
