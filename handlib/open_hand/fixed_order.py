"""Arithmetic with the same bits on every x86-64 CPU, and why OpenHand's pose prior needs it.

numpy's ``@``, ``np.cov`` and ``np.linalg``, and scipy's optimisers, call BLAS/LAPACK, whose kernels
are picked per CPU at run time (OpenBLAS: Haswell, Sandybridge, Prescott, …; ``OPENBLAS_CORETYPE``
switches them). Kernels differ in summation order and in the use of fused multiply-add, so results
agree only to round-off. Most of OpenHand's build is insensitive to that: its arrays are stored as
float32, far coarser than 1e-16. The pose prior is not: a bounded least-squares solve can take a
slightly different path to its tolerance, and the eigenvectors of a covariance with close
eigenvalues turn by round-off / gap. The shipped asset rebuilt on another CPU differed by 2.4e-4
in ``hands_components`` (issue #13).

Everything here uses only elementwise IEEE-754 operations (+ − × ÷ and √, each correctly rounded,
never fused) and numpy reductions along an axis, whose order is fixed by numpy's code, not by the
CPU; sines and cosines come from the C library one scalar at a time. So each function returns the
same bits on any CPU, BLAS kernel, thread count and SIMD width. The sizes are tiny (45 × 45 at
most): clarity over speed.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_k a[..., k] b[..., k] (broadcasting), a fixed-order replacement for ``a @ b`` on vectors."""
    return (a * b).sum(-1)


def matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(..., n, k) × (..., k, m) → (..., n, m), a fixed-order replacement for ``A @ B``."""
    return (A[..., :, :, None] * B[..., None, :, :]).sum(-2)


def rodrigues(aa: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle → (N, 3, 3) rotation matrices: R = I + sin θ K + (1 − cos θ) K²."""
    aa = np.asarray(aa, np.float64).reshape(-1, 3)
    theta = np.sqrt((aa * aa).sum(1))
    safe = np.where(theta > 0, theta, 1.0)
    k = aa / safe[:, None]
    sin = np.array([math.sin(t) for t in theta.tolist()])
    cos = np.array([math.cos(t) for t in theta.tolist()])
    K = np.zeros((len(aa), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K = K - K.transpose(0, 2, 1)
    return np.eye(3) + sin[:, None, None] * K + (1.0 - cos)[:, None, None] * matmul(K, K)


def solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with A x = b for a small square A: Gaussian elimination with partial pivoting."""
    M = np.concatenate([np.array(A, np.float64), np.array(b, np.float64).reshape(-1, 1)], 1)
    n = len(M)
    for k in range(n):
        p = k + int(np.argmax(np.abs(M[k:, k])))
        M[[k, p]] = M[[p, k]]
        if M[k, k] == 0.0:
            raise np.linalg.LinAlgError("solve: singular matrix")
        M[k + 1:] -= (M[k + 1:, k] / M[k, k])[:, None] * M[k]
    x = np.zeros(n)
    for k in range(n - 1, -1, -1):
        x[k] = (M[k, n] - dot(M[k, k + 1:n], x[k + 1:])) / M[k, k]
    return x


def eigh(S: np.ndarray, sweeps: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations.

    Each rotation zeroes one off-diagonal pair (p, q) exactly as in Golub & Van Loan, Alg. 8.5.2;
    sweeps repeat until the off-diagonal mass is below 1e-15 of the whole.

    Args:
        S: (n, n) symmetric.
    Returns:
        eigenvalues (n,) unsorted and eigenvectors (n, n) as columns, S V = V diag(w).
    """
    A = np.array(S, np.float64)
    n = len(A)
    V = np.eye(n)
    total = math.sqrt(float((A * A).sum()))
    for _ in range(sweeps):
        off = math.sqrt(2.0 * float((np.triu(A, 1) ** 2).sum()))
        if off <= 1e-15 * total:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = float(A[p, q])
                if abs(apq) < 1e-300:
                    continue
                tau = (float(A[q, q]) - float(A[p, p])) / (2.0 * apq)
                t = math.copysign(1.0, tau) / (abs(tau) + math.sqrt(1.0 + tau * tau))
                c = 1.0 / math.sqrt(1.0 + t * t)
                s = t * c
                _rotate(A, V, p, q, c, s)
    return np.diag(A).copy(), V


def _rotate(A: np.ndarray, V: np.ndarray, p: int, q: int, c: float, s: float) -> None:
    """A ← Jᵀ A J and V ← V J for the Givens rotation J in the (p, q) plane (in place)."""
    ap, aq = A[:, p].copy(), A[:, q].copy()
    A[:, p], A[:, q] = c * ap - s * aq, s * ap + c * aq
    ap, aq = A[p].copy(), A[q].copy()
    A[p], A[q] = c * ap - s * aq, s * ap + c * aq
    vp, vq = V[:, p].copy(), V[:, q].copy()
    V[:, p], V[:, q] = c * vp - s * vq, s * vp + c * vq


def least_squares(fun: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray, iterations: int = 200, xtol: float = 1e-10) -> tuple[np.ndarray, int]:
    """Box-constrained Levenberg–Marquardt: min ½‖fun(x)‖² with lo ≤ x ≤ hi.

    Central-difference Jacobian, Marquardt's diagonal damping; coordinates at a bound that the
    gradient pushes outward are held (an active set), the others' step is projected onto the box.
    Stops when a step moves no coordinate by more than ``xtol`` or when no damping lowers the cost.

    Returns:
        x (n,) and the number of iterations taken.
    """
    x = np.clip(np.asarray(x0, np.float64), lo, hi)
    r = fun(x)
    cost, lam = dot(r, r), 1e-3
    for it in range(1, iterations + 1):
        Jm = _jacobian(fun, x, lo, hi)
        JtJ, g = matmul(Jm.T, Jm), matmul(Jm.T, r[:, None])[:, 0]
        # Coordinates held at a bound by the gradient stay there; the rest take the damped step.
        free = np.flatnonzero(~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))))
        H = JtJ[np.ix_(free, free)]
        while lam < 1e12:
            step = np.zeros_like(x)
            step[free] = solve(H + lam * np.diag(np.diag(H) + 1e-12), -g[free])
            x_new = np.clip(x + step, lo, hi)
            r_new = fun(x_new)
            if dot(r_new, r_new) < cost:
                break
            lam *= 4.0
        else:
            return x, it
        moved = float(np.abs(x_new - x).max())
        x, r, cost, lam = x_new, r_new, dot(r_new, r_new), max(lam / 3.0, 1e-12)
        if moved <= xtol:
            return x, it
    return x, iterations


def _jacobian(fun, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """(m, n) central differences of ``fun`` at x, one-sided at the box."""
    cols = []
    for k in range(len(x)):
        a, b = x.copy(), x.copy()
        a[k], b[k] = max(x[k] - h, lo[k]), min(x[k] + h, hi[k])
        cols.append((fun(b) - fun(a)) / (b[k] - a[k]))
    return np.stack(cols, 1)
