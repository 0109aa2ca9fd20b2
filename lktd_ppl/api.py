"""One-call entry points: ``sample`` for static models, ``load_model`` for model files."""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lktd_ppl import validation
from lktd_ppl.filter import SamplerConfig, lktd, lktd_only_options_error
from lktd_ppl.samplers import sghmc, sgld
from lktd_ppl.settings import RunError
from lktd_ppl.ssm import STAGE_KEY, Batch, ModelError, from_numpyro, leading_size

KERNELS = {"lktd": lktd, "sgld": sgld, "sghmc": sghmc}


class DataError(RunError):
    """Data the sampler cannot use (the message names the array)."""


DEFAULT_MODEL = "mlp_q:sarsa_spike_slab"  # the paper's network, prior and SARSA measurement


def shipped_models() -> dict[str, Path]:
    """The model files shipped with the package (the project's ``models/``), by name."""
    folder = importlib.resources.files("lktd_ppl.models")
    return {
        Path(f.name).stem: Path(str(f))
        for f in folder.iterdir()
        if f.name.endswith(".py") and not f.name.startswith("_")
    }


def model_file(name: str) -> Path:
    """Path of a shipped model file, by name (``mlp_q`` or ``mlp_q.py``)."""
    shipped = shipped_models()
    stem = name.removesuffix(".py")
    if stem not in shipped:
        raise ModelError(
            f"no shipped model {name!r}; shipped: {', '.join(sorted(shipped))} "
            "(a file of your own: path/to/file.py:function)"
        )
    return shipped[stem]


def resolve_model(spec: str) -> tuple[Path, str]:
    """(file, function) of a model spec: ``NAME:function`` for a shipped model (no ``/``, no
    ``.py``; e.g. ``mlp_q:sarsa_spike_slab``), else ``path/to/file.py:function``."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ModelError(
            f"model spec {spec!r} must look like path/to/file.py:function or, for a shipped "
            f"model, NAME:function (shipped: {', '.join(sorted(shipped_models()))})"
        )
    if "/" not in path and "\\" not in path and not path.endswith(".py"):
        return model_file(path), name
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"model file {path!r} does not exist")
    return file, name


def load_model(spec: str) -> Callable:
    """Load a NumPyro model: ``path/to/file.py:function``, or ``NAME:function`` for a model
    shipped with the package (e.g. ``mlp_q:sarsa_spike_slab``); clear errors for bad specs."""
    file, name = resolve_model(spec)
    path = str(file)
    mod_name = f"lktd_user_model_{abs(hash(str(file.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise ModelError(f"model file {path!r} failed to import: {type(e).__name__}: {e}") from e
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise ModelError(f"model file {path!r} has no function {name!r}")
    return fn


def _minibatch(key: jax.Array, data: Batch, size: int, batch_size: int) -> Batch:
    if batch_size == size:
        return data
    idx = jax.random.choice(key, size, (batch_size,), replace=False)
    return jax.tree.map(lambda a: a[idx], data)


def check_key(key: Any, name: str = "key") -> None:
    """A RunError unless ``key`` is a JAX PRNG key (``jax.random.key(0)``, or the uint32 pair of
    ``jax.random.PRNGKey(0)``)."""
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return
    shown = f"{type(key).__name__} {key!r}" if np.ndim(key) == 0 else type(key).__name__
    raise RunError(f"{name} must be a JAX PRNG key (e.g. jax.random.key(0)), got {shown}")


def check_data(data: Batch) -> None:
    """A DataError naming the first array of ``data`` that holds NaN or inf."""
    for name, leaf in data.items():
        if name == STAGE_KEY:
            continue
        for path, arr in jax.tree_util.tree_flatten_with_path(leaf)[0]:
            values = np.asarray(arr)
            if values.dtype.kind not in "fc":
                continue
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            if bad:
                label = name + jax.tree_util.keystr(path)
                raise DataError(
                    f"data[{label!r}] has {bad} non-finite value(s) (NaN or inf) of "
                    f"{values.size}: every value must be finite"
                )


def check_sample_arguments(
    config: SamplerConfig, num_chains: Any, num_samples: Any, num_warmup: Any
) -> None:
    """Each sampler setting and count of :func:`sample` in its range (a RunError naming it)."""
    validation.check(config)
    for name, value, rule in (
        ("num_chains", num_chains, validation.COUNT),
        ("num_samples", num_samples, validation.COUNT),
        ("num_warmup", num_warmup, validation.Interval(0, integer=True)),
    ):
        validation.check_value(name, value, rule)


def sample(
    model: Callable,
    data: Batch,
    *,
    key: jax.Array,
    sampler: SamplerConfig | None = None,
    method: str = "lktd",
    num_chains: int = 4,
    num_samples: int = 1000,
    num_warmup: int | None = None,
    batch_size: int | None = None,
    init_positions: jax.Array | None = None,
    **settings: Any,
) -> Any:
    """Sample the (tempered) posterior of a static NumPyro model; return an ArviZ DataTree.

    One draw is one stage: a fresh minibatch of ``batch_size`` rows of ``data`` (each chain its own),
    then the stage of the kernel (for LKTD: the Gibbs draw of xi and ``kappa`` inner steps with
    eps_k = ``step_size`` * k^-0.9, restarting every stage; ``schedule(eps0, k)`` replaces it).

    The sampler's settings are a :class:`~lktd_ppl.filter.SamplerConfig` (``sampler``), and any of
    its fields may be given as keywords instead (``step_size=5e-4``, ``alpha=0.5``, ...), which
    replace the ones of ``sampler``.  Defaults here: ``pseudo_population`` = the number of rows (the
    ordinary posterior), ``step_size`` (eps0) = 1e-4, the rest as ``SamplerConfig``'s.
    ``method``: ``lktd``, ``sgld`` or ``sghmc``.  ``batch_size`` = all rows by default;
    ``num_warmup`` = ``num_samples`` stages, discarded.  Chains start from independent prior
    draws (``init_positions``, flat unconstrained (num_chains, p), overrides).

    Returns a DataTree with groups ``posterior`` (every latent site, dims (chain, draw, ...),
    constrained space) and ``sample_stats`` (``log_prior`` and the minibatch ``log_likelihood`` at
    the start of each stage).

    Every argument is checked before anything compiles: a :class:`~lktd_ppl.settings.RunError`
    (a ValueError; :class:`DataError` for data holding NaN or inf) names the argument, its value
    and the allowed range.
    """
    import arviz_base as azb

    if method not in KERNELS:
        raise ModelError(f"unknown method {method!r}; choose one of {', '.join(KERNELS)}")
    fields = [f.name for f in dataclasses.fields(SamplerConfig)]
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ModelError(
            f"sample() got unknown setting(s) {', '.join(unknown)}; SamplerConfig fields: "
            f"{', '.join(fields)}"
        )
    check_key(key)
    size = leading_size(data)
    check_data(data)
    batch_size = size if batch_size is None else batch_size
    validation.check_value("batch_size", batch_size, validation.Interval(1, size, integer=True))
    num_warmup = num_samples if num_warmup is None else num_warmup
    if sampler is None:
        sampler = SamplerConfig(pseudo_population=float(size), step_size=1e-4)
    config = sampler.replace(**settings)
    check_sample_arguments(config, num_chains, num_samples, num_warmup)
    if init_positions is not None and not np.isfinite(np.asarray(init_positions)).all():
        raise DataError("init_positions holds NaN or inf: every starting value must be finite")
    data = {k: jnp.asarray(v) for k, v in data.items() if k != STAGE_KEY}
    example = {**jax.tree.map(lambda a: a[:batch_size], data), STAGE_KEY: jnp.int32(0)}
    ssm = from_numpyro(model, example)
    if error := lktd_only_options_error(method, config.temperature, config.precondition_max):
        raise ModelError(error)
    kernel = KERNELS[method](ssm, config)

    key_init, key_run = jax.random.split(key)
    if init_positions is None:
        init_positions = jnp.stack(
            [ssm.sample_prior(k, example) for k in jax.random.split(key_init, num_chains)]
        )
    total = num_warmup + num_samples

    def one_chain(key, position):
        def stage(state, xs):
            t, key_t = xs
            key_batch, key_step = jax.random.split(key_t)
            batch = {**_minibatch(key_batch, data, size, batch_size), STAGE_KEY: t}
            state, info = kernel.step(key_step, state, batch)  # the BlackJAX forecast's path
            return state, (state.position, info)

        xs = (jnp.arange(total, dtype=jnp.int32), jax.random.split(key, total))
        _, out = jax.lax.scan(stage, kernel.init(position), xs)
        return jax.tree.map(lambda a: a[num_warmup:], out)

    run = jax.jit(jax.vmap(one_chain))
    positions, info = run(jax.random.split(key_run, num_chains), init_positions)
    constrained = jax.vmap(jax.vmap(ssm.constrain))(positions)
    posterior = {k: np.asarray(v) for k, v in constrained.items()}
    stats = {k: np.asarray(v) for k, v in info._asdict().items()}
    dims = {s.name: [f"{s.name}_dim_{i}" for i in range(len(s.shape))] for s in ssm.sites}
    tree = azb.from_dict({"posterior": posterior, "sample_stats": stats}, dims=dims)
    tree.attrs.update(
        {
            "sampler": method,
            "compat": int(config.compat),
            "pseudo_population": float(config.pseudo_population),
            "batch_size": batch_size,
            "step_size": float(config.step_size),
            "alpha": float(config.alpha),
            "kappa": config.kappa,
            "temperature": float(config.temperature),
            "precondition_max": config.precondition_max,
        }
    )
    return tree
