"""What ``lktd demo`` says after its table: the goals a calibrated posterior meets over the last
window, met or missed with the measured value, and the paper's LKTD row beside it.

The goals: each action's equal-tailed 95% coverage within 0.90-0.99, each action's 50% level
(equal-tailed coverage at nominal 50%) within 0.35-0.65, and the MSE averaged over the actions at
most 2e-3.  The paper's numbers are its trimmed means over 100 runs of 1M steps
(:data:`lktd_ppl.study.tables.PAPER`); a demo's are one run's last window, untrimmed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lktd_ppl.names import ACTION_NAMES

ET95_BAND = (0.90, 0.99)
LEVEL50_BAND = (0.35, 0.65)
MSE_MAX = 2e-3
# the paper's LKTD row (N = 10 000, one chain, 1M steps), E/N/W/S: its own coverage measure (a 95%
# interval centred at the latest sample) and MSE
PAPER_COVERAGE = (0.946, 0.945, 0.850, 0.848)
PAPER_MSE = (2.0e-4, 2.2e-4, 2.9e-3, 2.8e-3)


def _per_action(means: Mapping[str, float], name: str) -> np.ndarray:
    return np.array([float(means[f"{name}_{a}"]) for a in ACTION_NAMES])


def _slash(v: np.ndarray, spec: str = ".3f") -> str:
    return "/".join(format(float(x), spec) for x in v)


def goals(means: Mapping[str, float]) -> list[tuple[str, str, bool]]:
    """(goal, measured value, met) for the three goals, from the last window's means (metric name
    ``{metric}_{action}`` -> value, :func:`lktd_ppl.run_folder.last_window_means`)."""
    et95 = _per_action(means, "coverage_equal_tailed")
    level50 = _per_action(means, "calibration50")
    mse = float(np.mean(_per_action(means, "mse")))

    def inside(v: np.ndarray, band: tuple[float, float]) -> bool:
        return bool(np.all(np.isfinite(v)) and np.all((v >= band[0]) & (v <= band[1])))

    return [
        (
            f"equal-tailed 95% coverage within {ET95_BAND[0]:.2f}-{ET95_BAND[1]:.2f} on every action",
            _slash(et95),
            inside(et95, ET95_BAND),
        ),
        (
            f"50% level within {LEVEL50_BAND[0]:.2f}-{LEVEL50_BAND[1]:.2f} on every action",
            _slash(level50),
            inside(level50, LEVEL50_BAND),
        ),
        (f"MSE averaged over actions at most {MSE_MAX:.0e}", f"{mse:.1e}", bool(mse <= MSE_MAX)),
    ]


def verdict(means: Mapping[str, float]) -> str:
    """The lines the demo prints under its table: what the numbers mean, each goal met or
    missed with its value, and the paper's LKTD row for comparison."""
    checks = goals(means)
    missed = [g for g, _, ok in checks if not ok]
    coverage = _per_action(means, "coverage")
    width = _per_action(means, "width")
    lines = [
        "What this shows: the posterior of Q(s, a) that LKTD sampled while it learned, scored "
        "against the exact Q of the room: a calibrated 95% interval holds the truth 95% of the "
        "time, a 50% interval half the time (actions E/N/W/S).",
    ]
    for goal, value, ok in checks:
        lines.append(f"- {goal}: {value} ({'met' if ok else 'MISSED'})")
    lines.append(f"- interval width (95%, mean over legal cells): {_slash(width)}")
    lines.append(
        f"Against the paper's LKTD (one chain, N = 10 000, 1M steps, trimmed mean of 100 runs): "
        f"its coverage measure {_slash(np.array(PAPER_COVERAGE))} here "
        f"{_slash(coverage)} (calibrated: about 0.834), MSE "
        f"{np.mean(PAPER_MSE):.1e} here {float(np.mean(_per_action(means, 'mse'))):.1e}."
    )
    lines.append(
        "Every goal met." if not missed else f"Missed: {'; '.join(missed)} (values above)."
    )
    return "\n".join(lines) + "\n"
