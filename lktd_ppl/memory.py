"""Memory a run needs, estimated from its settings before anything is compiled, and the refusal of
a run that cannot fit in the machine's available memory.

The estimate adds, per seed, the arrays the harness carries (the replay buffer, the learner's
state, the escape harness's sample ring of Q-grids; :class:`~lktd_ppl.agents.harness.RunState`,
the control harness's state in :mod:`lktd_ppl.agents.control`) times the copies a run holds at its
peak, the draws kept for samples.nc, and a fixed allowance for JAX, XLA and the compiled program.
``experiments/bench_memory.py`` compares it with measured peak resident memory.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from lktd_ppl.settings import RunError

F32 = 4
# the compiled program, XLA's buffers and the host copies of the per-chunk metrics: the peak of a
# one-seed escape run less its arrays, about 300 MiB on CPU (experiments/results/bench_memory.md)
FIXED_BYTES = 300 * 2**20
# ring-sized buffers per member at a run's peak: the carry, the evaluation's masked and sorted
# copies for the quantiles (all seeds at once under vmap), the final summary's copy, the host copy;
# measured about 7 (32 escape DQN seeds: 33.6 MB more per seed of a 4.8 MB ring)
RING_COPIES = 7
# copies of the carried state during a chunk: its buffer, the loop's output (donated on the next
# call), and the host/device transfer at the end
STATE_COPIES = 2
# copies of what a run returns per chunk: the device's, the host's, the stacked arrays
OUTPUT_COPIES = 3


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes a run needs, by part (``parts``: name -> bytes, all seeds)."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {gib(b)}" for name, b in big if b > 0)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def mlp_params(obs_dim: int, hidden: tuple[int, ...], out: int) -> int:
    sizes = [obs_dim, *hidden, out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def item_bytes(obs_dim: int, num_actions: int, extra: int = 0) -> int:
    """One replay item (``replay.example_transition``): obs and next_obs, action, next_action,
    reward, terminated (4 bytes each), the next state's action mask (int8), ``extra`` bytes."""
    return F32 * (2 * obs_dim + 4) + num_actions + extra


def learner_bytes(
    algo: str, agent: Any, obs_dim: int, num_actions: int, batch: int, p: int | None
) -> tuple[int, int, str]:
    """(bytes of one seed's learner state, extra replay bytes per item, a label)."""
    if algo in ("lktd", "sgld", "sghmc"):
        # per chain: theta, the running squared drift (or momentum), xi and its kin per row, and
        # the target copy where there is one
        p = int(p or 0)
        copies = 4 if getattr(agent, "target_every", 0) else 3
        return agent.num_chains * F32 * (copies * p + 3 * batch), 0, f"{algo} chains (p = {p:,})"
    hidden = tuple(getattr(agent, "hidden", (32, 32)))
    if algo == "bootdqn":
        core = mlp_params(obs_dim, hidden, 0) if hidden else 0
        width = hidden[-1] if hidden else obs_dim
        head = mlp_params(width, tuple(agent.head_hidden), num_actions)
        q = core + agent.heads * head
        return 4 * F32 * q, agent.heads, f"bootdqn (p = {q:,})"
    out = num_actions * getattr(agent, "num_quantiles", 1)
    q = mlp_params(obs_dim, hidden, out)
    if algo == "kova":
        # P, the update's p x p product and the new P
        return 3 * F32 * q * q + 4 * F32 * q, 0, f"KOVA's p x p covariance (p = {q:,})"
    return 4 * F32 * q, 0, f"{algo} (p = {q:,})"  # params, target, two optimiser moments


def output_bytes(spec: Any, num_actions: int) -> int:
    """Bytes one seed's run returns besides its state: the escape harness's metrics per chunk
    (eight (A,)-or-(4, A) arrays against two truths, the return and the episode count), or the
    control harness's per-step episode records (ended, return, length) and Q at the probes per
    evaluation."""
    proto = spec.protocol
    if spec.control is None:
        return proto.total_steps // proto.chunk_steps * F32 * (22 * num_actions + 2)
    evals = proto.total_steps // proto.eval_every
    probes = spec.members * proto.num_probes * num_actions
    return proto.total_steps * 3 * F32 + evals * F32 * (probes + 3)


def estimate(spec: Any, p: int | None = None) -> Estimate:
    """The memory ``spec`` (a :class:`~lktd_ppl.config.RunSpec`) needs; ``p``: the LKTD family's
    parameter count (from :func:`lktd_ppl.model_facts.model_facts`)."""
    from lktd_ppl.validation import dims

    obs_dim, num_actions = dims(spec)
    proto = spec.protocol
    seeds, members = spec.seeds, spec.members
    learner, extra, label = learner_bytes(
        spec.algo, spec.agent, obs_dim, num_actions, proto.batch_size, p
    )
    replay = proto.buffer_size * item_bytes(obs_dim, num_actions, extra)
    parts = {
        "replay buffers": STATE_COPIES * seeds * replay,
        label: STATE_COPIES * seeds * learner,
    }
    parts["per-step outputs"] = OUTPUT_COPIES * seeds * output_bytes(spec, num_actions)
    if spec.control is None:
        cells = proto.size**2
        grid = cells * num_actions * F32
        parts["sample rings"] = RING_COPIES * seeds * members * proto.sample_size * grid
        draws = min(spec.max_draws, proto.sample_size)
        parts["samples.nc draws"] = seeds * members * draws * grid
    else:  # the best learner so far is kept beside the current one
        parts[label] += seeds * learner
    parts["JAX and the compiled program"] = FIXED_BYTES
    return Estimate(parts)


def available_bytes() -> int:
    """Memory available to a new process: MemAvailable of /proc/meminfo where there is one,
    else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(spec: Any, p: int | None = None, available: int | None = None) -> Estimate:
    """The estimate of ``spec``; a :class:`RunError` with it if it exceeds ``available`` (default:
    the machine's available memory)."""
    est = estimate(spec, p)
    limit = available_bytes() if available is None else int(available)
    if est.total > limit:
        per_seed = max(
            1, math.floor((limit - FIXED_BYTES) / max(1, est.total - FIXED_BYTES) * spec.seeds)
        )
        raise RunError(
            f"the run needs about {gib(est.total)} ({est.total:,} bytes: {est.describe()}) for "
            f"{spec.seeds} seed(s) x {spec.members} member(s); {gib(limit)} available: use "
            f"fewer seeds (at most about {per_seed} here), fewer members or smaller buffers"
        )
    return est
