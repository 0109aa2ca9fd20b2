"""Studies over many configurations and seeds (the indoor-escape study, spec section 4).

- :mod:`~lktd_ppl.study.runner`: a row (algorithm, preset, overrides, seeds) -> config and train
  function; running a row's pending seeds (batches split over devices and processes, a deadline);
- :mod:`~lktd_ppl.study.data`: per-seed files while a row runs, the row's compact file, loading;
- :mod:`~lktd_ppl.study.aggregate`: Tukey trimming, aggregation, paired ratios, the calibrated
  verdict and its bootstrap;
- :mod:`~lktd_ppl.study.tables`, :mod:`~lktd_ppl.study.plots`: ``table.md``/``table.csv`` with
  the targets, and the plots;
- :mod:`~lktd_ppl.study.command`: the command line a study script hands its rows to.
"""
