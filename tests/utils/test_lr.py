"""The shared learning-rate formulas, against hand-computed values of nnU-Net's / the nnssl fork's."""

from __future__ import annotations

import pytest

from mae3d.utils.lr import POLY_EXPONENT, linear_warmup, poly


def test_linear_warmup_reaches_the_peak_in_its_last_epoch():
    assert [linear_warmup(1.0, e, length=4) for e in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert linear_warmup(2.0, 5, start=4, length=4) == 1.0  # offset: second epoch of a warm-up from 4
    with pytest.raises(ValueError, match="warm-up length must be >= 1, got 0"):
        linear_warmup(1.0, 0, length=0)


def test_poly_is_nnunets_polylr_with_an_offset():
    assert POLY_EXPONENT == 0.9
    assert poly(1e-2, 0, end=1000) == 1e-2
    assert poly(1e-2, 500, end=1000) == pytest.approx(1e-2 * 0.5 ** 0.9)
    assert poly(1e-2, 999, end=1000) == pytest.approx(1e-2 * 0.001 ** 0.9)
    assert poly(1.0, 6, start=5, end=7, exponent=1.0) == 0.5
    assert poly(1.0, 9, start=5, end=7) == 0.0  # past its end: 0, not a complex number
    assert poly(1.0, 7, start=5, end=5) == 0.0  # an empty decay
