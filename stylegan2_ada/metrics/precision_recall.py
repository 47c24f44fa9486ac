"""Improved precision and recall (Kynkäänniemi et al. 2019) on VGG16 features.

Each set's manifold is the union of balls around its points with radius the
distance to the point's k-th nearest neighbour in the same set. Precision is
the fraction of generated points inside the real manifold; recall the
fraction of real points inside the generated one.
"""
import torch

from metrics import detectors, metric_utils

DETECTOR_URL = detectors.VGG16_URL
DETECTOR_KWARGS = dict(return_features=True)


def _batched(n, size):
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _all_reduce_sum(t, num_gpus, device):
    if num_gpus > 1:
        buf = t.to(device)
        torch.distributed.all_reduce(buf)
        t = buf.cpu()
    return t


def knn_radii(manifold, nhood_size, row_batch_size=10000, col_batch_size=10000, num_gpus=1, rank=0,
              sync_device=None):
    """Distance from each point of `manifold` [N, F] to its `nhood_size`-th nearest other point."""
    n = manifold.shape[0]
    if n <= nhood_size:
        raise ValueError('a manifold of {} points has no {}-th neighbour'.format(n, nhood_size))
    radii = torch.zeros([n], dtype=torch.float64)
    for i, (lo, hi) in enumerate(_batched(n, row_batch_size)):
        if i % num_gpus != rank:
            continue
        dist = torch.cat([torch.cdist(manifold[lo:hi], manifold[clo:chi]) for clo, chi in _batched(n, col_batch_size)],
                         dim=1)
        # The point itself sits at distance 0 and counts as the first neighbour.
        radii[lo:hi] = dist.kthvalue(nhood_size + 1, dim=1).values.double().cpu()
    return _all_reduce_sum(radii, num_gpus, sync_device or torch.device('cpu'))


def fraction_inside(manifold, radii, probes, row_batch_size=10000, col_batch_size=10000, num_gpus=1, rank=0,
                    sync_device=None):
    """Fraction of `probes` that lie within radius of at least one manifold point."""
    m = probes.shape[0]
    inside = torch.zeros([m], dtype=torch.float64)
    radii = radii.to(manifold.device, torch.float32)
    for i, (lo, hi) in enumerate(_batched(m, row_batch_size)):
        if i % num_gpus != rank:
            continue
        hit = torch.zeros([hi - lo], dtype=torch.bool, device=probes.device)
        for clo, chi in _batched(manifold.shape[0], col_batch_size):
            dist = torch.cdist(probes[lo:hi], manifold[clo:chi])
            hit |= (dist <= radii[clo:chi].unsqueeze(0)).any(dim=1)
        inside[lo:hi] = hit.double().cpu()
    inside = _all_reduce_sum(inside, num_gpus, sync_device or torch.device('cpu'))
    return float(inside.mean())


def pr_from_features(real_features, gen_features, nhood_size=3, row_batch_size=10000, col_batch_size=10000,
                     device=torch.device('cpu'), num_gpus=1, rank=0, sync_device=None):
    """(precision, recall) from feature sets [N, F]; each rank takes its share of row batches."""
    real = torch.as_tensor(real_features, dtype=torch.float32).to(device)
    gen = torch.as_tensor(gen_features, dtype=torch.float32).to(device)
    kw = dict(row_batch_size=row_batch_size, col_batch_size=col_batch_size, num_gpus=num_gpus, rank=rank,
              sync_device=sync_device)
    real_radii = knn_radii(real, nhood_size, **kw)
    precision = fraction_inside(real, real_radii, gen, **kw)
    gen_radii = knn_radii(gen, nhood_size, **kw)
    recall = fraction_inside(gen, gen_radii, real, **kw)
    return precision, recall


def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size, batch_size=64):
    """(precision, recall) of `opts.G`; NaNs on ranks other than 0."""
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=DETECTOR_URL, detector_kwargs=DETECTOR_KWARGS, rel_lo=0, rel_hi=0,
        capture_all=True, max_items=max_real, batch_size=batch_size).get_all_torch()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=DETECTOR_URL, detector_kwargs=DETECTOR_KWARGS, rel_lo=0, rel_hi=1,
        capture_all=True, max_items=num_gen, batch_size=batch_size).get_all_torch()
    sync_device = opts.device if opts.device.type == 'cuda' else torch.device('cpu')
    precision, recall = pr_from_features(real, gen, nhood_size=nhood_size, row_batch_size=row_batch_size,
                                         col_batch_size=col_batch_size, device=opts.device,
                                         num_gpus=opts.num_gpus, rank=opts.rank, sync_device=sync_device)
    if opts.rank != 0:
        return float('nan'), float('nan')
    return precision, recall
