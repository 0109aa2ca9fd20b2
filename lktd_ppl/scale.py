"""Scale-out over devices and processes: the seed axis split over a device mesh.

Runs of different seeds never talk to each other, so the jitted harness calls (vmapped over
seeds) are split over a 1-D mesh (axis ``seeds``) with ``shard_map``: each device runs the same
vmapped program on its own seeds, with no communication inside, and every seed's numbers are the
ones the unsplit program gives.  The mesh spans ``devices`` local devices of every process of a
``jax.distributed`` job, so K processes with N devices each split the seeds K*N ways.

On CPU, several devices in one process are forced host devices
(``--xla_force_host_platform_device_count``, which must be set before JAX starts its backend:
:func:`force_host_devices`); several processes on one machine or several hosts form one job from
the ``LKTD_COORDINATOR`` / ``LKTD_NUM_PROCESSES`` / ``LKTD_PROCESS_ID`` environment variables
(:func:`initialize_from_env`; :func:`launch` starts such processes locally), with gloo
collectives on CPU.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

AXIS = "seeds"
CHAIN_AXIS = "chains"
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"
ENV_COORDINATOR = "LKTD_COORDINATOR"
ENV_NUM_PROCESSES = "LKTD_NUM_PROCESSES"
ENV_PROCESS_ID = "LKTD_PROCESS_ID"
BARRIER_TIMEOUT_S = 3600.0  # how long a process waits for the others at a gather
_barriers = 0  # barriers passed so far (each needs its own name)


def force_host_devices(n: int) -> None:
    """Ask XLA for ``n`` CPU devices in this process (XLA_FLAGS); only effective before JAX
    starts its backend, and harmless where the devices are GPUs."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if HOST_DEVICES_FLAG not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{HOST_DEVICES_FLAG}={n}"])


def env_processes() -> tuple[str, int, int] | None:
    """(coordinator address, process count, this process's id) from the environment, or None
    when no multi-process job is declared.  A ValueError names a variable that is wrong."""
    count = os.environ.get(ENV_NUM_PROCESSES)
    if count is None or int(count) <= 1:
        return None
    address = os.environ.get(ENV_COORDINATOR, "")
    pid = os.environ.get(ENV_PROCESS_ID, "")
    if not address or not pid.isdigit() or not 0 <= int(pid) < int(count):
        raise ValueError(
            f"{ENV_NUM_PROCESSES}={count} needs {ENV_COORDINATOR}=HOST:PORT and "
            f"{ENV_PROCESS_ID} in 0..{int(count) - 1}, got {address!r} and {pid!r}"
        )
    return address, int(count), int(pid)


def initialize_from_env() -> int:
    """Join the ``jax.distributed`` job the environment declares (once; gloo collectives on
    CPU); returns the number of processes (1: no job)."""
    job = env_processes()
    if job is None:
        return 1
    import jax

    if jax.distributed.is_initialized():
        return jax.process_count()
    address, count, pid = job
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=pid)
    return count


def is_main_process() -> bool:
    """Process 0 of the job (or the only process): the one that writes results."""
    job = env_processes()
    return job is None or job[2] == 0


def seed_mesh(devices: int | None) -> Any:
    """A 1-D mesh (axis :data:`AXIS`) over the first ``devices`` local devices of every process,
    or None for one device in one process (the plain path)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    per = 1 if devices is None else devices
    if per < 1:
        raise ValueError(f"--devices must be at least 1, got {per}")
    if per == 1 and jax.process_count() == 1:
        return None
    chosen = []
    for p in range(jax.process_count()):
        mine = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        if len(mine) < per:
            kind = jax.default_backend()
            raise ValueError(
                f"--devices {per}: process {p} has {len(mine)} {kind} device(s)"
                + (f" (on CPU, set XLA_FLAGS={HOST_DEVICES_FLAG}={per} before JAX starts)")
                * (kind == "cpu")
            )
        chosen += mine[:per]
    return Mesh(np.array(chosen), (AXIS,))


def chain_devices_asked(sets: Sequence[str], configs: Sequence[str | None]) -> int:
    """The ``chain_devices`` a run asks for (1 if none), read before JAX starts so that its host
    devices can be forced: from the ``--set`` items ``sets`` (the last wins), else from the
    first of ``configs`` that is given (a config file, or a run folder's config.json)."""
    import json
    from pathlib import Path

    for item in reversed(sets):
        key, _, value = item.partition("=")
        if key.strip() == "chain_devices" and value.strip().isdigit():
            return int(value)
    for path in configs:
        if not path:
            continue
        file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
        try:
            saved = json.loads(file.read_text()).get("agent", {}).get("chain_devices", 1)
        except (OSError, ValueError, AttributeError):
            return 1  # the command reports an unreadable config itself
        return saved if isinstance(saved, int) and saved > 1 else 1
    return 1


def chain_mesh(devices: int, chains: int) -> Any:
    """A 1-D mesh (axis :data:`CHAIN_AXIS`) over the first ``devices`` devices of this process
    that the ``chains`` chains of a seed are split over, or None for one device."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    if devices < 1:
        raise ValueError(f"chain_devices must be at least 1, got {devices}")
    if devices == 1:
        return None
    if chains % devices:
        raise ValueError(
            f"chain_devices {devices} must divide the {chains} chains (num_chains) of a seed"
        )
    local = sorted(jax.local_devices(), key=lambda d: d.id)
    if len(local) < devices:
        kind = jax.default_backend()
        raise ValueError(
            f"chain_devices {devices}: this process has {len(local)} {kind} device(s)"
            + (f" (on CPU, set XLA_FLAGS={HOST_DEVICES_FLAG}={devices} before JAX starts)")
            * (kind == "cpu")
        )
    return Mesh(np.array(local[:devices]), (CHAIN_AXIS,))


def chain_split(f: Callable, mesh: Any) -> Callable:
    """``f(keys, states, per_chain)`` over the chain axis (axis 0 of every argument) split over
    ``mesh``: each device runs ``f`` on its own chains (each chain's update reads only its own
    key, state and rows, and the shared minibatch).  A stage's numbers are the unsplit call's to
    the bit or, where XLA compiles a fusion otherwise for a device's share, within float32
    rounding; over a run, such a rounding grows as any would (``tests/test_scale.py``)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    spec = PartitionSpec(CHAIN_AXIS)
    # check_vma off: the kernels mix per-chain values with constants (e.g. VJP cotangents)
    split = jax.shard_map(
        f, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False
    )
    whole = NamedSharding(mesh, PartitionSpec())

    def run(*args: Any) -> Any:
        # every device gets all the chains back: the rest of the run (Q-grids, acting, the
        # sample ring) is the unsplit program's, not a split one XLA would derive
        return jax.lax.with_sharding_constraint(split(*args), whole)

    return run


def mesh_size(mesh: Any) -> int:
    """Devices the seeds are split over (1 without a mesh)."""
    return 1 if mesh is None else mesh.devices.size


def split_problem(seeds: int, devices: int | None, processes: int) -> str | None:
    """Why ``seeds`` cannot be split over ``devices`` devices in each of ``processes``
    processes, or None when they can."""
    n = (devices or 1) * processes
    if seeds % n:
        return (
            f"--seeds {seeds} must be a multiple of the {n} devices the seeds are split over "
            f"(--devices {devices or 1} x {processes} process(es))"
        )
    return None


def check_seeds(seeds: int, mesh: Any) -> None:
    """A ValueError unless ``seeds`` split evenly over the mesh."""
    import jax

    n = mesh_size(mesh)
    if problem := split_problem(seeds, n // jax.process_count(), jax.process_count()):
        raise ValueError(problem)


def job_size() -> int:
    """The processes of the job the environment declares (1: none), without starting JAX."""
    job = env_processes()
    return 1 if job is None else job[1]


def seed_sharding(mesh: Any) -> Any:
    """The sharding of a seed-first array over the mesh."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(AXIS))


def seed_map(
    f: Callable, mesh: Any, in_axes: Sequence[int | None] = (0,), donate_argnums: tuple = ()
) -> Callable:
    """``jit(vmap(f, in_axes))``, split over ``mesh`` along the seed axis: the arguments with
    axis 0 are seed-first arrays split over the mesh (the others are shared), and so is every
    output.  Each local device runs the one compiled ``jit(vmap(f))`` on its own seeds (the
    calls are dispatched side by side), so a seed's numbers are the plain path's to the bit;
    XLA's partitioner would instead gather the seeds around host callbacks and random-bit
    generators at every step."""
    import jax

    plain = jax.jit(jax.vmap(f, in_axes=tuple(in_axes)), donate_argnums=donate_argnums)
    if mesh is None:
        return plain
    sharding = seed_sharding(mesh)
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    pool = ThreadPoolExecutor(len(local))

    def piece(x: Any, device: Any) -> Any:
        return next(s.data for s in x.addressable_shards if s.device == device)

    def split(*args: Any) -> Any:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
            return plain(*args)  # traced (eval_shape, an outer jit): the same shapes
        args = [
            jax.device_put(a, sharding) if axis == 0 else a
            for a, axis in zip(args, in_axes, strict=True)
        ]
        # every piece is taken before the first call donates its buffers
        pieces = [
            [
                jax.tree.map(lambda x, d=d: piece(x, d), a) if axis == 0 else a
                for a, axis in zip(args, in_axes, strict=True)
            ]
            for d in local
        ]
        # one thread per device: the first call's compilations (one per device) run side by
        # side, and so do the dispatches
        outs = list(pool.map(lambda p: plain(*p), pieces))
        return jax.tree.map(lambda *xs: assemble(list(xs), sharding), *outs)

    return split


def assemble(pieces: list, sharding: Any) -> Any:
    """One seed-first array split over the mesh from this process's per-device pieces."""
    import jax

    per = pieces[0].shape[0]
    shape = (per * sharding.mesh.devices.size, *pieces[0].shape[1:])
    return jax.make_array_from_single_device_arrays(shape, sharding, pieces)


def put_seeds(keys: Any, mesh: Any) -> Any:
    """``keys`` (the whole seed axis, the same on every process) as one array split over the
    mesh's seed axis (each process holds its own seeds)."""
    if mesh is None:
        return keys
    import jax

    sharding = seed_sharding(mesh)
    devices = sharding.addressable_devices_indices_map(keys.shape)
    pieces = [jax.device_put(keys[index], d) for d, index in devices.items()]
    return assemble(pieces, sharding)


def to_host(tree: Any) -> Any:
    """``tree`` as NumPy arrays, whole on every process (gathered over the job's processes; key
    arrays as their key data there)."""
    import jax

    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def plain(x: Any) -> Any:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    barrier("gather")  # gloo gives a process that comes late 30 s only
    return multihost_utils.process_allgather(jax.tree.map(plain, tree), tiled=True)


def per_seed_arrays(results: dict) -> dict[str, Any]:
    """What a split run must repeat of the unsplit one, seed by seed: every array of a harness's
    ``results`` (each evaluation's metrics, the final sample ring, ...) and the final learner
    state, as NumPy arrays named by their path."""
    import jax
    import numpy as np

    keep = {k: v for k, v in results.items() if k not in ("state", "config", "wall_time")}
    keep["learner"] = results["state"].learner
    leaves = jax.tree_util.tree_flatten_with_path(keep)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves if np.ndim(v) > 0}


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Each array of two :func:`per_seed_arrays` that is not equal to the bit (NaN matching NaN),
    by name: its largest absolute difference relative to the largest magnitude in ``a``'s array
    (``inf`` where a name is missing, the shapes differ, or only one side is NaN)."""
    import numpy as np

    out = {}
    for k in a.keys() | b.keys():
        if k not in a or k not in b or np.shape(a[k]) != np.shape(b[k]):
            out[k] = float("inf")
            continue
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        if same.all():
            continue
        diff = np.abs(x - y)[~same]
        if np.isnan(diff).any():
            out[k] = float("inf")
            continue
        scale = np.nanmax(np.abs(x)) if np.isfinite(x).any() else 0.0
        out[k] = float(np.max(diff) / scale) if scale > 0 else float("inf")
    return out


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Wait up to ``timeout_s`` for every process of the job at the coordination service
    (nothing with one process): the processes' compilations, for one, may end minutes apart."""
    import jax

    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the job's client: JAX has no public barrier with a timeout

    global _barriers
    _barriers += 1
    client = distributed.global_state.client
    client.wait_at_barrier(f"lktd_{name}_{_barriers}", int(timeout_s * 1000))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def core_share(i: int, processes: int) -> set[int]:
    """The cores of process ``i`` of ``processes`` (a contiguous block; empty: not pinned,
    fewer cores than processes)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < processes:
        return set()
    per = len(cores) // processes
    return set(cores[i * per : (i + 1) * per])


def launch(
    processes: int,
    argv: list[str],
    port: int | None = None,
    pin: bool = True,
    program: list[str] | None = None,
) -> int:
    """Run ``program *argv`` (default ``lktd``) as ``processes`` local processes of one
    ``jax.distributed`` job (coordinator on 127.0.0.1), process i pinned to its share of the
    cores (``pin``); the first non-zero exit status, else 0."""
    address = f"127.0.0.1:{port or free_port()}"
    # -P: the installed lktd_ppl, never a checkout that happens to be the working directory
    program = program or [sys.executable, "-P", "-m", "lktd_ppl.cli"]
    procs = []
    for i in range(processes):
        env = {
            **os.environ,
            ENV_COORDINATOR: address,
            ENV_NUM_PROCESSES: str(processes),
            ENV_PROCESS_ID: str(i),
        }
        cores = core_share(i, processes) if pin else set()
        pin_fn = (lambda c=cores: os.sched_setaffinity(0, c)) if cores else None
        procs.append(subprocess.Popen([*program, *argv], env=env, preexec_fn=pin_fn))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)
