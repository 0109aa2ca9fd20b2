"""Where command-line runs keep their compiled programs (lktd_ppl.compile_cache)."""

from pathlib import Path

import jax
import pytest

from lktd_ppl import compile_cache


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in (compile_cache.JAX_ENV_CACHE, compile_cache.ENV_CACHE, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_the_folder_follows_the_variables_in_order(env, tmp_path):
    assert compile_cache.cache_folder() == tmp_path / "home" / ".cache" / "lktd_ppl" / "jax"
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_folder() == tmp_path / "xdg" / "lktd_ppl" / "jax"
    env.setenv(compile_cache.ENV_CACHE, str(tmp_path / "mine"))
    assert compile_cache.cache_folder() == tmp_path / "mine"
    env.setenv(compile_cache.JAX_ENV_CACHE, str(tmp_path / "jax_own"))
    assert compile_cache.cache_folder() == tmp_path / "jax_own"


@pytest.mark.parametrize("word", ["off", "OFF", "0", "none"])
def test_off_turns_it_off(env, word):
    env.setenv(compile_cache.ENV_CACHE, word)
    assert compile_cache.cache_folder() is None
    assert compile_cache.enable() is None


def test_enable_points_jax_at_the_folder_and_caches_every_program(env, tmp_path):
    before = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    env.setenv(compile_cache.ENV_CACHE, str(tmp_path / "c"))
    try:
        assert compile_cache.enable() == tmp_path / "c"
        assert Path(jax.config.jax_compilation_cache_dir) == tmp_path / "c"
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        assert (tmp_path / "c").is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_a_folder_that_cannot_be_made_leaves_it_off(env, tmp_path):
    (tmp_path / "file").write_text("x")
    env.setenv(compile_cache.ENV_CACHE, str(tmp_path / "file" / "sub"))
    assert compile_cache.enable() is None


def test_the_command_line_turns_it_on(env, tmp_path, capsys):
    from lktd_ppl import cli

    before = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    env.setenv(compile_cache.ENV_CACHE, str(tmp_path / "c"))
    try:  # a run refused at its settings: the cache is on before anything is compiled
        assert (
            cli.main(["train", "--algo", "dqn", "--steps", "0", "--out", str(tmp_path / "run")])
            == 2
        )
        assert "steps" in capsys.readouterr().err
        assert Path(jax.config.jax_compilation_cache_dir) == tmp_path / "c"
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
