"""The tutorial's output blocks are the ones ``experiments/tutorial_outputs.py`` writes from the
code as it is: on the tiny runs of ``tests/test_cli.py::test_tutorial`` (20 000 steps), the
script's blocks have the committed blocks' lines and columns, and their values are in range."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_STEPS = 20_000  # as tests/test_cli.py runs the tutorial
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?")


def _script():
    spec = importlib.util.spec_from_file_location(
        "tutorial_outputs", ROOT / "experiments/tutorial_outputs.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


script = _script()


def start_background_runs(tmp_path_factory):
    """Nothing of its own: the tests read test_cli's tutorial run, started with the session."""
    return None


@pytest.fixture(scope="module")
def tiny(background_runs, _background_starts, tmp_path_factory) -> dict[str, str]:
    """The script's blocks on the tutorial's tiny runs: test_cli's when it runs in this session,
    else run here (slow: this file alone)."""
    cli = [r for m, r in _background_starts.items() if m.__name__.endswith("test_cli")]
    if cli:
        done = cli[0].futures["tutorial"].result()
        folder = cli[0].work / "tutorial"
        done = [(kind, code, proc.stdout) for kind, code, proc in done]
    else:
        folder = tmp_path_factory.mktemp("tutorial")
        done = script.run_blocks(folder, TINY_STEPS)
    return script.render(folder, done)


def shape(block: str) -> str:
    """A block with every number masked and runs of spaces as one: its lines, words and
    columns (numpy pads printed arrays to their widest number)."""
    masked = re.sub(r" +", " ", NUMBER.sub("#", block))
    # the demo's verdicts follow the values: each goal's word and the closing line
    masked = re.sub(r"\((met|MISSED)\)", "(verdict)", masked)
    masked = re.sub(r"(?m)^(Every goal met\.|Missed: .*)$", "verdict line", masked)
    return re.sub(r"\[ ", "[", re.sub(r" \]", "]", masked))


def test_the_tutorial_marks_every_output_block_the_script_writes():
    held = script.written(script.TUTORIAL.read_text())
    assert list(held) == ["demo", "priors", "diagnose", "exact"]
    assert script.replace(script.TUTORIAL.read_text(), held) == script.TUTORIAL.read_text()


@pytest.mark.parametrize("name", ["demo", "priors", "diagnose", "exact"])
def test_each_output_block_is_what_the_script_writes_from_the_code(tiny, name):
    held = script.written(script.TUTORIAL.read_text())[name]
    assert shape(tiny[name]) == shape(held)


def test_the_tiny_runs_values_are_in_range(tiny):
    """Coverages in [0, 1], MSE and widths positive and finite, R-hat at least about 1, and the
    exact check's LKTD means within 0.05 of the exact ones."""
    demo = [ln.split("|")[1:-1] for ln in tiny["demo"].splitlines() if ln.startswith("| ")]
    assert [r[0].strip() for r in demo[1:]] == ["E", "N", "W", "S", "avg"]
    for row in demo[1:]:
        cov, et, mse, width = (float(x) for x in row[1:5])
        assert 0 <= cov <= 1 and 0 <= et <= 1 and 0 < mse < 1e3 and 0 < width < 1e3
    for row in tiny["priors"].splitlines()[2:]:
        et, mse, width = (float(x) for x in row.split("|")[2:5])
        assert 0 <= et <= 1 and 0 < mse < 1e3 and 0 < width < 1e3
    rhat = [float(ln.split("|")[3]) for ln in tiny["diagnose"].splitlines() if "| all |" in ln]
    assert len(rhat) == 1 and rhat[0] >= 0.99
    means = [re.findall(r"-?\d+\.\d+", ln)[:3] for ln in tiny["exact"].splitlines()[1:3]]
    assert all(abs(float(a) - float(b)) < 0.05 for a, b in zip(*means, strict=True))


def test_blocks_are_replaced_in_place_and_a_missing_marker_is_named():
    text = "a\n<!-- output: demo -->\n```text\nold 1\n```\nb\n<!-- output: priors -->\n| x |\n|---|\nc\n"
    new = script.replace(text, {"demo": "```text\nnew 2\n```\n", "priors": "| y |\n"})
    assert (
        new
        == "a\n<!-- output: demo -->\n```text\nnew 2\n```\nb\n<!-- output: priors -->\n| y |\nc\n"
    )
    with pytest.raises(LookupError, match=r"\['exact'\]"):
        script.replace(text, {"exact": "x"})
