"""The protocols' settings: what every task's protocol has (:class:`ReplayProtocol`) and the escape
room's (:class:`EscapeConfig`, spec section 4).  The control tasks' protocol,
:class:`~lktd_ppl.agents.control.ControlConfig`, extends :class:`ReplayProtocol`.  The harness
(:mod:`lktd_ppl.agents.harness`) re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass

from lktd_ppl import validation


@dataclass(frozen=True)
class ReplayProtocol:
    """What every task's protocol has: the budget, the discount, the replay buffer, the training
    schedule and epsilon-greedy exploration (epsilon from ``eps_start`` to ``eps_end`` over the
    first ``eps_fraction`` of the steps).  Defaults are the escape room's (the paper's)."""

    total_steps: int = 1_000_000
    max_episode_steps: int = 200  # the time limit (truncation, not termination)
    gamma: float = 0.9
    buffer_size: int = 10_000
    train_start: int = 1000  # transitions stored before the first training stage
    train_every: int = 10  # env steps per training stage
    batch_size: int = 100
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_fraction: float = 0.1
    # divergence guard (lktd_ppl.divergence): a seed whose |Q| exceeds 10 R / (1 - gamma) is
    # frozen (non-finite parameters or Q-values always are); R = q_bound_reward, or (None) the
    # largest |reward| seen so far; q_bound False: no bound on |Q|
    q_bound: bool = True
    q_bound_reward: float | None = None

    def replay_problems(self) -> list[str]:
        """What is wrong with the settings every protocol shares (empty: nothing)."""
        checks = [
            (self.total_steps > 0, f"total_steps must be positive, got {self.total_steps}"),
            (self.batch_size > 0 and self.buffer_size > 0, "sizes must be positive"),
            (self.train_every > 0, "train_every must be positive"),
            (self.train_start >= self.batch_size, "train_start must be at least batch_size"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if self.train_every > 0 and self.train_start % self.train_every:
            problems.append("train_start must be a multiple of train_every")
        return problems


@dataclass(frozen=True)
class EscapeConfig(ReplayProtocol):
    """The escape protocol (spec section 4).  Every field is a setting; defaults are the paper's."""

    size: int = 10
    reward_noise_sd: float = 0.1
    truth_epsilon: float = 0.01  # the truth is Q of the epsilon-greedy optimal policy
    burn_in_fraction: float = 0.1
    sample_size: int = 3000  # stages whose Q-grids are kept
    window: int = 10_000  # env steps per metrics window
    evals_per_window: int = 10  # M

    @property
    def chunk_steps(self) -> int:
        return self.window // self.evals_per_window

    @property
    def burn_in_steps(self) -> int:
        return int(round(self.burn_in_fraction * self.total_steps))

    def validate(self) -> None:
        validation.check(self, "escape.", ValueError)  # each field's range (the table's)
        problems = self.replay_problems()
        if self.window % self.evals_per_window:
            problems.append("window must be a multiple of evals_per_window")
        elif self.chunk_steps % self.train_every:
            problems.append(
                f"window/evals_per_window ({self.chunk_steps}) must be a multiple of train_every"
            )
        elif self.total_steps % self.chunk_steps:
            problems.append("total_steps must be a multiple of the chunk")
        if self.sample_size <= 0:
            problems.append("sizes must be positive")
        if problems:
            raise ValueError(f"EscapeConfig: {problems[0]}")
