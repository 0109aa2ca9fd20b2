"""The ``lktd`` command."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    """LKTD on a linear-Gaussian regression, against the exact posterior."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import lktd_ppl
    from lktd_ppl.api import model_file
    from lktd_ppl.exact import linear_gaussian_posterior

    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=200)).astype(np.float32)
    model = lktd_ppl.load_model(f"{model_file('linear_regression.py')}:model")
    print(f"LKTD, 4 chains x {args.samples} stages, full batch, on models/linear_regression.py")
    dt = lktd_ppl.sample(
        model,
        {"x": x, "y": y},
        key=jax.random.key(args.seed),
        num_chains=4,
        num_samples=args.samples,
        step_size=5e-4,
    )
    exact = linear_gaussian_posterior(
        jnp.asarray(x), jnp.asarray(y), 1.0, jnp.zeros(3), 100 * jnp.eye(3)
    )
    s = dt.posterior["theta"].values.reshape(-1, 3)
    print(f"{'coef':>5} {'LKTD mean':>10} {'exact mean':>11} {'LKTD sd':>8} {'exact sd':>9}")
    for i in range(3):
        print(
            f"{i:>5} {s[:, i].mean():>10.4f} {float(exact.mean[i]):>11.4f} "
            f"{s[:, i].std():>8.4f} {float(jnp.sqrt(exact.cov[i, i])):>9.4f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lktd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a short LKTD run against an exact posterior")
    demo.add_argument("--samples", type=int, default=2000, help="stages per chain (default 2000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # ModelError and friends: one line, no traceback
        print(f"lktd: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
