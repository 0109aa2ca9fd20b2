"""Validation at the edge: the case table (tests/validation_cases.csv) case by case, each refused
with its one-line message and without compiling anything; the table of ranges covers every
setting; the memory estimate refuses what cannot fit."""

from __future__ import annotations

import ast
import csv
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import lktd_ppl
from lktd_ppl import cli, memory, registry, training, validation
from lktd_ppl.config import RunError, build_spec
from lktd_ppl.settings import field_types

ROOT = Path(__file__).resolve().parents[1]
CASES_FILE = Path(__file__).with_name("validation_cases.csv")
CASES = list(csv.DictReader(CASES_FILE.open()))

# modules imported before counting: importing some of them runs (and compiles) small JAX ops
for _alg in registry.ALGORITHMS.values():
    importlib.import_module(_alg.module)
for _name in ("agents.control", "agents.host_loop", "diagnostics", "envs.gymnax_env"):
    importlib.import_module(f"lktd_ppl.{_name}")
importlib.import_module("gymnax")
# gymnax describes an environment's spaces with small eager arrays: their conversions compile once
# per process, when the first control task is described, not when a run is refused


def _describe_cartpole() -> None:
    importlib.import_module("lktd_ppl.envs.gymnax_env").make_env("CartPole-v1")


_describe_cartpole()

# compilations seen while ``_COUNTING`` holds True: XLA compiles, lowerings, and programs read
# back from the persistent cache
_COUNTING = [False]
_COMPILES: list[str] = []
_COMPILE_EVENTS = ("backend_compile", "jaxpr_to_mlir_module", "cache_hits")


def _on_event(name: str, *args, **kwargs) -> None:
    if _COUNTING[0] and any(e in name for e in _COMPILE_EVENTS):
        _COMPILES.append(name)


jax.monitoring.register_event_listener(_on_event)
jax.monitoring.register_event_duration_secs_listener(_on_event)


class _Counting:
    def __enter__(self) -> list[str]:
        _COMPILES.clear()
        _COUNTING[0] = True
        return _COMPILES

    def __exit__(self, *exc) -> None:
        _COUNTING[0] = False


THREE_ACTIONS = """
import numpyro, numpyro.distributions as dist
GAMMA = 0.9
def model(batch):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    q = numpyro.deterministic("q", batch["obs"] @ w)
    numpyro.sample("reward", dist.Normal(q[:, 0], 1.0), obs=batch["reward"])
"""


def _setup(tmp: Path, setup: str) -> None:
    """The files a case needs, by the name in the table's ``setup`` column."""
    if setup.startswith("config "):
        (tmp / "c.json").write_text(setup.removeprefix("config "))
    elif setup == "text not json":
        (tmp / "c.json").write_text("text not json")
    elif setup == "three_actions_model":
        (tmp / "three.py").write_text(THREE_ACTIONS)
    elif setup == "own_gamma_model":  # the shipped models with their own GAMMA, not the run's
        for src, name in (("mlp_q.py", "own_gamma.py"), ("mlp_control.py", "own_gamma_control.py")):
            text = (ROOT / "models" / src).read_text()
            own = 'GAMMA * (1.0 - batch["terminated"].astype(q_sa.dtype))'
            changed = text.replace("bootstrap_discount(batch, GAMMA, q_sa.dtype)", own)
            assert changed != text
            (tmp / name).write_text(changed)
    elif setup == "broken_model":
        (tmp / "broken.py").write_text("x = 1 / 0\n")
    elif setup == "corrupt_samples":
        (tmp / "run").mkdir()
        spec = build_spec(algo="dqn", check_memory=False)
        (tmp / "run" / "config.json").write_text(json.dumps(spec.to_dict()))
        (tmp / "run" / "samples.nc").write_bytes(b"not a netcdf file")
    elif setup:
        raise AssertionError(f"unknown setup {setup!r}")


def _one_line_error(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("lktd ") and ": error: " in lines[0], lines[0]
    assert message in lines[0], lines[0]


def _refuse_runs(*args, **kwargs):
    raise AssertionError("the run was not refused: training started")


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "cli"], ids=lambda c: c["case"])
def test_cli_case(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a run that slipped through would write runs/ here
    monkeypatch.setattr(training, "make_train", _refuse_runs)
    monkeypatch.setattr(training, "execute", _refuse_runs)
    _setup(tmp_path, case["setup"])
    argv = case["command"].replace("{tmp}", str(tmp_path)).split()
    if "CartPole-v1" in argv:  # in a long session JAX's in-memory caches may have dropped those
        _describe_cartpole()  # small eager conversions: described again, as at import
    with _Counting() as compiles:
        code = cli.main(argv)
    _one_line_error(code, capsys.readouterr().err, case["message"].replace("{tmp}", str(tmp_path)))
    assert compiles == [], compiles
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["kind"] == "subprocess"], ids=lambda c: c["case"]
)
def test_subprocess_case(case, tmp_path):
    """The installed command: exit status 2 and one line on stderr, in seconds."""
    _setup(tmp_path, case["setup"])
    argv = case["command"].replace("{tmp}", str(tmp_path)).split()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "lktd_ppl.cli", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    _one_line_error(proc.returncode, proc.stderr, case["message"].replace("{tmp}", str(tmp_path)))
    assert proc.stdout == "" and not (tmp_path / "runs").exists()


def _api_call(change: str) -> dict:
    """Keyword arguments of ``lktd_ppl.sample`` for a case: the base call with one change."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    data = {"x": x, "y": (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)}
    kwargs = dict(key=jax.random.key(0), num_chains=2, num_samples=5, step_size=5e-4)
    name, _, text = change.partition("=")
    value = float(text) if text in ("nan", "inf") else ast.literal_eval(text)
    if name == "init_positions":  # every chain's start at ``value``: (chains, p = 3)
        value = np.full((kwargs["num_chains"], 3), value, np.float32)
    if "[" in name:  # an entry of the data: y[3]=nan
        array, index = name.rstrip("]").split("[")
        data[array].reshape(-1)[int(index)] = value
    else:
        kwargs[name] = value
    return {"data": data, **kwargs}


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "api"], ids=lambda c: c["case"])
def test_api_case(case):
    model = lktd_ppl.load_model("linear_regression:model")
    kwargs = _api_call(case["command"])
    with _Counting() as compiles, pytest.raises(RunError) as err:
        lktd_ppl.sample(model, kwargs.pop("data"), **kwargs)
    assert isinstance(err.value, ValueError) and str(err.value) == str(err.value).strip()
    assert case["message"] in str(err.value) and "\n" not in str(err.value)
    assert compiles == [], compiles


def test_the_case_table_covers_each_area():
    areas = {}
    for c in CASES:
        areas[c["area"]] = areas.get(c["area"], 0) + 1
    assert len(CASES) >= 40 and len({c["case"] for c in CASES}) == len(CASES)
    assert set(areas) == {"config", "model", "environment", "data", "files"}, areas


def test_every_setting_of_every_config_has_an_allowed_range():
    classes = validation.registry_classes()
    names = {c.__name__ for c in classes}
    assert {"SamplerConfig", "EscapeConfig", "ControlConfig", "GymnasiumConfig"} <= names
    assert {a.config_class.__name__ for a in registry.ALGORITHMS.values()} <= names
    missing = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, tp in field_types(cls).items()
        if validation.rule_for(cls, name) is None and tp not in classes  # nested: its own fields
    ]
    assert missing == []
    # and no entry names a field that does not exist (a renamed field would leave one behind)
    fields = {
        (base.__name__, f) for cls in classes for base in cls.__mro__ for f in field_types(cls)
    }
    fields |= {("RunSpec", f) for f in ("seeds", "first_seed", "max_draws")}
    assert set(validation.RANGES) - fields == set()


def test_every_default_is_allowed():
    for cls in validation.registry_classes():
        assert validation.problems(cls()) == [], cls.__name__


@pytest.mark.parametrize(
    "rule, good, bad",
    [
        (validation.UNIT_OPEN, [0.5, 1e-9], [0.0, 1.0, math.nan, "x", True]),
        (validation.POSITIVE, [1e-12, 5], [0, -1, math.inf, math.nan]),
        (validation.COUNT, [1, np.int64(3)], [0, 1.0, True]),
        (validation.INIT_SD, [0.1, 0.0, None, "torch"], [-1.0, "flax"]),
        (validation.Interval(0, lo_open=True, allow_inf=True), [math.inf, 2.0], [0.0, math.nan]),
        (validation.WIDTHS, [(32, 32), ()], [(0,), (32.5,), "32"]),
        (validation.BOOL, [True, False], ["yes", 1]),
    ],
)
def test_rules(rule, good, bad):
    assert all(rule.ok(v) for v in good) and not any(rule.ok(v) for v in bad)


def test_a_sweep_grid_is_checked_value_by_value_on_the_host():
    """A grid of values (e.g. step sizes to vmap over) is refused if any value is out of range."""
    from lktd_ppl.filter import SamplerConfig

    grid = SamplerConfig(step_size=np.array([1e-4, np.inf, 1e-3], np.float32))
    assert validation.problems(grid) == [
        "step_size must be a positive finite number, got inf (in a grid of 3)"
    ]
    ok = SamplerConfig(alpha=jax.numpy.array([0.5, 0.9]))
    assert validation.problems(ok) == []


def test_the_memory_estimate_refuses_a_run_beyond_the_available_memory():
    spec = build_spec(algo="dqn", seeds=4, check_memory=False)
    est = memory.estimate(spec)
    # the escape harness's sample ring: 100 cells x 4 actions x 3000 stages x 4 bytes per seed,
    # held seven times at a run's peak
    assert est.parts["sample rings"] == 7 * 4 * 100 * 4 * 3000 * 4
    assert memory.check_fits(spec, available=est.total) == est
    with pytest.raises(RunError, match=r"the run needs about .* for 4 seed\(s\) x 1 member"):
        memory.check_fits(spec, available=est.total - 1)


def test_a_study_checks_every_row_before_any_runs():
    """A grid of rows (a sweep of step sizes) is refused at its bad value, before any row runs."""
    from lktd_ppl.study.command import row_problem
    from lktd_ppl.study.runner import Row

    grid = {f"eps{e:g}": Row("lktd", "paper", {"step_size": e}, 1) for e in (1e-5, math.inf, -1)}
    with _Counting() as compiles:
        problem = row_problem(grid, list(grid), 2000, 2)
    assert problem == "row epsinf: sampler.step_size must be a positive finite number, got inf"
    assert compiles == []
    assert row_problem(grid, ["eps1e-05"], 2000, 2) is None


def test_the_listener_sees_a_compilation():
    """The cases' 'no compilation' holds because none happened, not because none is seen."""
    with _Counting() as compiles:
        jax.jit(lambda x: x * 3.0 + 1.0)(np.zeros((7, 13), np.float32)).block_until_ready()
    assert compiles != []


@pytest.mark.parametrize("factory", ["lktd", "sgld", "sghmc"])
@pytest.mark.parametrize(
    "field,value,message",
    [
        ("alpha", 1.5, "sampler.alpha must be in (0, 1), got 1.5"),
        ("step_size", float("inf"), "sampler.step_size must be a positive finite number, got inf"),
    ],
)
def test_kernel_factories_check_their_settings(factory, field, value, message):
    """The public kernels (lktd_ppl.lktd, .sgld, .sghmc) refuse a bad SamplerConfig at build."""
    from lktd_ppl.ssm import from_numpyro

    model = lktd_ppl.load_model("linear_regression:model")
    data = _api_call("alpha=0.5")["data"]
    ssm = from_numpyro(model, {k: v[:4] for k, v in data.items()})
    config = lktd_ppl.SamplerConfig(**{field: value})
    with _Counting() as compiles, pytest.raises(RunError) as e:
        getattr(lktd_ppl, factory)(ssm, config)
    assert str(e.value) == message and compiles == []
