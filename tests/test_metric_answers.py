"""Metrics against answers known in closed form (issue 17, item 4).

Each test feeds a metric's lowest-level function inputs whose score can be
worked out by hand (or by an independent float64 computation written here),
so a metric that ignores a parameter or drops a term fails instead of
merely landing inside a plausible range.
"""
import math

import numpy as np
import pytest
import torch

from helpers import one_thread  # noqa: F401  (module-scoped autouse fixture)
from metrics import frechet_inception_distance as fid_mod
from metrics import inception_score as is_mod
from metrics import metric_utils
from metrics import perceptual_path_length as ppl_mod
from metrics import precision_recall as pr_mod


# Precision / recall (Kynkaanniemi et al.): balls of radius "distance to the k-th neighbour".


def _pr(real, gen, k):
    return pr_mod.pr_from_features(torch.as_tensor(real), torch.as_tensor(gen), nhood_size=k)


def test_pr_of_a_set_against_itself_is_one_one():
    feats = np.random.RandomState(11).normal(size=[120, 32]).astype(np.float32)
    for k in (1, 3, 7):
        assert _pr(feats, feats.copy(), k) == (1.0, 1.0)


def test_pr_of_far_apart_sets_is_zero_zero():
    rng = np.random.RandomState(12)
    real = rng.normal(size=[80, 32]).astype(np.float32)
    gen = rng.normal(size=[90, 32]).astype(np.float32) + 1000
    for k in (1, 3, 7):
        assert _pr(real, gen, k) == (0.0, 0.0)


def _comb_layout():
    """Reals at x = 0..9 on a line; fakes at x = 0, 2, .., 8, lifted 1.5 off it.

    Real radii: k=1 -> 1 everywhere; k=2 -> 1 inside, 2 at both ends; k=3 -> 2
    inside. A fake's nearest real is 1.5 away, so it is covered only when k=2
    (the two fakes next to an end) or k=3 (all). Fake radii are >= 2 for every
    k, and each real is within sqrt(1 + 1.5^2) < 2 of a fake: recall is 1.
    """
    real = np.stack([np.arange(10.0), np.zeros(10)], axis=1)
    gen = np.stack([np.arange(0.0, 10.0, 2.0), np.full(5, 1.5)], axis=1)
    return real.astype(np.float32), gen.astype(np.float32)


@pytest.mark.parametrize('k, precision', [(1, 0.0), (2, 0.4), (3, 1.0)])
def test_pr_depends_on_the_neighbourhood_size_as_worked_out(k, precision):
    real, gen = _comb_layout()
    assert _pr(real, gen, k) == (pytest.approx(precision, abs=1e-12), 1.0)


def _pr_reference(real, gen, k):
    """Brute-force float64 precision/recall, written independently of the metric."""
    def radii(x):
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def covered(x, r, probes):
        d = np.sqrt(((probes[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        return float((d <= r[None, :]).any(axis=1).mean())

    real, gen = real.astype(np.float64), gen.astype(np.float64)
    return covered(real, radii(real), gen), covered(gen, radii(gen), real)


@pytest.mark.parametrize('k', [1, 3, 5])
def test_pr_matches_a_brute_force_reference_on_overlapping_clouds(k):
    rng = np.random.RandomState(13)
    real = rng.normal(size=[150, 6]).astype(np.float32)
    gen = (rng.normal(size=[130, 6]) + 0.8).astype(np.float32)
    expected = _pr_reference(real, gen, k)
    assert 0.05 < expected[0] < 0.95 and 0.05 < expected[1] < 0.95  # a case where k can matter
    assert _pr(real, gen, k) == pytest.approx(expected, abs=1e-12)


# Inception Score: exp(E_x KL(p(y|x) || p(y))), mean and std over consecutive splits.


def test_is_of_confident_predictions_spread_evenly_is_the_class_count():
    classes, n = 10, 1000
    probs = np.eye(classes)[np.arange(n) % classes]
    mean, std = is_mod.is_from_probs(probs, num_splits=10)
    assert mean == pytest.approx(classes, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_is_of_one_shared_distribution_is_one():
    probs = np.tile([0.7, 0.2, 0.05, 0.05], (300, 1))
    mean, std = is_mod.is_from_probs(probs, num_splits=3)
    assert mean == pytest.approx(1.0, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_is_of_half_confident_half_uniform_is_root_class_count():
    """Each split holds C one-hot rows (one per class) and C uniform rows: the
    marginal is uniform, KL is log C for half the rows and 0 for the rest."""
    classes, splits = 10, 5
    block = np.concatenate([np.eye(classes), np.full([classes, classes], 1 / classes)])
    mean, std = is_mod.is_from_probs(np.tile(block, (splits, 1)), num_splits=splits)
    assert mean == pytest.approx(math.sqrt(classes), rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_is_of_label_smoothed_predictions_from_detector_logits():
    """p(y|x) = (1 - a) one-hot + a / C with classes spread evenly: the marginal
    is uniform and log IS = q log(qC) + (C - 1) r log(rC), q = 1 - a + a/C, r = a/C.
    Given as logits (log p + an offset per row), as a detector without softmax returns."""
    classes, a = 8, 0.3
    q, r = 1 - a + a / classes, a / classes
    probs = np.eye(classes)[np.arange(384) % classes] * (1 - a) + a / classes  # 12 of each class per split
    logits = np.log(probs) + np.random.RandomState(14).normal(size=[384, 1]) * 5
    expected = math.exp(q * math.log(q * classes) + (classes - 1) * r * math.log(r * classes))
    assert 1.5 < expected < classes - 1.5
    mean, std = is_mod.is_from_probs(is_mod.as_probabilities(logits), num_splits=4)
    assert mean == pytest.approx(expected, rel=1e-9) and std == pytest.approx(0, abs=1e-9)


def test_is_marginal_is_taken_per_split():
    """Split 1: one-hot over C classes (IS C); split 2: every row one-hot on class 0
    (IS 1). Mean (C + 1) / 2, population std (C - 1) / 2."""
    classes = 6
    first = np.eye(classes)[np.arange(60) % classes]
    second = np.eye(classes)[np.zeros(60, dtype=int)]
    mean, std = is_mod.is_from_probs(np.concatenate([first, second]), num_splits=2)
    assert mean == pytest.approx((classes + 1) / 2, rel=1e-12)
    assert std == pytest.approx((classes - 1) / 2, rel=1e-12)


# Perceptual path length with a linear generator and a distance we know.


class _FlatDistance(torch.nn.Module):
    """Stands in for VGG16-LPIPS: the image itself, flattened and scaled to about [0, 1],
    so the 'LPIPS distance' is a plain squared Euclidean one."""

    def forward(self, img, resize_images=True, return_lpips=False):
        assert return_lpips and not resize_images
        return img.flatten(1) / 255


class _LinearG(torch.nn.Module):
    """z -> w = z M + b (every ws row alike) -> image = w A, shaped [N, 3, 2, 2].

    Inputs to the mapping are kept in `seen` (a list shared by deep copies) so a
    test can work out each path's length from the latents actually drawn."""

    def __init__(self, M, A, seen=None):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim, self.num_ws = M.shape[0], M.shape[1], 0, 3
        self.img_resolution = 2
        self.register_buffer('M', torch.as_tensor(M, dtype=torch.float32))
        self.register_buffer('A', torch.as_tensor(A, dtype=torch.float32))
        self.register_buffer('b', torch.linspace(-0.5, 0.5, self.w_dim))
        self.seen = [] if seen is None else seen

    def __deepcopy__(self, memo):
        return _LinearG(self.M.clone(), self.A.clone(), seen=self.seen)

    def mapping(self, z, c):
        assert c.shape == (z.shape[0], 0)
        self.seen.append(z.detach().double().clone())
        return (z @ self.M + self.b).unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws, force_fp32=False, noise_mode='random'):
        assert ws.shape[1:] == (self.num_ws, self.w_dim) and noise_mode == 'const'
        return (ws[:, 0] @ self.A).reshape(-1, 3, 2, 2)


def _w_space_lengths(G, z):
    """Lerp in W: the image moves by (w1 - w0) A epsilon, the flat distance sees half
    of that, so length = |(z1 - z0) M A|^2 / 4 whatever t and epsilon are."""
    n = z.shape[0] // 2
    step = (z[n:] - z[:n]) @ G.M.double() @ G.A.double()
    return step.square().sum(1) / 4


def _linear_g(seed, scale=0.2):
    rng = np.random.RandomState(seed)
    return _LinearG(rng.normal(size=[5, 4]) * scale, rng.normal(size=[4, 12]) * scale)


@pytest.mark.parametrize('sampling', ['full', 'end'])
@pytest.mark.parametrize('epsilon', [0.5, 0.05])
def test_ppl_path_lengths_of_a_linear_generator_in_w(sampling, epsilon):
    G = _linear_g(15)
    torch.manual_seed(16)
    with torch.no_grad():
        dist = ppl_mod.path_batch(G, _FlatDistance(), torch.zeros([64, 0]), {}, epsilon=epsilon, space='w',
                                  sampling=sampling, crop=False)
    (z,) = G.seen
    assert z.shape == (128, 5)
    assert torch.allclose(dist.double(), _w_space_lengths(G, z), rtol=2e-3, atol=0)


def test_ppl_path_lengths_along_a_great_circle_in_z(monkeypatch):
    """Identity mapping and image = s * w: in Z the path is the great circle from
    z0/|z0| to z1/|z1|, so the two ends of a segment are the angle theta * epsilon
    apart and length = (s / 2)^2 (2 sin(theta epsilon / 2) / epsilon)^2."""
    s, epsilon, n = 3.0, 0.1, 64
    G = _LinearG(np.eye(12), np.eye(12) * s)
    drawn = []
    real_randn = torch.randn

    def recording_randn(*args, **kwargs):
        out = real_randn(*args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(torch, 'randn', recording_randn)
    torch.manual_seed(17)
    with torch.no_grad():
        dist = ppl_mod.path_batch(G, _FlatDistance(), torch.zeros([n, 0]), {}, epsilon=epsilon, space='z',
                                  sampling='full', crop=False)
    (z,) = [d for d in drawn if d.shape == (2 * n, 12)]
    z = z.double()
    a, b = z[:n] / z[:n].norm(dim=1, keepdim=True), z[n:] / z[n:].norm(dim=1, keepdim=True)
    theta = torch.acos((a * b).sum(1).clamp(-1, 1))
    expected = (s / 2) ** 2 * (2 * torch.sin(theta * epsilon / 2) / epsilon) ** 2
    assert torch.allclose(dist.double(), expected, rtol=2e-3, atol=0)


def _kept_mean(values):
    """Mean of the values between the 1st percentile (rounded down to a sample) and
    the 99th (rounded up), both ends kept: the published PPL reduction."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    last = len(ordered) - 1
    low, high = ordered[math.floor(0.01 * last)], ordered[math.ceil(0.99 * last)]
    return float(ordered[(ordered >= low) & (ordered <= high)].mean())


def test_ppl_reduction_of_constructed_distances():
    """Distances i^2, i = 1..1000: the 1st percentile is 10^2 and the 99th 991^2,
    so PPL = sum(i^2, i = 10..991) / 982."""
    i = np.arange(1, 1001)
    expected = sum(j * j for j in range(10, 992)) / 982
    assert ppl_mod.ppl_from_distances(np.random.RandomState(18).permutation(i * i)) == pytest.approx(expected,
                                                                                                      rel=1e-12)
    assert _kept_mean(i * i) == pytest.approx(expected, rel=1e-12)


def test_ppl_reduction_keeps_values_tied_with_the_percentiles():
    """200 values: the percentiles are the 2nd smallest (0) and 2nd largest (9); every
    value equal to them stays, only -5 and 50 go."""
    dist = np.array([50.0] + [0.0] * 3 + [5.0] * 192 + [9.0] * 3 + [-5.0])
    assert ppl_mod.ppl_from_distances(dist) == pytest.approx((5 * 192 + 27) / 198, rel=1e-12)


def test_compute_ppl_end_to_end_on_a_linear_generator(monkeypatch):
    """compute_ppl with the detector swapped for the flat distance: batches, the cut
    to num_samples and the percentile filter, against lengths worked out from the
    latents the generator was given."""
    monkeypatch.setattr(metric_utils, 'get_feature_detector', lambda *args, **kwargs: _FlatDistance())
    monkeypatch.setattr(metric_utils, 'open_dataset', lambda opts: None)
    G = _linear_g(19)
    opts = metric_utils.MetricOptions(G=G, device='cpu')
    torch.manual_seed(20)
    result = ppl_mod.compute_ppl(opts, num_samples=203, epsilon=0.25, space='w', sampling='full', crop=False,
                                 batch_size=8)
    lengths = torch.cat([_w_space_lengths(G, z) for z in G.seen])
    assert lengths.shape == (208,)
    expected = _kept_mean(lengths[:203].numpy())
    assert expected != pytest.approx(float(lengths[:203].mean()), rel=1e-3)  # the filter matters here
    assert result == pytest.approx(expected, rel=2e-4)


# FID of a few-shot set: 100 samples of 512- or 2048-d features, so both covariances are singular.
# The 2048-d case is the real few-shot one but costs 25-50 s of CPU (scipy's sqrtm of a 2048 x 2048
# matrix on one thread), hence `slow`; 512-d keeps rank 99 < d at ~1/60 of the cost.


def _fid_reference(x1, x2):
    """FID in float64 from the centred rows A_i = (X_i - mu_i) / sqrt(N): S_i = A_i^T A_i,
    and the non-zero eigenvalues of sqrt(S1) S2 sqrt(S1) are the squared singular
    values of A1 A2^T, so Tr sqrtm(S1 S2) is the nuclear norm of that N x N matrix."""
    x1, x2 = x1.astype(np.float64), x2.astype(np.float64)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    a1, a2 = (x1 - mu1) / math.sqrt(len(x1)), (x2 - mu2) / math.sqrt(len(x2))
    cross = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    return float(((mu1 - mu2) ** 2).sum() + (a1 ** 2).sum() + (a2 ** 2).sum() - 2 * cross)


def _fid_by_eigendecomposition(x1, x2):
    """The textbook route, for small dimensions: sqrt(S1) by eigh, then the
    eigenvalues of the symmetric sqrt(S1) S2 sqrt(S1)."""
    x1, x2 = x1.astype(np.float64), x2.astype(np.float64)
    s1, s2 = np.cov(x1, rowvar=False, bias=True), np.cov(x2, rowvar=False, bias=True)
    vals, vecs = np.linalg.eigh(s1)
    root1 = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = np.linalg.eigvalsh(root1 @ s2 @ root1)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((x1.mean(0) - x2.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def _few_shot_features(rng, n, dim):
    """Non-negative, correlated, pool-feature-like rows in float32 (what FeatureStats keeps)."""
    basis = np.abs(rng.normal(size=[16, dim]))
    rows = np.abs(rng.normal(size=[n, 16])) @ basis / 4 + np.abs(rng.normal(size=[n, dim])) * 0.3
    return rows.astype(np.float32)


def test_fid_reference_agrees_with_eigendecomposition_when_singular():
    rng = np.random.RandomState(21)
    x1, x2 = _few_shot_features(rng, 30, 80), _few_shot_features(rng, 30, 80) * 1.1
    # rel 1e-6: the eigh route takes square roots of ~1e-15 round-off eigenvalues in the null space.
    assert _fid_reference(x1, x2) == pytest.approx(_fid_by_eigendecomposition(x1, x2), rel=1e-6)


@pytest.mark.parametrize('dim', [512, pytest.param(2048, marks=pytest.mark.slow)])
def test_fid_of_100_samples_in_high_dimension_matches_float64_reference(dim):
    """Tolerance: relative 1e-5 (the metric's sqrtm lands within ~1e-7 of the
    reference); a covariance normalised by N - 1 instead of N is off by ~1 %."""
    rng = np.random.RandomState(22)
    x1 = _few_shot_features(rng, 100, dim)
    x2 = _few_shot_features(rng, 100, dim) * 1.05 + 0.02
    centred = x1.astype(np.float64) - x1.astype(np.float64).mean(0)
    assert np.linalg.matrix_rank(centred) < 100 < dim  # rank(S1) <= 99: singular
    expected = _fid_reference(x1, x2)
    assert fid_mod.fid_from_features(x1, x2) == pytest.approx(expected, rel=1e-5)
