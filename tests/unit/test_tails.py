"""The fast tails equal scipy.stats' own, over the ranges the campaign stage asks for."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import binom, hypergeom

from detectors.tails import binomial_sf, hypergeometric_sf


def test_the_binomial_tail_is_scipys() -> None:
    for n, p in itertools.product((1, 2, 7, 40, 300, 5000), (1e-9, 0.001, 0.05, 0.3, 0.9, 1.0)):
        for k in sorted({-3, -1, 0, 1, n // 3, n // 2, n - 1, n, n + 2}):
            assert np.isclose(binomial_sf(k, n, p), binom.sf(k, n, p), rtol=1e-9,
                              atol=1e-300), (k, n, p)


def test_the_hypergeometric_tail_is_scipys() -> None:
    for population, marked, drawn in [(10, 3, 4), (50, 10, 10), (800, 12, 25), (5000, 40, 300),
                                      (5000, 300, 40), (20, 15, 12), (30, 30, 5), (9, 2, 9)]:
        for k in range(-2, min(marked, drawn) + 2):
            ours = hypergeometric_sf(k, population, marked, drawn)
            theirs = hypergeom.sf(k, population, marked, drawn)
            assert np.isclose(ours, theirs, rtol=1e-9, atol=1e-300), \
                (k, population, marked, drawn, ours, theirs)
