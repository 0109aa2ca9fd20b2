"""Static linear-Gaussian regression: y = X theta + N(0, NOISE_SD^2), theta ~ N(0, PRIOR_SD^2 I).

Batch keys: ``x`` (n, d), ``y`` (n,).  The posterior is known in closed form
(``lktd_ppl.exact.linear_gaussian_posterior``).  Copy this file to change the prior or the noise.
"""

import numpyro
from numpyro import distributions as dist

PRIOR_SD = 10.0
NOISE_SD = 1.0


def model(batch):
    x = batch["x"]
    theta = numpyro.sample("theta", dist.Normal(0.0, PRIOR_SD).expand([x.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(x @ theta, NOISE_SD), obs=batch["y"])
