"""The replay buffer as the agents use it: a FIFO of SARSA transitions (flashbax item buffer) that
lives in the scan carry, sampled uniformly.

A transition is a dict with the keys the models read (``models/mlp_q.py``): ``obs``, ``action``,
``reward``, ``next_obs``, ``next_action`` (the action actually taken next; drawn by the acting
policy at s' after a truncation), ``terminated`` (float 0/1: never bootstrap), ``next_mask`` (legal
actions at s'), plus optional extra per-transition fields (e.g. bootstrap masks).
"""

from __future__ import annotations

from typing import Any

import flashbax as fbx
import jax
import jax.numpy as jnp

from lktd_ppl.rng import uniform


def example_transition(obs_dim: int, num_actions: int, extra: dict | None = None) -> dict:
    item = {
        "obs": jnp.zeros(obs_dim, jnp.float32),
        "action": jnp.zeros((), jnp.int32),
        "reward": jnp.zeros((), jnp.float32),
        "next_obs": jnp.zeros(obs_dim, jnp.float32),
        "next_action": jnp.zeros((), jnp.int32),
        "terminated": jnp.zeros((), jnp.float32),
        "next_mask": jnp.zeros(num_actions, jnp.int8),
    }
    return {**item, **(extra or {})}


class Replay:
    """Thin wrapper over ``flashbax.make_item_buffer``: ``init``, ``add``, ``sample(key) -> batch``."""

    def __init__(self, capacity: int, batch_size: int, example: dict):
        self.buffer = fbx.make_item_buffer(
            max_length=capacity, min_length=1, sample_batch_size=batch_size
        )
        self.capacity, self.batch_size = capacity, batch_size
        self.example = example

    def init(self) -> Any:
        return self.buffer.init(self.example)

    def add(self, state: Any, item: dict) -> Any:
        return self.buffer.add(state, item)

    def sample(self, state: Any, key: jax.Array) -> dict:
        """A uniform minibatch (with replacement) of the stored transitions.

        Reads flashbax's storage directly with indices from :func:`lktd_ppl.rng.uniform`, which is
        several times cheaper than ``buffer.sample``'s ``jax.random`` draws, and sampling happens
        at every training stage (``experiments/results/code_choices.md``).
        """
        size = jnp.where(state.is_full, self.capacity, state.current_index)
        u = uniform(key, (self.batch_size,))
        idx = jnp.minimum((u * size).astype(jnp.int32), jnp.maximum(size - 1, 0))
        return jax.tree.map(lambda a: a[0, idx], state.experience)


def add_lockstep(buffers: Any, items: dict) -> Any:
    """Append one transition per seed (``items`` leaves (seeds, ...)) to the seeds' replay buffers
    (flashbax item buffers vmapped over seeds: leaves (seeds, 1, capacity, ...)), as
    ``Replay.add`` does per seed.  The seeds add in lockstep, so they share the write index: one
    slice update per field, done in place on the donated buffers, where the vmapped ``add`` is a
    scatter that copies every buffer at every step."""
    capacity = jax.tree.leaves(buffers.experience)[0].shape[2]
    index = buffers.current_index[0]

    def put(buf: jax.Array, x: jax.Array) -> jax.Array:
        start = (0, 0, index) + (0,) * (buf.ndim - 3)
        return jax.lax.dynamic_update_slice(buf, x[:, None, None].astype(buf.dtype), start)

    after = buffers.current_index + 1
    return buffers.replace(
        experience=jax.tree.map(put, buffers.experience, items),
        current_index=after % capacity,
        is_full=buffers.is_full | (after >= capacity),
    )
