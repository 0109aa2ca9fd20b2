"""Linear-feature TD with the full-gradient SARSA measurement (Kalman TD; spec sections 1 and 5):

    r_i = (phi(s_i, a_i) - GAMMA (1 - terminated_i) phi(s'_i, a'_i))^T theta + N(0, NOISE_SD^2)

No stop-gradient, so the model is exactly linear-Gaussian.  Batch keys: ``phi`` (n, d),
``phi_next`` (n, d), ``reward`` (n,), ``terminated`` (n,).
"""

import numpyro
from numpyro import distributions as dist

GAMMA = 0.9
PRIOR_SD = 5.0
NOISE_SD = 1.0


def model(batch):
    phi, phi_next = batch["phi"], batch["phi_next"]
    theta = numpyro.sample("theta", dist.Normal(0.0, PRIOR_SD).expand([phi.shape[1]]).to_event(1))
    design = phi - GAMMA * (1.0 - batch["terminated"])[:, None] * phi_next
    numpyro.sample("reward", dist.Normal(design @ theta, NOISE_SD), obs=batch["reward"])
