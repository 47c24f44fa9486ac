"""The metric statistics on inputs whose answers are known in advance:
FID (closed form for Gaussians), KID (unbiasedness, direct O(n^2) sum),
precision/recall (identical and disjoint sets), IS (one-hot predictions),
plus FeatureStats bookkeeping and the PPL helpers."""
import math

import numpy as np
import pytest
import torch

from metrics import metric_utils
from metrics.frechet_inception_distance import fid_from_features, fid_from_stats
from metrics.inception_score import as_probabilities, is_from_probs
from metrics.kernel_inception_distance import kid_from_features, mmd2_unbiased
from metrics.perceptual_path_length import ppl_from_distances, slerp
from metrics.precision_recall import pr_from_features


def random_spd(rng, d, scale=1.0):
    a = rng.normal(size=[d, d]) * scale
    return a @ a.T + 0.1 * np.eye(d)


def fid_closed_form(mu1, s1, mu2, s2):
    """Frechet distance of two Gaussians via symmetric eigendecompositions only:
    Tr sqrtm(S1 S2) = Tr sqrtm(S1^1/2 S2 S1^1/2), which is symmetric PSD."""
    lam, vec = np.linalg.eigh(s1)
    s1_half = vec @ np.diag(np.sqrt(np.clip(lam, 0, None))) @ vec.T
    inner = np.linalg.eigvalsh(s1_half @ s2 @ s1_half)
    tr_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)

# FID


def test_fid_one_dimensional_by_hand():
    # N(1, 2^2) vs N(4, 0.5^2): (1-4)^2 + (2-0.5)^2 = 9 + 2.25.
    assert fid_from_stats([1.0], [[4.0]], [4.0], [[0.25]]) == pytest.approx(11.25, rel=1e-10)


def test_fid_from_given_stats_matches_closed_form():
    rng = np.random.RandomState(0)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=0.5)
    expected = fid_closed_form(mu1, s1, mu2, s2)
    assert expected > 1
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # Symmetric in its two arguments.
    assert fid_from_stats(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)


def test_fid_of_gaussian_samples_within_one_percent_of_closed_form():
    rng = np.random.RandomState(1)
    d, n = 6, 40000
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) + 1.0
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=0.6)
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    expected = fid_closed_form(mu1, s1, mu2, s2)
    got = fid_from_features(x, y)
    assert abs(got - expected) / expected < 0.01, (got, expected)


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.RandomState(2)
    x = rng.normal(size=[3000, 64]) @ rng.normal(size=[64, 64])
    scale = fid_from_features(x, x + 1.0)  # a shift of 1 in 64 dims: FID 64
    assert scale == pytest.approx(64, rel=1e-6)
    assert abs(fid_from_features(x, x)) < 1e-6 * scale


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))

# KID


def test_mmd_matches_direct_double_sum():
    rng = np.random.RandomState(3)
    m, d = 9, 5
    x = rng.normal(size=[m, d])
    y = rng.normal(size=[m, d]) + 0.5

    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    direct = xx + yy - 2 * xy
    assert mmd2_unbiased(x, y) == pytest.approx(direct, rel=1e-10)
    # One subset of the full size is a permutation of each set: the same number.
    assert kid_from_features(y, x, num_subsets=1, max_subset_size=1000, seed=0) == pytest.approx(direct, rel=1e-10)


def test_kid_is_unbiased_for_one_distribution():
    rng = np.random.RandomState(4)
    trials, m, d = 400, 16, 4
    kids, biased = [], []
    for _ in range(trials):
        x = rng.normal(size=[m, d])
        y = rng.normal(size=[m, d])
        kids.append(kid_from_features(x, y, num_subsets=1, max_subset_size=m, seed=0))
        # The V-statistic (diagonal kept) for contrast: positively biased.
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    kids, biased = np.array(kids), np.array(biased)
    se = kids.std() / math.sqrt(trials)
    assert abs(kids.mean()) < 4 * se, (kids.mean(), se)
    assert biased.mean() > 10 * biased.std() / math.sqrt(trials)  # the test can tell a biased estimator


def test_kid_subsets_mean_near_zero_and_positive_for_different_sets():
    rng = np.random.RandomState(5)
    x = rng.normal(size=[3000, 8])
    y = rng.normal(size=[3000, 8])
    kid_same, values = kid_from_features(x, y, num_subsets=100, max_subset_size=200, seed=1, return_subsets=True)
    assert values.shape == (100,) and kid_same == pytest.approx(values.mean())
    kid_diff = kid_from_features(x, y + 0.7, num_subsets=100, max_subset_size=200, seed=1)
    assert abs(kid_same) < 0.05 * kid_diff
    assert kid_diff > 0

# Precision / recall


def test_pr_identical_sets_is_one_one():
    x = torch.from_numpy(np.random.RandomState(6).normal(size=[300, 16]).astype(np.float32))
    assert pr_from_features(x, x.clone(), nhood_size=3) == (1.0, 1.0)


def test_pr_disjoint_clusters_is_zero_zero():
    rng = np.random.RandomState(7)
    real = rng.normal(size=[200, 16]) * 0.1
    gen = rng.normal(size=[250, 16]) * 0.1 + 50
    assert pr_from_features(real, gen, nhood_size=3) == (0.0, 0.0)


def test_pr_half_inside_and_batching_invariance():
    rng = np.random.RandomState(8)
    real = rng.normal(size=[200, 8]).astype(np.float32)
    gen = np.concatenate([real[:100], rng.normal(size=[100, 8]).astype(np.float32) + 100])
    precision, recall = pr_from_features(real, gen, nhood_size=3)
    assert precision == 0.5
    assert 0 < recall <= 1
    assert pr_from_features(real, gen, nhood_size=3, row_batch_size=7, col_batch_size=13) == (precision, recall)

# IS


def test_is_of_one_hot_uniform_predictions_is_class_count():
    num_classes, n = 10, 1000
    probs = np.eye(num_classes)[np.arange(n) % num_classes]
    mean, std = is_from_probs(probs, num_splits=10)
    assert mean == pytest.approx(num_classes, rel=1e-12)
    assert std == pytest.approx(0, abs=1e-12)


def test_is_of_uniform_predictions_is_one():
    mean, _ = is_from_probs(np.full([200, 7], 1 / 7), num_splits=10)
    assert mean == pytest.approx(1.0, rel=1e-12)


def test_as_probabilities_keeps_probabilities_and_softmaxes_logits():
    rng = np.random.RandomState(9)
    logits = rng.normal(size=[5, 6]) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(as_probabilities(probs), probs)
    assert np.allclose(as_probabilities(logits), probs)

# FeatureStats and PPL helpers


def test_feature_stats_chunks_max_items_and_roundtrip(tmp_path):
    rng = np.random.RandomState(10)
    x = rng.normal(size=[100, 5])
    stats = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=70)
    for lo in range(0, 100, 16):
        stats.append_torch(torch.from_numpy(x[lo:lo + 16]))
    assert stats.is_full() and stats.num_items == 70
    assert np.allclose(stats.get_all(), x[:70].astype(np.float32))
    mean, cov = stats.get_mean_cov()
    x32 = x[:70].astype(np.float32).astype(np.float64)
    assert np.allclose(mean, x32.mean(0)) and np.allclose(cov, np.cov(x32, rowvar=False, bias=True))
    stats.save(str(tmp_path / 'stats.pkl'))
    loaded = metric_utils.FeatureStats.load(str(tmp_path / 'stats.pkl'))
    assert loaded.num_items == 70 and np.array_equal(loaded.get_all(), stats.get_all())
    assert [p.name for p in tmp_path.iterdir()] == ['stats.pkl']  # no temporary file left behind


def test_slerp_endpoints_and_constant_speed():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn([4, 8], generator=g), torch.randn([4, 8], generator=g)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    assert torch.allclose(slerp(a, b, torch.zeros([4, 1])), an, atol=1e-6)
    assert torch.allclose(slerp(a, b, torch.ones([4, 1])), bn, atol=1e-5)
    mid = slerp(a, b, torch.full([4, 1], 0.3))
    assert torch.allclose(mid.norm(dim=1), torch.ones(4), atol=1e-6)
    total = torch.acos((an * bn).sum(1))
    assert torch.allclose(torch.acos((an * mid).sum(1).clamp(-1, 1)), 0.3 * total, atol=1e-4)


def test_ppl_drops_outside_1st_and_99th_percentile():
    dist = np.concatenate([np.full(998, 2.0), [1e6, -1e6]])
    assert ppl_from_distances(dist) == pytest.approx(2.0)
