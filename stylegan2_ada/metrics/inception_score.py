"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

Class probabilities come from the Inception detector without its output bias
(`no_output_bias=True`), as in the original implementation.
"""
import numpy as np

from metrics import detectors, metric_utils

DETECTOR_URL = detectors.INCEPTION_URL
DETECTOR_KWARGS = dict(no_output_bias=True)


def as_probabilities(x):
    """Rows of class probabilities: NVIDIA's detector returns softmax outputs already; logits get a softmax."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and x.min() >= 0 and np.allclose(x.sum(axis=1), 1, atol=1e-3):
        return x
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def is_from_probs(probs, num_splits=10):
    """(mean, std) of the Inception Score over `num_splits` consecutive splits of the rows."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    if num_splits < 1 or n < num_splits:
        raise ValueError('need at least {} rows for {} splits, got {}'.format(num_splits, num_splits, n))
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        safe = np.where(part > 0, part, 1)  # 0 * log 0 = 0
        kl = np.where(part > 0, part * (np.log(safe) - np.log(np.where(marginal > 0, marginal, 1))), 0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts, num_gen, num_splits, batch_size=64):
    """(IS mean, IS std) of `opts.G`; NaNs on ranks other than 0."""
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=DETECTOR_URL, detector_kwargs=DETECTOR_KWARGS,
        capture_all=True, max_items=num_gen, batch_size=batch_size).get_all()
    if opts.rank != 0:
        return float('nan'), float('nan')
    return is_from_probs(as_probabilities(gen), num_splits=num_splits)
