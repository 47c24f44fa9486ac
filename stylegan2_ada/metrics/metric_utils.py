"""Shared machinery of the metrics: the options object, running feature
statistics, progress lines, conditioning labels for G, and the two passes that
turn images into detector features (real ones from the data set, fakes from G).

Real-image statistics depend only on the data set, the detector file and the
options, so they are cached as
`<dnnlib cache>/gan-metrics/<dataset>-<detector>-<md5 of the key>.pkl`,
written atomically by rank 0 and reused by later runs and by every metric
that asks for the same thing.
"""
import copy
import functools
import hashlib
import json
import os
import pickle
import sys
import time
import uuid

import numpy as np
import torch

import dnnlib
from metrics import detectors


class MetricOptions:
    """Everything a metric function needs; `calc_metric(**kwargs)` builds one.

    `detector_dir` is an extra folder to find detector files in (see
    `metrics.detectors`); `cache=False` neither reads nor writes real stats.
    """

    def __init__(self, G=None, G_kwargs=None, dataset_kwargs=None, num_gpus=1, rank=0, device=None, progress=None,
                 cache=True, detector_dir=None):
        num_gpus, rank = int(num_gpus), int(rank)
        if rank < 0 or rank >= num_gpus:
            raise ValueError('rank {} is outside 0..{}'.format(rank, num_gpus - 1))
        if device is None:
            device = torch.device('cuda', rank) if torch.cuda.is_available() else 'cpu'
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.num_gpus = num_gpus
        self.rank = rank
        self.device = torch.device(device)
        self.progress = ProgressMonitor() if progress is None else progress.sub()
        self.cache = bool(cache)
        self.detector_dir = detector_dir


def get_feature_detector(url, device=torch.device('cpu'), detector_dir=None, verbose=False):
    """A detector network by URL (or asset key / local path), loaded once per process and device."""
    return detectors.load_detector(url, device, detector_dir=detector_dir, verbose=verbose)


def get_feature_detector_name(url):
    """Short detector name from a URL or path: 'inception-2015-12-05' for NVIDIA's Inception."""
    return os.path.splitext(url.split('/')[-1])[0]


def gather_across_ranks(x, num_gpus, interleave=False):
    """Every rank's tensor `x` on every rank: the ranks' blocks one after the
    other, or (`interleave`) row i of rank 0, row i of rank 1, ... in turn."""
    if num_gpus <= 1:
        return x
    parts = [torch.empty_like(x) for _ in range(num_gpus)]
    torch.distributed.all_gather(parts, x)
    return torch.stack(parts, dim=1).flatten(0, 1) if interleave else torch.cat(parts)


# The attributes of FeatureStats, in order: they are also the dict a cache file
# holds, so caches stay readable both ways (ours and upstream-made ones).
_STATS_FIELDS = ('capture_all', 'capture_mean_cov', 'max_items', 'num_items', 'num_features', 'all_features',
                 'raw_mean', 'raw_cov')


def _moment_sums(rows):
    """Float64 sum of the rows and sum of their outer products (x^T x) of one batch."""
    rows64 = rows.astype(np.float64)
    return rows64.sum(axis=0), rows64.T @ rows64


class FeatureStats:
    """Detector features of up to `max_items` images, kept as needed: every row
    (`capture_all`: KID, precision/recall, IS) and/or per-batch float64 sums of
    the rows and their outer products (`capture_mean_cov`: FID). Rows past
    `max_items` are ignored, so callers may overshoot with whole batches."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        fields = dict.fromkeys(_STATS_FIELDS)
        fields.update(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=max_items, num_items=0)
        self.__dict__.update(fields)

    def set_num_features(self, num_features):
        """Fix the width on the first batch (allocating the sums); later batches must match it."""
        if self.num_features is None:
            width = int(num_features)
            self.num_features = width
            self.all_features = []
            self.raw_mean = np.zeros([width], dtype=np.float64)
            self.raw_cov = np.zeros([width, width], dtype=np.float64)
        elif self.num_features != num_features:
            raise ValueError('features changed width: {} then {}'.format(self.num_features, num_features))

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x):
        """Add features `x` [N, F] (numpy); items beyond `max_items` are dropped."""
        rows = np.asarray(x, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError('features must be [N, F], got shape {}'.format(rows.shape))
        if self.max_items is not None:
            rows = rows[:max(0, self.max_items - self.num_items)]
        self.set_num_features(rows.shape[1])
        if len(rows) == 0:
            return
        self.num_items += len(rows)
        if self.capture_all:
            self.all_features.append(rows)
        if self.capture_mean_cov:
            row_sum, gram = _moment_sums(rows)
            self.raw_mean += row_sum
            self.raw_cov += gram

    def append_torch(self, x, num_gpus=1, rank=0):
        """Add a torch batch [N, F]; with several processes the batches of all ranks
        are gathered interleaved (item i of each rank in rank order), so every rank
        holds the same statistics."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError('features must be a [N, F] tensor')
        if rank < 0 or rank >= num_gpus:
            raise ValueError('rank {} is outside 0..{}'.format(rank, num_gpus - 1))
        x = gather_across_ranks(x, num_gpus, interleave=True)
        self.append(x.detach().float().cpu().numpy())

    def get_all(self):
        if not self.capture_all:
            raise RuntimeError('these stats were gathered without capture_all')
        if self.all_features:
            return np.concatenate(self.all_features, axis=0)
        return np.zeros([0, self.num_features or 0], dtype=np.float32)

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self):
        """Mean and covariance (normalised by N, not N - 1) in float64."""
        if not self.capture_mean_cov:
            raise RuntimeError('these stats were gathered without capture_mean_cov')
        n = self.num_items
        if n == 0:
            raise RuntimeError('no features were gathered')
        mean = self.raw_mean / n
        return mean, self.raw_cov / n - np.outer(mean, mean)

    def save(self, pkl_file):
        _write_atomically(pkl_file, {name: getattr(self, name) for name in _STATS_FIELDS})

    @staticmethod
    def load(pkl_file):
        with open(pkl_file, 'rb') as f:
            fields = pickle.load(f)
        stats = FeatureStats()
        stats.__dict__.update(fields)
        return stats


def _write_atomically(path, obj):
    """Pickle `obj` to a uniquely named file beside `path`, then rename it into
    place: concurrent readers never see half a file, and a crash leaves none."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    scratch = os.path.join(folder, '.tmp-{}-{}'.format(os.getpid(), uuid.uuid4().hex))
    try:
        with open(scratch, 'wb') as f:
            pickle.dump(obj, f)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)


class _Span:
    """The stretch [lo, hi] of a `progress_fn` scale 0..total that one stage reports into."""

    def __init__(self, lo, hi, total):
        self.lo, self.hi, self.total = lo, hi, total

    def at(self, fraction):
        return self.lo + (self.hi - self.lo) * fraction

    def part(self, rel_lo, rel_hi):
        return _Span(self.at(rel_lo), self.at(rel_hi), self.total)


def _progress_line(tag, done, total, elapsed):
    """`tag: done/total items (pct), rate items/s, elapsed T, ETA T` (or `, done`)."""
    rate = done / elapsed if elapsed > 0 else float('inf')
    if total is None:
        count = '{} items'.format(done)
    else:
        count = '{}/{} items ({:.0f}%)'.format(done, total, 100.0 * done / max(total, 1))
    words = ['{}: {}'.format(tag, count), '{:.1f} items/s'.format(rate),
             'elapsed {}'.format(dnnlib.util.format_time(elapsed))]
    if total is not None and done >= total:
        words.append('done')
    elif total is not None and done > 0:
        words.append('ETA {}'.format(dnnlib.util.format_time((total - done) / rate)))
    return ', '.join(words)


class ProgressMonitor:
    """Progress of one stage of a metric, to two outlets: a printed line (when
    `verbose` and the stage has a `tag`) and `progress_fn(cur, total)`, which
    sees the overall position mapped into [pfn_lo, pfn_hi] of pfn_total.

    Lines come every `flush_interval` items (at most a tenth of the stage),
    after `min_seconds` without one, and once at the end. `sub()` makes the
    monitor of a stage that covers [rel_lo, rel_hi] of this one's stretch.
    """

    def __init__(self, tag=None, num_items=None, flush_interval=1000, verbose=False, progress_fn=None,
                 pfn_lo=0, pfn_hi=1000, pfn_total=1000, min_seconds=10.0, stream=None):
        self.tag = tag
        self.num_items = num_items
        self.flush_interval = flush_interval
        if num_items:
            self.flush_interval = max(1, min(flush_interval, -(-num_items // 10)))
        self.verbose = verbose
        self.progress_fn = progress_fn
        self.span = _Span(pfn_lo, pfn_hi, pfn_total)
        self.min_seconds = min_seconds
        self.stream = stream
        self.start_time = time.time()
        self._last = (self.start_time, 0)  # (time, items) of the last report
        self._closed = False
        if progress_fn is not None:
            progress_fn(pfn_lo, pfn_total)

    def _due(self, done, now, finished):
        last_time, last_items = self._last
        if finished or done - last_items >= self.flush_interval:
            return True
        return done > last_items and now - last_time >= self.min_seconds

    def update(self, cur_items):
        done = cur_items if self.num_items is None else min(cur_items, self.num_items)
        finished = self.num_items is not None and done >= self.num_items
        now = time.time()
        if (finished and self._closed) or not self._due(done, now, finished):
            return
        self._closed = finished
        self._last = (now, done)
        if self.verbose and self.tag is not None:
            print(_progress_line(self.tag, done, self.num_items, now - self.start_time),
                  file=self.stream or sys.stdout, flush=True)
        if self.progress_fn is not None and self.num_items:
            self.progress_fn(self.span.at(done / self.num_items), self.span.total)

    def sub(self, tag=None, num_items=None, flush_interval=1000, rel_lo=0, rel_hi=1):
        span = self.span.part(rel_lo, rel_hi)
        return ProgressMonitor(tag=tag, num_items=num_items, flush_interval=flush_interval, verbose=self.verbose,
                               progress_fn=self.progress_fn, pfn_lo=span.lo, pfn_hi=span.hi, pfn_total=span.total,
                               min_seconds=self.min_seconds, stream=self.stream)


def to_rgb(images):
    """Grayscale NCHW images repeated to three channels; others unchanged."""
    return images.repeat([1, 3, 1, 1]) if images.shape[1] == 1 else images


def images_to_detector_input(img):
    """G output in about [-1, 1] -> uint8 NCHW with 3 channels."""
    return to_rgb((img * 127.5 + 128).clamp(0, 255).to(torch.uint8))


def open_dataset(opts):
    return dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)


def _close(dataset):
    if hasattr(dataset, 'close'):
        dataset.close()


def _rank0_decides(flag, opts):
    """Rank 0's boolean on every rank (the other ranks' own value is ignored)."""
    if opts.num_gpus <= 1:
        return flag
    # gloo reduces CPU tensors; nccl needs CUDA ones.
    where = opts.device if opts.device.type == 'cuda' else torch.device('cpu')
    vote = torch.as_tensor(1 if flag else 0, dtype=torch.float32, device=where)
    torch.distributed.broadcast(tensor=vote, src=0)
    return float(vote.cpu()) != 0


def stats_cache_key(opts, detector_path, detector_kwargs, stats_kwargs, extra=None):
    """md5 over everything the real statistics depend on."""
    detector = dict(name=detectors.detector_name(detector_path), md5=detectors.detector_fingerprint(detector_path))
    key = dict(dataset_kwargs=dict(opts.dataset_kwargs), detector=detector, detector_kwargs=dict(detector_kwargs),
               stats_kwargs=dict(stats_kwargs), extra=extra)
    return hashlib.md5(json.dumps(key, sort_keys=True, default=repr).encode('utf-8')).hexdigest()


def _real_stats_file(opts, dataset, detector_path, detector_kwargs, stats_kwargs, max_items):
    """Where the cache keeps these real statistics (None when caching is off)."""
    if not opts.cache:
        return None
    digest = stats_cache_key(opts, detector_path, detector_kwargs, stats_kwargs, extra=dict(max_items=max_items))
    name = '{}-{}-{}.pkl'.format(dataset.name, detectors.detector_name(detector_path), digest)
    return dnnlib.util.make_cache_dir_path('gan-metrics', name)


def _items_of_rank(num_items, num_gpus, rank):
    """Indices this rank reads: every num_gpus-th from `rank`, wrapping around so
    that all ranks take the same number of batches (the extras fall past max_items)."""
    per_rank = -(-num_items // num_gpus)
    return [i % num_items for i in range(rank, rank + per_rank * num_gpus, num_gpus)]


def _loader_kwargs(device):
    if device.type != 'cuda':
        return dict(num_workers=0)
    return dict(pin_memory=True, num_workers=3, prefetch_factor=2)


def _absorb(stats, detector, images, detector_kwargs, opts, progress):
    """Features of one batch of uint8 RGB images into `stats` (gathered over ranks)."""
    stats.append_torch(detector(images, **detector_kwargs), num_gpus=opts.num_gpus, rank=opts.rank)
    progress.update(stats.num_items)


def _features_of_real_images(opts, dataset, detector_path, detector_kwargs, stats, progress, batch_size,
                             loader_kwargs):
    detector = get_feature_detector(detector_path, device=opts.device)
    order = _items_of_rank(stats.max_items, opts.num_gpus, opts.rank)
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=order, batch_size=batch_size, **loader_kwargs)
    batches = (to_rgb(torch.as_tensor(images)).to(opts.device) for images, _ in loader)
    with torch.no_grad():
        for images in batches:
            _absorb(stats, detector, images, detector_kwargs, opts, progress)
    return stats


def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                      data_loader_kwargs=None, max_items=None, **stats_kwargs):
    """Detector features of the real images (the first `max_items`, or all), cached on disk."""
    dataset = open_dataset(opts)
    try:
        detector_path = detectors.resolve_asset(detector_url, detector_dir=opts.detector_dir,
                                                verbose=(opts.rank == 0))
        cache_file = _real_stats_file(opts, dataset, detector_path, detector_kwargs, stats_kwargs, max_items)
        if cache_file is not None and _rank0_decides(opts.rank == 0 and os.path.isfile(cache_file), opts):
            return FeatureStats.load(cache_file)
        total = len(dataset) if max_items is None else min(len(dataset), int(max_items))
        stats = FeatureStats(max_items=total, **stats_kwargs)
        progress = opts.progress.sub(tag='dataset features', num_items=total, rel_lo=rel_lo, rel_hi=rel_hi)
        if data_loader_kwargs is None:
            data_loader_kwargs = _loader_kwargs(opts.device)
        _features_of_real_images(opts, dataset, detector_path, detector_kwargs, stats, progress, batch_size,
                                 data_loader_kwargs)
    finally:
        _close(dataset)
    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats


def _no_labels(n, device):
    return torch.zeros([n, 0], device=device)


def _labels_from_dataset(dataset, n, device):
    picks = np.random.randint(len(dataset), size=n)
    labels = np.stack([dataset.get_label(int(i)) for i in picks]).astype(np.float32)
    return torch.from_numpy(labels).to(device)


def _uniform_classes(c_dim, n, device):
    classes = torch.randint(c_dim, [n])
    return torch.nn.functional.one_hot(classes, c_dim).to(device=device, dtype=torch.float32)


def make_label_sampler(dataset, c_dim):
    """A function (n, device) -> [n, c_dim] conditioning labels for G: labels of
    random real items when the data set has labels of that width, otherwise
    uniformly drawn one-hot classes (with a warning)."""
    c_dim = int(c_dim)
    if c_dim == 0:
        return _no_labels
    if getattr(dataset, 'label_dim', 0) == c_dim and len(dataset) > 0:
        return functools.partial(_labels_from_dataset, dataset)
    print('warning: the data set gives no {}-d labels for this conditional G; drawing classes uniformly'
          .format(c_dim))
    return functools.partial(_uniform_classes, c_dim)


def _fake_batches(G, draw_labels, G_kwargs, device, batch_size, chunk):
    """Endless detector-ready batches of `batch_size` fakes, each made `chunk` images
    at a time (for every chunk: its latents, then its labels, then G)."""
    while True:
        pieces = []
        for _ in range(batch_size // chunk):
            z = torch.randn([chunk, G.z_dim], device=device)
            c = draw_labels(chunk, device)
            pieces.append(images_to_detector_input(G(z=z, c=c, **G_kwargs)))
        yield torch.cat(pieces)


def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                        batch_gen=None, **stats_kwargs):
    """Detector features of `max_items` images from `opts.G` (random z, labels drawn from the data set)."""
    if batch_gen is None:
        # A GPU makes 4 at a time (memory at high resolution); on the CPU per-call
        # overhead dominates, so the whole batch goes at once.
        batch_gen = min(batch_size, 4) if opts.device.type == 'cuda' else batch_size
    if batch_size % batch_gen:
        raise ValueError('batch_size ({}) must be a multiple of batch_gen ({})'.format(batch_size, batch_gen))
    stats = FeatureStats(**stats_kwargs)
    if stats.max_items is None:
        raise ValueError('generator stats need max_items')

    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    dataset = open_dataset(opts)
    try:
        fakes = _fake_batches(G, make_label_sampler(dataset, G.c_dim), opts.G_kwargs, opts.device, batch_size,
                              batch_gen)
        detector = get_feature_detector(detector_url, device=opts.device, detector_dir=opts.detector_dir)
        progress = opts.progress.sub(tag='generator features', num_items=stats.max_items, rel_lo=rel_lo,
                                     rel_hi=rel_hi)
        with torch.no_grad():
            while not stats.is_full():
                _absorb(stats, detector, next(fakes), detector_kwargs, opts, progress)
    finally:
        _close(dataset)
    return stats
