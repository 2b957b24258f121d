"""Moment states: merge algebra, chunking invariance, and finalization against plain numpy oracles."""

import numpy as np
import pytest

from conftest import planted, population_tensor, relu_net
from stream_relu.hermite import hermite_e
from stream_relu.moments import (
    AffineFit,
    GaussPlan,
    JointMoments,
    MomentState,
    Normality,
    SubspacePlan,
    affine_least_squares,
    finalize_gauss,
    finalize_subspace,
    gauss_chunk,
    joint_chunk,
    normality_statistics,
    split_joint,
    subspace_chunk,
)
from stream_relu.recovery import subspace_basis


def _data(n=4000, d=5, m=3, seed=0, shift=True):
    rng = np.random.default_rng(seed)
    a, W, b = planted(d, m, seed)
    L = np.tril(rng.normal(size=(d, d))) * 0.3 + np.eye(d)
    x = rng.standard_normal((n, d)) @ L.T + (0.5 if shift else 0.0)
    y = relu_net(x, a, W, b) + 0.1 * rng.standard_normal(n)
    return x, y


def _chunks(x, y, bounds, fn, *args):
    return [fn(x[lo:hi], y[lo:hi], *args) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _assert_states_close(s1, s2, rtol=1e-12):
    # Rounding of a sum of n terms of size O(1) is about n * eps, relative to the
    # terms (not to the sum, which may cancel to ~0): hence the count in atol.
    assert s1.count == s2.count and s1.sums.keys() == s2.sums.keys()
    for k in s1.sums:
        scale = max(np.abs(s2.sums[k]).max(), s2.count)
        np.testing.assert_allclose(s1.sums[k], s2.sums[k], rtol=rtol, atol=rtol * scale)


def test_merge_identity_commutativity_associativity():
    x, y = _data()
    s = _chunks(x, y, [0, 1000, 2500, 4000], gauss_chunk)
    assert (0 + s[0]) is s[0] and (s[0] + 0) is s[0]
    assert s[0] + s[1] == s[1] + s[0]  # IEEE addition is commutative: bitwise equal
    _assert_states_close((s[0] + s[1]) + s[2], s[0] + (s[1] + s[2]), rtol=1e-14)
    assert sum(s).count == 4000


def test_merge_refuses_other_pass():
    x, y = _data()
    g = gauss_chunk(x, y)
    other = MomentState("subspace", "k", 1, {"r2": np.zeros(())})
    with pytest.raises(ValueError, match="cannot merge"):
        g + other


def test_gauss_state_against_plain_numpy_loop():
    # Oracle: per-row accumulation in a Python loop over rows (float64).
    x, y = _data(n=300)
    state = gauss_chunk(x.astype(np.float32), y.astype(np.float32))
    x32, y32 = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    xx = np.zeros((5, 5))
    yxx = np.zeros((5, 5))
    abs_yxx = np.zeros((5, 5))
    for i in range(300):
        xx += np.outer(x32[i], x32[i])
        yxx += y32[i] * np.outer(x32[i], x32[i])
        abs_yxx += abs(y32[i]) * np.abs(np.outer(x32[i], x32[i]))
    # float32 products within a block, float64 across blocks: the error of a
    # sum of b rounded products is at most (b + c) u sum|terms| (u = 2^-24;
    # c counts the roundings of the sqrt|y| scaling), with b <= 300 rows here.
    bound = (300 + 10) * 2.0**-24
    np.testing.assert_array_less(np.abs(state.sums["xx"] - xx), bound * np.abs(x32).T @ np.abs(x32) + 1e-300)
    np.testing.assert_array_less(np.abs(state.sums["yxx"] - yxx), bound * abs_yxx + 1e-300)
    yx_abs = (np.abs(x32) * np.abs(y32)[:, None]).sum(0)
    np.testing.assert_array_less(np.abs(state.sums["yx"] - (x32 * y32[:, None]).sum(0)), bound * yx_abs + 1e-300)
    # and the float32 sums are not bitwise the float64 ones (the fast path ran)
    assert not np.array_equal(state.sums["xx"], xx)
    assert state.sums["xx"].dtype == np.float64


@pytest.mark.parametrize("bounds", [[0, 4000], [0, 1, 2, 4000], [0, 1333, 2666, 4000], [0, 999, 1000, 3999, 4000]])
def test_chunking_invariance(bounds):
    # Different chunkings agree to float64 rounding (not bitwise: summation order differs).
    x, y = _data()
    ref = gauss_chunk(x, y)
    _assert_states_close(sum(_chunks(x, y, bounds, gauss_chunk)), ref)
    g = finalize_gauss(ref)
    plan = SubspacePlan.build(g, subspace_basis(g.T2, 3))
    ref2 = subspace_chunk(x, y, plan)
    _assert_states_close(sum(_chunks(x, y, bounds, subspace_chunk, plan)), ref2, rtol=1e-11)


def test_finalize_gauss_against_direct_whitening():
    # Oracle: whiten with numpy's mean/cov and average y He_k(z) directly.
    x, y = _data(n=5000)
    g = finalize_gauss(gauss_chunk(x, y))
    mu = x.mean(0)
    C = np.cov(x.T, bias=True)
    e, Q = np.linalg.eigh(C)
    z = (x - mu) @ (Q / np.sqrt(e)) @ Q.T
    np.testing.assert_allclose(g.mean, mu, atol=1e-12)
    np.testing.assert_allclose(g.cov, C, atol=1e-10)
    np.testing.assert_allclose(g.T0, y.mean(), rtol=1e-12)
    np.testing.assert_allclose(g.T1, (y[:, None] * z).mean(0), atol=1e-10)
    T2 = (z * y[:, None]).T @ z / len(y) - y.mean() * np.eye(5)
    np.testing.assert_allclose(g.T2, T2, atol=1e-9)
    np.testing.assert_allclose(g.var_y, y.var(), rtol=1e-10)


def test_finalize_gauss_refuses_singular_covariance():
    x, y = _data(n=500)
    x[:, 2] = 2 * x[:, 1]
    with pytest.raises(ValueError, match="singular"):
        finalize_gauss(gauss_chunk(x, y))


def test_subspace_tensors_against_one_dimensional_hermite():
    # Oracle: for a unit vector u, He_k(v)[u, ..., u] = He_k(<u, v>), a 1-D polynomial.
    x, y = _data(n=3000, seed=3)
    g = finalize_gauss(gauss_chunk(x, y))
    U = subspace_basis(g.T2, 3)
    plan = SubspacePlan.build(g, U)
    sub = finalize_subspace(subspace_chunk(x, y, plan), plan, g)
    z = (x - g.mean) @ g.whitener
    v = z @ sub.basis
    # the control variates are fixed functions defined by the plan (its centre is rounded to float32 values)
    vp = (x - plan.mean) @ plan.proj
    r2 = y - plan.T0 - (x - plan.mean) @ plan.lin
    r3 = r2 - 0.5 * (np.einsum("ni,ij,nj->n", vp, plan.M2, vp) - np.trace(plan.M2))
    np.testing.assert_allclose(sub.basis, U, atol=1e-6)  # same rows: the plan's frame up to the rounded centre
    rng = np.random.default_rng(1)
    for _ in range(5):
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        t = v @ u
        np.testing.assert_allclose(u @ sub.M2 @ u, np.mean(r2 * hermite_e(2, t)), atol=1e-10)
        np.testing.assert_allclose(np.einsum("ijk,i,j,k->", sub.T3, u, u, u), np.mean(r3 * hermite_e(3, t)), atol=1e-10)
        np.testing.assert_allclose(
            np.einsum("ijkl,i,j,k,l->", sub.T4, u, u, u, u), np.mean(r3 * hermite_e(4, t)), atol=1e-10
        )
    T2U = (z * r2[:, None]).T @ v / len(y) - r2.mean() * sub.basis
    np.testing.assert_allclose(sub.T2U, T2U, atol=1e-10)
    # full symmetry of the reconstructed tensors
    np.testing.assert_allclose(sub.T3, sub.T3.transpose(1, 0, 2), atol=1e-14)
    np.testing.assert_allclose(sub.T4, sub.T4.transpose(0, 2, 1, 3), atol=1e-14)
    np.testing.assert_allclose(sub.T4, sub.T4.transpose(3, 1, 2, 0), atol=1e-14)


def test_slice_formulas_against_monte_carlo():
    # T_k = sum a c_k(b) w^(x)k (population) vs the estimators at n = 4e5.
    # Entry std of E[y He_k] is about sqrt(k! E[y^2] / n) ~ 5e-3; tolerance 6 sigma.
    d, m, n = 4, 2, 400_000
    a, W, b = planted(d, m, 7)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, d))
    y = relu_net(x, a, W, b)
    g = finalize_gauss(sum(gauss_chunk(x[i : i + 50_000], y[i : i + 50_000]) for i in range(0, n, 50_000)))
    tol = 6 * np.sqrt(2 * np.mean(y**2) / n)
    np.testing.assert_allclose(g.T2, population_tensor(a, W, b, 2), atol=tol)
    np.testing.assert_allclose(g.T1, population_tensor(a, W, b, 1), atol=tol)
    plan = SubspacePlan.build(g, np.linalg.qr(W)[0])
    sub = finalize_subspace(subspace_chunk(x, y, plan), plan, g)
    V = plan.basis.T @ W
    for k, T in ((3, sub.T3), (4, sub.T4)):
        pop = population_tensor(a, V, b, k)
        tol_k = 6 * np.sqrt({3: 6, 4: 24}[k] * max(sub.var_r3, 1e-3) / n)
        np.testing.assert_allclose(T, pop, atol=tol_k)


def test_state_round_trip_arrays():
    x, y = _data(n=100)
    s = gauss_chunk(x, y)
    assert MomentState.from_arrays(s.kind, s.key, s.to_arrays()) == s


def _direct_tensors(x, y, g, plan, basis):
    """Plain numpy oracle: the Hermite tensors of the plan's control variates in the frame ``basis``."""
    z = (x - g.mean) @ g.whitener
    v = z @ basis
    vp = (x - plan.mean) @ plan.proj
    r2 = y - plan.T0 - (x - plan.mean) @ plan.lin
    r3 = r2 - 0.5 * (np.einsum("ni,ij,nj->n", vp, plan.M2, vp) - np.trace(plan.M2))
    n, m = v.shape
    eye = np.eye(m)
    M2 = (v * r2[:, None]).T @ v / n - r2.mean() * eye
    T2U = (z * r2[:, None]).T @ v / n - r2.mean() * basis
    F3 = np.einsum("n,ni,nj,nk->ijk", r3, v, v, v) / n
    e1 = r3 @ v / n
    T3 = F3 - np.einsum("i,jk->ijk", e1, eye) - np.einsum("j,ik->ijk", e1, eye) - np.einsum("k,ij->ijk", e1, eye)
    return M2, T2U, T3


def test_pilot_plan_is_moved_to_the_full_frame():
    # A plan from the first 500 rows (another centre and whitening) summed over
    # all rows: finalize_subspace must give the tensors of the full rows' frame
    # exactly (an algebraic identity; float64 data, so rounding only).
    x, y = _data(n=6000, d=5, m=3, seed=4)
    pilot = finalize_gauss(gauss_chunk(x[:500], y[:500]))
    plan = SubspacePlan.build(pilot, subspace_basis(pilot.T2, 3))
    g = finalize_gauss(gauss_chunk(x, y))
    sub = finalize_subspace(subspace_chunk(x, y, plan), plan, g)
    np.testing.assert_allclose(sub.basis.T @ sub.basis, np.eye(3), atol=1e-12)
    z = (x - g.mean) @ g.whitener
    v = z @ sub.basis
    np.testing.assert_allclose(v.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(v.T @ v / len(v), np.eye(3), atol=1e-12)
    M2, T2U, T3 = _direct_tensors(x, y, g, plan, sub.basis)
    np.testing.assert_allclose(sub.M2, M2, atol=1e-11)
    np.testing.assert_allclose(sub.T2U, T2U, atol=1e-11)
    np.testing.assert_allclose(sub.T3, T3, atol=1e-11)
    u = np.array([0.6, -0.48, 0.64])
    t = v @ u
    vp = (x - plan.mean) @ plan.proj
    r3 = y - plan.T0 - (x - plan.mean) @ plan.lin
    r3 = r3 - 0.5 * (np.einsum("ni,ij,nj->n", vp, plan.M2, vp) - np.trace(plan.M2))
    np.testing.assert_allclose(np.einsum("ijkl,i,j,k,l->", sub.T4, u, u, u, u), np.mean(r3 * hermite_e(4, t)), atol=1e-11)


def test_joint_chunk_splits_into_both_passes():
    x, y = _data(n=5000, seed=5)
    g = finalize_gauss(gauss_chunk(x, y))
    plan = SubspacePlan.build(g, subspace_basis(g.T2, 3))
    parts = split_joint(joint_chunk(x, y, plan), plan)
    assert isinstance(parts, JointMoments)
    gs, ss = parts  # still unpacks as the 2-tuple (gauss, subspace)
    assert (gs, ss) == (parts.gauss, parts.subspace) and (gs.kind, ss.kind) == ("gauss", "subspace")
    ref = gauss_chunk(x, y, plan.gauss_plan)
    assert float(gs.sums["norm_rows"]) == 0  # a joint pass leaves the normality check to its pilot
    for k in ("p1", "p2", "p3", "p4", "norm_rows"):
        gs.sums[k] = ref.sums[k]
    _assert_states_close(gs, ref)
    _assert_states_close(ss, subspace_chunk(x, y, plan))
    g2 = finalize_gauss(gs, plan.gauss_plan)
    np.testing.assert_allclose(g2.mean, g.mean, atol=1e-12)
    np.testing.assert_allclose(g2.T2, g.T2, atol=1e-12)
    assert g2.T0 == pytest.approx(g.T0, abs=1e-12)


def test_float32_subspace_sums_agree_with_float64():
    # Same float32 values, products in float32 vs float64: the relative error of
    # a block's sums is about sqrt(b) u (b <= 4096 rows, u = 6e-8), ~4e-6 of
    # the terms' scale; 2e-5 of the largest entry allows 5x that.
    x, y = _data(n=20_000, seed=6)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    g = finalize_gauss(gauss_chunk(x32.astype(np.float64), y32.astype(np.float64)))
    plan = SubspacePlan.build(g, subspace_basis(g.T2, 3))
    lo, hi = subspace_chunk(x32, y32, plan), subspace_chunk(x32.astype(np.float64), y32.astype(np.float64), plan)
    for k in hi.sums:
        scale = np.abs(hi.sums[k]).max()
        np.testing.assert_allclose(lo.sums[k], hi.sums[k], atol=2e-5 * scale)


def test_shift_keeps_float32_covariance_of_offset_data():
    # Inputs centred at 1e4 with unit spread, stored as float32: without the
    # shift the float32 products (~1e8) would leave errors of order 1 in the
    # covariance; with a shift from a sample the covariance agrees with the
    # float64 computation on the same float32 values to 1e-5.
    rng = np.random.default_rng(8)
    x = (1e4 + rng.standard_normal((20_000, 4))).astype(np.float32)
    y = (x[:, 0] - 1e4 + 100.0).astype(np.float32)
    plan = GaussPlan.from_sample(x[:1000], y[:1000])
    g32 = finalize_gauss(gauss_chunk(x, y, plan), plan)
    g64 = finalize_gauss(gauss_chunk(x.astype(np.float64), y.astype(np.float64)))
    np.testing.assert_allclose(g32.cov, g64.cov, atol=1e-5)
    np.testing.assert_allclose(g32.mean, g64.mean, rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(g32.T1, g64.T1, atol=1e-5)
    with pytest.raises(ValueError, match="was not summed with the shift"):
        finalize_gauss(gauss_chunk(x, y, plan))


def test_float32_overflow_falls_back_to_float64():
    x = np.full((10, 2), 1e10, dtype=np.float32)
    x[:, 1] = np.arange(10, dtype=np.float32) * 1e9
    y = np.ones(10, dtype=np.float32)
    s = gauss_chunk(x, y)
    assert all(np.isfinite(v).all() for v in s.sums.values())
    assert float(s.sums["lowp_rows"]) == 0.0


def test_normality_statistics_is_a_dataclass_and_gauss_keeps_a_dict():
    x, y = _data(n=2000)
    state = gauss_chunk(x, y)
    stats = normality_statistics(state)
    assert isinstance(stats, Normality)
    assert stats["max_z"] == stats.max_z and stats.rows == 2000
    assert finalize_gauss(state).normality == stats.as_dict()  # callers index it and serialize it as a dict


def test_affine_least_squares_against_lstsq():
    # Oracle: numpy's least squares on the rows [x, 1].  The moment fit solves the
    # centred normal equations, so the agreement is limited by their conditioning:
    # about cond(cov) * eps relative (cond(cov) ~ 15 here, the square of that of the
    # centred x), hence 1e-10 relative with ample room.
    x, y = _data(n=500, seed=9)
    fit = affine_least_squares(gauss_chunk(x, y))
    assert isinstance(fit, AffineFit)
    sol, *_ = np.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]), y, rcond=None)
    np.testing.assert_allclose(fit.coef, sol[:-1], rtol=1e-10, atol=1e-10 * np.abs(sol[:-1]).max())
    np.testing.assert_allclose(fit.intercept, sol[-1], rtol=1e-10)
    # a shifted state gives the same fit once its plan is passed
    plan = GaussPlan.from_sample(x[:100], y[:100])
    shifted = affine_least_squares(gauss_chunk(x, y, plan), plan=plan)
    np.testing.assert_allclose(shifted.coef, sol[:-1], rtol=1e-10, atol=1e-10 * np.abs(sol[:-1]).max())
    np.testing.assert_allclose(shifted.intercept, sol[-1], rtol=1e-10)
    with pytest.raises(ValueError, match="was not summed with the shift"):
        affine_least_squares(gauss_chunk(x, y), plan=plan)
