"""The two posterior families of VAEPP's code (layers/posteriors.py): each log-density integrates to 1 on a
fine grid, the truncated draws stay within +-2 sigma with the truncated normal's closed-form variance, and
the renormalising mass is erf(2 / sqrt 2)."""

import math

import numpy as np
import pytest

from layers.posteriors import LOG_TRUNCATED_MASS, log_posterior_density, sample_posterior
from tests.helpers import _np, _t


@pytest.mark.parametrize("family", ["gaussian", "truncated_normal"])
def test_posterior_density_integrates_to_one_and_draws_stay_in_its_support(family):
    mean, log_var = 0.4, math.log(0.3 ** 2)
    grid = np.linspace(mean - 3.0, mean + 3.0, 600_001)[:, None]
    m, v = _t(np.full_like(grid, mean)), _t(np.full_like(grid, log_var))
    p = np.exp(_np(log_posterior_density(_t(grid), m, v, family)))
    np.testing.assert_allclose(np.trapezoid(p, grid[:, 0]), 1.0, atol=2e-4)
    z = _np(sample_posterior(_t(np.full((20_000, 2), mean)), _t(np.full((20_000, 2), log_var)), family, seed=3))
    t = (z - mean) / 0.3
    if family == "truncated_normal":
        assert np.abs(t).max() <= 2.0 + 1e-5
        np.testing.assert_allclose(LOG_TRUNCATED_MASS, math.log(0.9544997361), rtol=1e-9)
        # the truncated standard normal's variance: 1 - 2 c phi(c) / (2 Phi(c) - 1), c = 2
        c = 2.0
        var = 1.0 - 2 * c * math.exp(-c * c / 2) / math.sqrt(2 * math.pi) / math.erf(c / math.sqrt(2))
        np.testing.assert_allclose(t.var(), var, rtol=0.03)
    else:
        assert np.abs(t).max() > 3.0
        np.testing.assert_allclose(t.var(), 1.0, rtol=0.03)
