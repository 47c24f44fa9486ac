"""What a generator that learnt nothing scores, for the learning tests (issue 17).

A pixel-space Frechet distance (helpers.frechet_distance of helpers.pixel_features)
means little on its own: on builtin:shapes a generator that always draws the
dataset's mean image already scores about 17, far below an untrained G's 150-300.
So the learning tests compare the trained G with generators that need no
training at all and require it to beat the best of them by a clear margin, and
to spread its samples about as widely as the reals (every trivial generator
below draws one image over and over: its spread is 0).
"""
import numpy as np

from helpers import frechet_distance, pixel_features


def images_of(ds):
    """All images of a training.dataset.Dataset as float64 [N, C, H, W] in [-1, 1]."""
    return np.stack([ds[i][0] for i in range(len(ds))]).astype(np.float64) / 127.5 - 1


def spread(fake_feats, real_feats):
    """sqrt(total variance of the fakes / total variance of the reals): 0 for a G that
    draws one image, about 1 for one that covers the reals' variety."""
    total = [np.trace(np.atleast_2d(np.cov(f, rowvar=False))) for f in (fake_feats, real_feats)]
    return float(np.sqrt(total[0] / total[1]))


def trivial_scores(reals, num=256, seed=0, tries=10):
    """Pixel FD against `reals` ([N, C, H, W] in [-1, 1]) of the trivial generators, each
    drawing `num` copies of one image: the dataset's mean image, constant mid-grey, and a
    real image (the best-scoring of `tries` random ones, to keep the bar strict).
    Beside them, 'real half': the FD between two disjoint random halves of the reals, the
    score of a G that reproduces the data up to the sampling noise of 50 images."""
    feats = pixel_features(reals)

    def repeated(image):
        return frechet_distance(feats, np.repeat(pixel_features(image[None]), num, axis=0))

    order = np.random.RandomState(seed).permutation(len(reals))
    half = len(order) // 2
    picks = order[:tries]
    return {
        'mean image': repeated(reals.mean(axis=0)),
        'grey': repeated(np.zeros_like(reals[0])),
        'one real': min(repeated(reals[i]) for i in picks),
        'real half': frechet_distance(feats[order[:half]], feats[order[half:]]),
    }


def learning_verdict(fake_feats, reals, num=256):
    """(trained FD, spread, trivial scores, the best trivial score) for the trained G's
    pixel features `fake_feats` against `reals`, and a printable line of all of them."""
    real_feats = pixel_features(reals)
    scores = trivial_scores(reals, num=num)
    best_trivial = min(v for k, v in scores.items() if k != 'real half')
    fd = frechet_distance(real_feats, fake_feats)
    sp = spread(fake_feats, real_feats)
    line = 'pixel FD: trained {:.2f} (spread {:.2f}); '.format(fd, sp) + ', '.join(
        '{} {:.2f}'.format(k, v) for k, v in scores.items())
    return fd, sp, best_trivial, line
