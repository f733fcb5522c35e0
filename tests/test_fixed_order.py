"""open_hand.fixed_order: the CPU-independent arithmetic equals numpy/scipy's to round-off."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from handlib.open_hand import fixed_order as fo


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_dot_and_matmul(rng):
    a, b = rng.normal(size=(4, 7)), rng.normal(size=(4, 7))
    np.testing.assert_allclose(fo.dot(a, b), np.einsum("ij,ij->i", a, b), rtol=1e-13)
    A, B = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 5, 6))
    np.testing.assert_allclose(fo.matmul(A, B), A @ B, rtol=1e-12, atol=1e-14)


def test_rodrigues_matches_scipy(rng):
    aa = np.concatenate([rng.normal(size=(20, 3)), np.zeros((1, 3)), [[1e-9, 0, 0], [np.pi, 0, 0]]])
    np.testing.assert_allclose(fo.rodrigues(aa), Rotation.from_rotvec(aa).as_matrix(), atol=1e-14)


def test_solve_matches_numpy_and_pivots(rng):
    A, b = rng.normal(size=(6, 6)), rng.normal(size=6)
    np.testing.assert_allclose(fo.solve(A, b), np.linalg.solve(A, b), rtol=1e-11)
    P = np.array([[0.0, 1.0], [1.0, 0.0]])  # a zero on the diagonal needs a row swap
    np.testing.assert_array_equal(fo.solve(P, np.array([2.0, 3.0])), [3.0, 2.0])
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        fo.solve(np.zeros((2, 2)), np.ones(2))


def test_jacobi_eigh_matches_lapack(rng):
    X = rng.normal(size=(200, 12)) * np.linspace(3.0, 0.1, 12)
    S = np.cov(X.T)
    w, V = fo.eigh(S)
    np.testing.assert_allclose(np.sort(w), np.linalg.eigh(S)[0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(V.T @ V, np.eye(12), atol=1e-13)
    np.testing.assert_allclose(S @ V, V * w, atol=1e-12)
    w2, _ = fo.eigh(np.diag([3.0, 1.0, 2.0]))  # already diagonal: no rotation at all
    np.testing.assert_array_equal(w2, [3.0, 1.0, 2.0])


def test_least_squares_matches_scipy_with_active_bounds():
    def fun(x):  # Rosenbrock as residuals; the box excludes its minimum (1, 1)
        return np.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0], 0.1 * x[2] - 0.3])

    lo, hi = np.array([-2.0, -1.0, -5.0]), np.array([0.8, 2.0, 2.0])
    x, iters = fo.least_squares(fun, np.array([-1.5, 1.5, 0.0]), lo, hi)
    ref = least_squares(fun, [-1.5, 1.5, 0.0], bounds=(lo, hi), xtol=1e-14, ftol=1e-14).x
    np.testing.assert_allclose(x, ref, atol=1e-6)
    assert x[0] == hi[0] and x[2] == hi[2]  # held at the bounds the gradient pushes against
    assert 1 < iters < 200
