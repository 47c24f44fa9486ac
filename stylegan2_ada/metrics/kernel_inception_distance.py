"""Kernel Inception Distance (Bińkowski et al. 2018).

The unbiased estimate of the squared MMD with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets of at most
`max_subset_size` items of each set.
"""
import numpy as np

from metrics import frechet_inception_distance, metric_utils


def polynomial_kernel(x, y):
    d = x.shape[1]
    return (x @ y.T / d + 1) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 between equal-size samples x, y [m, d] with the cubic polynomial kernel.

    Within-set terms leave out i == j (that is what makes it unbiased); the
    cross term uses every pair, since x and y are independent.
    """
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError('need two samples of the same size >= 2')
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return within - 2 * kxy.sum() / (m * m)


def kid_from_features(real_features, gen_features, num_subsets=100, max_subset_size=1000, seed=None,
                      return_subsets=False):
    """KID: mean over `num_subsets` random subsets (without replacement) of unbiased MMD^2."""
    real = np.asarray(real_features, dtype=np.float64)
    gen = np.asarray(gen_features, dtype=np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError('features must be [N, F] with the same F, got {} and {}'.format(real.shape, gen.shape))
    rng = np.random.RandomState(seed) if seed is not None else np.random
    m = min(real.shape[0], gen.shape[0], int(max_subset_size))
    values = np.empty([int(num_subsets)], dtype=np.float64)
    for i in range(int(num_subsets)):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    kid = float(values.mean())
    return (kid, values) if return_subsets else kid


def _all_features(opts, max_real, num_gen, batch_size):
    """Every real and generated feature vector (the Inception pool features), as KID needs them."""
    url = frechet_inception_distance.DETECTOR_URL
    kwargs = frechet_inception_distance.DETECTOR_KWARGS
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=url, detector_kwargs=kwargs, rel_lo=0, rel_hi=0,
        capture_all=True, max_items=max_real, batch_size=batch_size).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=url, detector_kwargs=kwargs, rel_lo=0, rel_hi=1,
        capture_all=True, max_items=num_gen, batch_size=batch_size).get_all()
    return real, gen


def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size, batch_size=64):
    """KID of `opts.G`; NaN on ranks other than 0."""
    real, gen = _all_features(opts, max_real, num_gen, batch_size)
    if opts.rank != 0:
        return float('nan')
    return kid_from_features(real, gen, num_subsets=num_subsets, max_subset_size=max_subset_size)


def compute_fid_kid(opts, max_real, num_gen, num_subsets, max_subset_size, batch_size=64):
    """(FID, KID) from one pass over the real and the generated images: the features are captured
    once and both statistics computed from them, so the pair costs what one of them costs.
    FID here equals `compute_fid`'s (same mean/cov estimator). NaNs on ranks other than 0."""
    real, gen = _all_features(opts, max_real, num_gen, batch_size)
    if opts.rank != 0:
        return float('nan'), float('nan')
    fid = frechet_inception_distance.fid_from_features(real, gen)
    kid = kid_from_features(real, gen, num_subsets=num_subsets, max_subset_size=max_subset_size)
    return fid, kid
