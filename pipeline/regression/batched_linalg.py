"""Linear algebra on many small matrices at once, for the batched solver (`solvers`).

Hand-written because torch has no fast path for K tiny matrices: batched LAPACK (`cholesky_ex`,
`cholesky_solve`) pays a per-matrix call (~120 ns for a 3 × 3 on this CPU, 2.3 ms for 10,000 factor + solve)
that the unrolled version here spends on whole columns of K entries (0.6 ms), and torch's reductions over a
short last dimension run ~10× slower than the matrix-vector products used below.
"""

from __future__ import annotations

import torch

TINY = 1e-300
UNROLL_P, UNROLL_K = 4, 512  # unrolled Cholesky up to 4 parameters, from 512 problems on (`DampedCholesky`)


# ------------------------------------------------------------------------------------------- row reductions
def row_sum(x):
    """Sums over the last dimension as x @ 1: 14 µs against torch.sum's 147 µs for 10,000 × 3 (one thread)."""
    return x @ x.new_ones(x.shape[-1])


def row_norm(x):
    """Euclidean row norms; torch's overflow-safe norm where the squares overflow."""
    s = row_sum(x * x)
    return s.sqrt() if bool(torch.isfinite(s).all()) else torch.linalg.vector_norm(x, dim=-1)


def row_finite(x):
    """Rows with every entry finite (a sum of finite numbers is finite but for overflow, a false alarm)."""
    return torch.isfinite(row_sum(x))


def diagonal(A):
    """diag(A) of (K, p, p) as a contiguous (K, p): elementwise math on the strided view runs ~5× slower."""
    return torch.diagonal(A, dim1=-2, dim2=-1).contiguous()


# --------------------------------------------------------------------------------------------- linear algebra
class DampedCholesky:
    """Cholesky factor of A + λ·diag(d) for K problems, Jacobi-equilibrated (unit diagonal) first.

    `step(g)` solves for h = -(A + λ·diag(d))⁻¹g. With p ≤ `UNROLL_P` parameters and at least
    `UNROLL_K` problems the factorisation and the triangular solves run unrolled over the matrix entries,
    each an elementwise op on K contiguous numbers (for p = 3 about 60 ops: ~6× faster than LAPACK's
    per-matrix calls on 10,000 problems); otherwise batched LAPACK (`cholesky_ex`, `cholesky_solve`). Both
    flag as not ok a problem whose matrix is not numerically positive definite.
    """

    def __init__(self, A, lam, d):
        K, p = A.shape[0], A.shape[-1]
        self.unrolled = p <= UNROLL_P and K >= UNROLL_K
        if self.unrolled:  # entries as contiguous (K,) rows: (p, p, K) and (p, K) layouts
            M = A.permute(1, 2, 0).contiguous()
            diag = torch.diagonal(M).T + lam * d.T
            s = torch.rsqrt(diag.clamp_min(TINY))
            self.L, self.inv, self.ok = _cholesky_unrolled(M, diag, s)
            self.s = s
            return
        M = A + torch.diag_embed(lam[:, None] * d)
        self.s = torch.rsqrt(torch.diagonal(M, dim1=-2, dim2=-1).clamp_min(TINY))
        self.L, info = torch.linalg.cholesky_ex(M * (self.s[:, :, None] * self.s[:, None, :]))
        self.ok = info == 0

    def step(self, g, ok=None):
        """(h, ok): h = -(A + λ·diag(d))⁻¹g, zero where the factor failed or h is not finite."""
        if self.unrolled:  # back to the (K, p) layout, contiguous: later ops on a transposed view run slower
            h = torch.stack(_solve_unrolled(self.L, self.inv, -g.T.contiguous() * self.s), -1) * self.s.T
        else:
            h = torch.cholesky_solve((-g * self.s).unsqueeze(-1), self.L).squeeze(-1) * self.s
        ok = (self.ok if ok is None else ok & self.ok) & row_finite(h)
        return torch.where(ok[:, None], h, torch.zeros_like(h)), ok

    def inverse(self):
        """((A + λ·diag(d))⁻¹, ok) for every problem; ok False where the factor failed or it is not finite."""
        if self.unrolled:
            p, K = self.s.shape
            eye = torch.eye(p, dtype=self.s.dtype, device=self.s.device)
            cols = [torch.stack(_solve_unrolled(self.L, self.inv, eye[:, k, None].expand(p, K))) for k in range(p)]
            inv = (torch.stack(cols, 1) * self.s[:, None, :] * self.s[None]).permute(2, 0, 1)
        else:
            eye = torch.eye(self.L.shape[-1], dtype=self.L.dtype, device=self.L.device)
            L = torch.where(self.ok[:, None, None], self.L, eye)  # a failed factor may hold zeros: no inverse
            inv = torch.cholesky_inverse(L) * (self.s[:, :, None] * self.s[:, None, :])
        return inv, self.ok & torch.isfinite(inv).flatten(1).all(-1)


def _cholesky_unrolled(M, diag, s):
    """Cholesky of the equilibrated s_i·M_ij·s_j (M (p, p, K) with `diag` on its diagonal), entry by entry:
    L as a dict (i, j) -> (K,), the reciprocals of its diagonal, and ok."""
    p = M.shape[0]
    L, inv, ok = {}, [], None
    for j in range(p):
        t = diag[j] * s[j] * s[j]
        for k in range(j):
            t = t - L[j, k] * L[j, k]
        ok = t > 0 if ok is None else ok & (t > 0)
        inv.append(torch.rsqrt(t.clamp_min(TINY)))
        for i in range(j + 1, p):
            t = M[i, j] * (s[i] * s[j])
            for k in range(j):
                t = t - L[i, k] * L[j, k]
            L[i, j] = t * inv[j]
    return L, inv, ok


def _solve_unrolled(L, inv, b):
    """x with L·Lᵀ·x = b, b (p, K) and x a list of p (K,) entries, by forward then back substitution."""
    p = b.shape[0]
    z = []
    for i in range(p):
        t = b[i]
        for k in range(i):
            t = t - L[i, k] * z[k]
        z.append(t * inv[i])
    x = [None] * p
    for i in reversed(range(p)):
        t = z[i]
        for k in range(i + 1, p):
            t = t - L[k, i] * x[k]
        x[i] = t * inv[i]
    return x
