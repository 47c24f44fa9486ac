"""Fréchet Inception Distance (Heusel et al. 2017).

FID = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 sqrtm(S_r S_g)), real part, on the
2048-d pool features of the Inception detector.
"""
import numpy as np
import scipy.linalg

from metrics import detectors, metric_utils

DETECTOR_URL = detectors.INCEPTION_URL
DETECTOR_KWARGS = dict(return_features=True)  # 2048-d pool features, no logits


def fid_from_stats(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between two Gaussians given by mean vectors and covariance matrices."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError('shapes do not match: mu {} / {}, sigma {} / {}'.format(
            mu1.shape, mu2.shape, sigma1.shape, sigma2.shape))
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # older scipy with disp=False semantics
        covmean = covmean[0]
    fid = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(np.real(fid))


def fid_from_features(features1, features2):
    """FID between two feature sets [N, F] (mean and covariance normalised by N, as the stats are)."""
    s1 = metric_utils.FeatureStats(capture_mean_cov=True)
    s1.append(features1)
    s2 = metric_utils.FeatureStats(capture_mean_cov=True)
    s2.append(features2)
    return fid_from_stats(*s1.get_mean_cov(), *s2.get_mean_cov())


def compute_fid(opts, max_real, num_gen, batch_size=64):
    """FID of `opts.G` against the first `max_real` real images (None: all), from `num_gen` generated ones.

    Returns NaN on ranks other than 0 (the caller broadcasts rank 0's value).
    """
    mu_real, sigma_real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=DETECTOR_URL, detector_kwargs=DETECTOR_KWARGS, rel_lo=0, rel_hi=0,
        capture_mean_cov=True, max_items=max_real, batch_size=batch_size).get_mean_cov()
    mu_gen, sigma_gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=DETECTOR_URL, detector_kwargs=DETECTOR_KWARGS, rel_lo=0, rel_hi=1,
        capture_mean_cov=True, max_items=num_gen, batch_size=batch_size).get_mean_cov()
    if opts.rank != 0:
        return float('nan')
    return fid_from_stats(mu_real, sigma_real, mu_gen, sigma_gen)
