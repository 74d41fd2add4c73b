"""KNNLabeler against the naive float64 PCA + brute-force k-NN of tests/reference/knn.py, backend agreement,
determinism, block invariance and the fooling-class behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustkit.defenses import KNNLabeler
from robustkit.defenses._pca import _top_eigenvectors, fit_pca
from robustkit.defenses._search import faiss_module
from tests.reference import knn as ref

pytestmark = pytest.mark.usefixtures("one_thread")


BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(faiss_module() is None, reason="no faiss"))]


def clustered(n, d, classes=4, seed=0, spread=0.08):
    """Images-like data in [0, 1]: class centres plus noise, shape [n, 1, d // 4, 4]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(classes, d, generator=g)
    y = torch.arange(n) % classes
    x = (centres[y] + spread * torch.randn(n, d, generator=g)).clamp(0, 1)
    return x.view(n, 1, d // 4, 4), y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3, 4])
def test_matches_naive_reference(backend, k):
    x, y = clustered(300, 64, spread=0.25)
    q, _ = clustered(50, 64, seed=1, spread=0.25)
    lab = KNNLabeler(pca_dim=10, k=k, backend=backend).fit(x, y)
    mean, comps = ref.pca_basis(x.numpy(), 10)
    ref_d, ref_i = ref.kneighbors(ref.project(x.numpy(), mean, comps), ref.project(q.numpy(), mean, comps), k)
    dist, idx = lab.kneighbors(q)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(lab.predict(q).numpy(), ref.vote(y.numpy()[ref_i]))
    np.testing.assert_allclose(np.abs(lab.pca_.components.numpy()), np.abs(comps), atol=1e-4)


def test_vote_tie_goes_to_nearest_tied_class():
    # 1-D points: query at 0; neighbours at 1 (class 2), 2 (class 1), 3 (class 1), 4 (class 2) -> tie 2:2
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [10.0]])
    y = torch.tensor([2, 1, 1, 2, 0])
    lab = KNNLabeler(pca_dim=None, k=4, backend="torch").fit(x, y)
    assert lab.predict(torch.tensor([[0.0]])).tolist() == [2]
    assert lab.predict(torch.tensor([[2.4]])).tolist() == [1]


def test_equal_distances_break_ties_by_smaller_index():
    x = torch.tensor([[1.0], [-1.0], [1.0]])
    lab = KNNLabeler(pca_dim=None, k=3, backend="torch").fit(x, torch.tensor([0, 1, 2]))
    _, idx = lab.kneighbors(torch.tensor([[0.0]]))
    assert idx.tolist() == [[0, 1, 2]]



@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_where_float32_cannot_rank(backend):
    # points on a shell of radius ~1 around a centre at distance 1000: the float32 expansion |q|^2 - 2q.x +
    # |x|^2 is off by ~1 in squared distances ~1, so float32 ranks almost at random (the old fixed margin of 8
    # extra candidates missed the true top 3 for 28 of these 30 queries); the certified search must widen its
    # candidate list until the float64 re-ranking is provably the exact k-NN
    g = torch.Generator().manual_seed(0)
    centre = torch.full((16,), 250.0)
    directions = torch.nn.functional.normalize(torch.randn(500, 16, generator=g), dim=1)
    x = centre + directions * (1 + 0.01 * torch.rand(500, 1, generator=g))
    q = centre + 0.05 * torch.randn(30, 16, generator=g)
    lab = KNNLabeler(pca_dim=None, k=3, backend=backend).fit(x, torch.arange(500) % 3)
    dist, idx = lab.kneighbors(q)
    ref_d, ref_i = ref.kneighbors(x.double().numpy(), q.double().numpy(), 3)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_duplicates_of_the_nearest_image_give_the_smallest_index(backend):
    # 40 copies of the nearest image, more than any fixed candidate margin: the smallest index must win
    g = torch.Generator().manual_seed(1)
    x = torch.rand(400, 8, generator=g) + 1
    copies = torch.randperm(400, generator=g)[:40]
    x[copies] = 0.5
    lab = KNNLabeler(pca_dim=None, k=1, backend=backend, query_block=3).fit(x, torch.arange(400))
    _, idx = lab.kneighbors(torch.full((5, 8), 0.45))
    assert idx[:, 0].tolist() == [int(copies.min())] * 5

@pytest.mark.skipif(faiss_module() is None, reason="no faiss")
def test_backends_agree_exactly():
    x, y = clustered(800, 128, classes=10, spread=0.3)
    q, _ = clustered(100, 128, classes=10, seed=3, spread=0.3)
    a = KNNLabeler(pca_dim=20, k=5, backend="torch").fit(x, y)
    b = KNNLabeler(pca_dim=20, k=5, backend="faiss").fit(x, y)
    da, ia = a.kneighbors(q)
    db, ib = b.kneighbors(q)
    assert torch.equal(ia, ib) and torch.equal(da, db)
    assert torch.equal(a.predict(q), b.predict(q))


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_and_block_invariant(backend):
    x, y = clustered(300, 64, classes=5, spread=0.3)
    q, _ = clustered(41, 64, classes=5, seed=4, spread=0.3)
    big = KNNLabeler(pca_dim=16, k=3, backend=backend).fit(x, y)
    small = KNNLabeler(pca_dim=16, k=3, backend=backend, query_block=7, index_block=13).fit(x, y)
    again = KNNLabeler(pca_dim=16, k=3, backend=backend).fit(x, y)
    d1, i1 = big.kneighbors(q)
    d2, i2 = small.kneighbors(q)
    d3, i3 = again.kneighbors(q)
    assert torch.equal(i1, i2) and torch.equal(i1, i3)
    torch.testing.assert_close(d1, d2, rtol=1e-5, atol=1e-5)  # PCA blocks may round differently
    assert torch.equal(d1, d3)


def test_subspace_iteration_and_randomized_solver_find_the_leading_components():
    # rank-12 data plus small noise; the subspace-iteration path (used above 1024 features) forced at D = 200
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(200, 12, generator=g))[0]
    x = (torch.randn(400, 12, generator=g) * torch.logspace(1, 0, 12)) @ basis.T
    x = x + 0.01 * torch.randn(400, 200, generator=g)
    _, comps = ref.pca_basis(x.numpy(), 8)
    comps = torch.from_numpy(comps)
    centred = x - x.mean(0)
    vectors, values = _top_eigenvectors(centred.T @ centred / 399, 8, oversamples=8, eigh_max_features=0)
    assert torch.linalg.svdvals(vectors.double() @ comps.T).min() > 0.999
    pca = fit_pca(x, 8, solver="randomized")
    assert torch.linalg.svdvals(pca.components.double() @ comps.T).min() > 0.999



def test_subspace_iteration_converges_on_a_slowly_decaying_spectrum():
    # power-law spectrum lambda_j = j^-1.5 (CIFAR-10's decays like j^-1.9 around component 300): the default
    # oversampling (dim extra vectors) reaches the exact float64 subspace, the old 13% oversampling does not
    g = torch.Generator().manual_seed(0)
    d, dim = 300, 40
    q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    covariance = (q * torch.arange(1, d + 1, dtype=torch.float64) ** -1.5) @ q.T

    def max_sine(oversamples):
        vectors, _ = _top_eigenvectors(covariance.float(), dim, oversamples=oversamples, eigh_max_features=0)
        cosines = torch.linalg.svdvals(vectors.double() @ q[:, :dim])
        return float((1 - cosines.min() ** 2).clamp_min(0).sqrt())

    assert max_sine(None) < 2e-3
    assert max_sine(5) > 0.1

def test_numpy_inputs_and_no_pca():
    x, y = clustered(100, 16)
    lab = KNNLabeler(pca_dim=None, backend="torch").fit(x.numpy(), y.numpy())
    assert lab.predict(x.numpy()).dtype == torch.int64
    assert torch.equal(lab.predict(x.numpy()), y)  # each training image is its own nearest neighbour


def test_fooling_threshold_and_clusters():
    x, y = clustered(200, 32, classes=4, spread=0.05)
    far_a = torch.full((5, 1, 8, 4), 5.0) + 0.01 * torch.randn(5, 1, 8, 4)
    far_b = torch.full((6, 1, 8, 4), -5.0) + 0.01 * torch.randn(6, 1, 8, 4)
    queries = torch.cat([x[:10], far_a, far_b])
    one = KNNLabeler(pca_dim=8, fooling_threshold=10.0, backend="torch").fit(x, y)
    labels = one.predict(queries)
    assert torch.equal(labels[:10], y[:10])
    assert (labels[10:] == 4).all()
    two = KNNLabeler(pca_dim=8, fooling_threshold=10.0, fooling_clusters=2, backend="torch").fit(x, y)
    labels = two.predict(queries)
    assert torch.equal(labels[:10], y[:10])
    assert (labels[10:15] == 4).all() and (labels[15:] == 5).all()  # numbered by first appearance
    # fixed centres: a batch holding only group b still maps to the class fit_fooling gave group b
    two.fit_fooling(torch.cat([far_a, far_b]))
    assert (two.predict(far_b) == 5).all() and (two.predict(far_a) == 4).all()
    assert KNNLabeler(pca_dim=8, backend="torch").fit(x, y).predict(far_a).lt(4).all()  # no threshold


def test_auto_threshold_is_quantile_of_leave_one_out_distances():
    x, y = clustered(300, 64, classes=3, spread=0.1)
    lab = KNNLabeler(pca_dim=12, fooling_threshold="auto", auto_quantile=0.9, auto_factor=1.25,
                     backend="torch").fit(x, y)
    mean, comps = ref.pca_basis(x.numpy(), 12)
    proj = ref.project(x.numpy(), mean, comps)
    dist, _ = ref.kneighbors(proj, proj, 2)  # column 0 is the point itself (distance 0)
    centred = x.reshape(300, -1).double().numpy() - mean
    residual_sq = (centred ** 2).sum(1) - (proj ** 2).sum(1)
    expected = np.quantile(np.sqrt(dist[:, 1] ** 2 + residual_sq), 0.9) * 1.25
    assert lab.threshold_ == pytest.approx(expected, rel=1e-3)
    noise = torch.rand(20, 1, 16, 4)
    assert lab.fooling_mask(noise).all()
    assert lab.fooling_mask(x).float().mean() < 0.1


def test_bad_arguments_are_named():
    x, y = clustered(20, 16)
    with pytest.raises(ValueError, match="pca_dim"):
        KNNLabeler(pca_dim=0)
    with pytest.raises(ValueError, match="backend"):
        KNNLabeler(backend="annoy")
    with pytest.raises(ValueError, match="fooling_threshold"):
        KNNLabeler(fooling_threshold="big")
    with pytest.raises(ValueError, match="pca_dim"):
        KNNLabeler(pca_dim=100).fit(x, y)
    with pytest.raises(ValueError, match="y_train"):
        KNNLabeler(pca_dim=4).fit(x, y[:5])
    with pytest.raises(TypeError, match="x_train"):
        KNNLabeler(pca_dim=4).fit((x * 255).to(torch.uint8), y)
    with pytest.raises(RuntimeError, match="fit"):
        KNNLabeler().predict(x)
    with pytest.raises(ValueError, match="features"):
        KNNLabeler(pca_dim=4, backend="torch").fit(x, y).predict(torch.rand(3, 10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_queries(backend):
    x, y = clustered(40, 16)
    lab = KNNLabeler(pca_dim=4, k=2, fooling_threshold="auto", backend=backend).fit(x, y)
    assert lab.predict(x[:0]).shape == (0,)
    dist, idx = lab.kneighbors(x[:0])
    assert dist.shape == idx.shape == (0, 2)


def test_pca_of_a_rank_deficient_set_equals_exact_pca(one_thread):
    """300 dims of 3,072-pixel images whose covariance has 20 large eigenvalues and a tail 1e6 smaller (few
    images, strongly correlated pixels, as 500 CIFAR-10 images): after the covariance products the subspace
    iteration's 600 columns are numerically dependent, its Gram matrix singular (a Cholesky failure before the
    QR fallback). The leading subspace must still be the exact one."""
    from robustkit.defenses._pca import fit_pca
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 20, generator=g) @ torch.rand(20, 3072, generator=g) / 20
    x = x + 1e-3 * torch.rand(400, 3072, generator=g)
    basis = fit_pca(x, 300)
    exact = torch.linalg.svd((x - x.mean(0)).double(), full_matrices=False).Vh[:19]
    # the leading 19 directions (the rank-20 signal less the mean's) match: principal angles ~0
    overlap = torch.linalg.svdvals(basis.components[:19].double() @ exact.T)
    assert overlap.min() > 1 - 1e-4, overlap.min()
