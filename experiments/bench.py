"""Every speed claim in one table, Markdown and CSV (experiments/results/bench.md, bench.csv).

Per-step costs of every method, scaling in p and n, the 1M-step escape run cold and warm, chains,
devices, CartPole throughput.

    lktd experiment bench [--tiny] [--only methods,scaling,escape,chains,devices,cartpole,accelerator]

The logic lives in ``lktd_ppl/study/bench.py``; this script only runs it.
"""

import sys

from lktd_ppl.study.bench import main

if __name__ == "__main__":
    sys.exit(main())
