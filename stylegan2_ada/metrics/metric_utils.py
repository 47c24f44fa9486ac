"""What every metric shares: options, feature statistics, progress, and the
two feature pipelines (real images from the data set, images from G).

Real-image statistics depend only on the data set, the detector and the
options, so they are cached as
`<dnnlib cache>/gan-metrics/<dataset>-<detector>-<md5 of the key>.pkl`,
written atomically by rank 0 and reused by later runs and by every metric
that asks for the same thing.
"""
import copy
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

# Options.


class MetricOptions:
    """Everything a metric function needs; `calc_metric(**kwargs)` builds one.

    `detector_dir` is an extra folder to find detector files in (see
    `metrics.detectors`); `cache=False` neither reads nor writes real stats.
    """

    def __init__(self, G=None, G_kwargs=None, dataset_kwargs=None, num_gpus=1, rank=0, device=None, progress=None,
                 cache=True, detector_dir=None):
        if not 0 <= rank < num_gpus:
            raise ValueError('rank {} is outside 0..{}'.format(rank, num_gpus - 1))
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.num_gpus = int(num_gpus)
        self.rank = int(rank)
        if device is None:
            device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
        self.device = torch.device(device)
        self.progress = progress.sub() if progress is not None else ProgressMonitor()
        self.cache = bool(cache)
        self.detector_dir = detector_dir

# Detectors.


def get_feature_detector(url, device=torch.device('cpu'), detector_dir=None, verbose=False):
    """A detector network by URL (or asset key / local path), loaded once per process and device."""
    return detectors.load_detector(url, device, detector_dir=detector_dir, verbose=verbose)


def get_feature_detector_name(url):
    """Short detector name from a URL or path: 'inception-2015-12-05' for NVIDIA's Inception."""
    return os.path.splitext(url.split('/')[-1])[0]

# Feature statistics.


class FeatureStats:
    """Accumulates detector features: all of them (`capture_all`) and/or their
    running mean and covariance in float64 (`capture_mean_cov`), up to `max_items`."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None
        self.raw_mean = None
        self.raw_cov = None

    def set_num_features(self, num_features):
        if self.num_features is not None:
            if num_features != self.num_features:
                raise ValueError('features changed width: {} then {}'.format(self.num_features, num_features))
            return
        self.num_features = int(num_features)
        self.all_features = []
        self.raw_mean = np.zeros([num_features], dtype=np.float64)
        self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x):
        """Add features `x` [N, F] (numpy); items beyond `max_items` are dropped."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError('features must be [N, F], got shape {}'.format(x.shape))
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        self.set_num_features(x.shape[1])
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x, num_gpus=1, rank=0):
        """Add a torch batch [N, F]; with several processes every rank's batch is
        gathered (interleaved: item i of each rank in rank order), so all ranks hold the same stats."""
        if not (isinstance(x, torch.Tensor) and x.ndim == 2):
            raise ValueError('features must be a [N, F] tensor')
        if not 0 <= rank < num_gpus:
            raise ValueError('rank {} is outside 0..{}'.format(rank, num_gpus - 1))
        if num_gpus > 1:
            parts = [torch.empty_like(x) for _ in range(num_gpus)]
            torch.distributed.all_gather(parts, x)
            x = torch.stack(parts, dim=1).flatten(0, 1)
        self.append(x.detach().float().cpu().numpy())

    def get_all(self):
        if not self.capture_all:
            raise RuntimeError('these stats were gathered without capture_all')
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self):
        """Mean and covariance (normalised by N) in float64."""
        if not self.capture_mean_cov:
            raise RuntimeError('these stats were gathered without capture_mean_cov')
        if self.num_items == 0:
            raise RuntimeError('no features were gathered')
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, pkl_file):
        """Write atomically: a temporary file beside the target, then a rename."""
        folder = os.path.dirname(os.path.abspath(pkl_file))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, '.tmp-{}-{}'.format(os.getpid(), uuid.uuid4().hex))
        try:
            with open(tmp, 'wb') as f:
                pickle.dump(dict(self.__dict__), f)
            os.replace(tmp, pkl_file)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @staticmethod
    def load(pkl_file):
        with open(pkl_file, 'rb') as f:
            state = pickle.load(f)
        obj = FeatureStats(capture_all=state['capture_all'], max_items=state['max_items'])
        obj.__dict__.update(state)
        return obj

# Progress.


class ProgressMonitor:
    """Prints `tag: done/total items (pct), rate, elapsed, ETA` while features are computed.

    `sub()` gives a child for one stage; `progress_fn(cur, total)` (if any)
    receives the overall fraction mapped to [pfn_lo, pfn_hi] of pfn_total.
    A line comes every `flush_interval` items (at most a tenth of the stage),
    or after `min_seconds` without one, and at the end.
    """

    def __init__(self, tag=None, num_items=None, flush_interval=1000, verbose=False, progress_fn=None,
                 pfn_lo=0, pfn_hi=1000, pfn_total=1000, min_seconds=10.0, stream=None):
        self.tag = tag
        self.num_items = num_items
        if num_items:  # at least about ten lines per stage
            flush_interval = max(1, min(flush_interval, -(-num_items // 10)))
        self.flush_interval = flush_interval
        self.verbose = verbose
        self.progress_fn = progress_fn
        self.pfn_lo = pfn_lo
        self.pfn_hi = pfn_hi
        self.pfn_total = pfn_total
        self.min_seconds = min_seconds
        self.stream = stream
        self.start_time = time.time()
        self.last_print_time = self.start_time
        self.last_print_items = 0
        self.lines = 0
        self.finished = False
        if self.progress_fn is not None:
            self.progress_fn(self.pfn_lo, self.pfn_total)

    def update(self, cur_items):
        if self.num_items is not None and cur_items > self.num_items:
            cur_items = self.num_items
        now = time.time()
        done = self.num_items is not None and cur_items >= self.num_items
        if done and self.finished:
            return
        due = done or cur_items - self.last_print_items >= self.flush_interval or (
            now - self.last_print_time >= self.min_seconds and cur_items > self.last_print_items)
        if not due:
            return
        self.finished = done
        elapsed = now - self.start_time
        if self.verbose and self.tag is not None:
            rate = cur_items / elapsed if elapsed > 0 else float('inf')
            line = '{}: {}'.format(self.tag, cur_items)
            if self.num_items is not None:
                line += '/{} items ({:.0f}%)'.format(self.num_items, 100.0 * cur_items / max(self.num_items, 1))
            else:
                line += ' items'
            line += ', {:.1f} items/s, elapsed {}'.format(rate, dnnlib.util.format_time(elapsed))
            if self.num_items is not None:
                if done:
                    line += ', done'
                elif cur_items > 0:
                    line += ', ETA {}'.format(dnnlib.util.format_time((self.num_items - cur_items) / rate))
            stream = self.stream or sys.stdout
            print(line, file=stream, flush=True)
            self.lines += 1
        self.last_print_time = now
        self.last_print_items = cur_items
        if self.progress_fn is not None and self.num_items:
            frac = cur_items / self.num_items
            self.progress_fn(self.pfn_lo + (self.pfn_hi - self.pfn_lo) * frac, self.pfn_total)

    def sub(self, tag=None, num_items=None, flush_interval=1000, rel_lo=0, rel_hi=1):
        return ProgressMonitor(
            tag=tag, num_items=num_items, flush_interval=flush_interval, verbose=self.verbose,
            progress_fn=self.progress_fn,
            pfn_lo=self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_lo,
            pfn_hi=self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_hi,
            pfn_total=self.pfn_total, min_seconds=self.min_seconds, stream=self.stream)

# Helpers.


def images_to_detector_input(img):
    """G output in about [-1, 1] -> uint8 NCHW with 3 channels."""
    img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return to_rgb(img)


def to_rgb(images):
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    return images


def _broadcast_flag(flag, opts):
    if opts.num_gpus <= 1:
        return flag
    t = torch.as_tensor(1 if flag else 0, dtype=torch.float32, device=_sync_device(opts))
    torch.distributed.broadcast(tensor=t, src=0)
    return float(t.cpu()) != 0


def _sync_device(opts):
    # gloo reduces CPU tensors; nccl needs CUDA ones.
    return opts.device if opts.device.type == 'cuda' else torch.device('cpu')


def stats_cache_key(opts, detector_path, detector_kwargs, stats_kwargs, extra=None):
    """md5 over everything the real statistics depend on."""
    key = dict(
        dataset_kwargs=dict(opts.dataset_kwargs),
        detector=dict(name=detectors.detector_name(detector_path), md5=detectors.detector_fingerprint(detector_path)),
        detector_kwargs=dict(detector_kwargs),
        stats_kwargs=dict(stats_kwargs),
        extra=extra,
    )
    text = json.dumps(key, sort_keys=True, default=repr)
    return hashlib.md5(text.encode('utf-8')).hexdigest()


def open_dataset(opts):
    return dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)


def _default_loader_kwargs(device):
    if device.type == 'cuda':
        return dict(pin_memory=True, num_workers=3, prefetch_factor=2)
    return dict(num_workers=0)

# Feature pipelines.


def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                      data_loader_kwargs=None, max_items=None, **stats_kwargs):
    """Detector features of the real images (the first `max_items`, or all), cached on disk."""
    dataset = open_dataset(opts)
    if data_loader_kwargs is None:
        data_loader_kwargs = _default_loader_kwargs(opts.device)

    detector_path = detectors.resolve_asset(detector_url, detector_dir=opts.detector_dir,
                                            verbose=(opts.rank == 0))
    cache_file = None
    if opts.cache:
        key = stats_cache_key(opts, detector_path, detector_kwargs, stats_kwargs, extra=dict(max_items=max_items))
        cache_tag = '{}-{}-{}'.format(dataset.name, detectors.detector_name(detector_path), key)
        cache_file = dnnlib.util.make_cache_dir_path('gan-metrics', cache_tag + '.pkl')
        found = os.path.isfile(cache_file) if opts.rank == 0 else False
        if _broadcast_flag(found, opts):
            if hasattr(dataset, 'close'):
                dataset.close()
            return FeatureStats.load(cache_file)

    num_items = len(dataset)
    if max_items is not None:
        num_items = min(num_items, int(max_items))
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    progress = opts.progress.sub(tag='dataset features', num_items=num_items, rel_lo=rel_lo, rel_hi=rel_hi)
    detector = get_feature_detector(detector_path, device=opts.device)

    per_rank = (num_items - 1) // opts.num_gpus + 1
    item_subset = [(i * opts.num_gpus + opts.rank) % num_items for i in range(per_rank)]
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=item_subset, batch_size=batch_size,
                                         **data_loader_kwargs)
    with torch.no_grad():
        for images, _labels in loader:
            images = to_rgb(torch.as_tensor(images))
            features = detector(images.to(opts.device), **detector_kwargs)
            stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
            progress.update(stats.num_items)
    if hasattr(dataset, 'close'):
        dataset.close()

    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats


class _LabelSampler:
    """Random conditioning labels for G, drawn from the data set's labels."""

    def __init__(self, dataset, c_dim):
        self.dataset = dataset
        self.c_dim = int(c_dim)
        self.from_dataset = self.c_dim > 0 and getattr(dataset, 'label_dim', 0) == self.c_dim and len(dataset) > 0
        if self.c_dim > 0 and not self.from_dataset:
            print('warning: the data set gives no {}-d labels for this conditional G; drawing classes uniformly'
                  .format(self.c_dim))

    def __call__(self, n, device):
        if self.c_dim == 0:
            return torch.zeros([n, 0], device=device)
        if self.from_dataset:
            idx = np.random.randint(len(self.dataset), size=n)
            c = np.stack([self.dataset.get_label(int(i)) for i in idx]).astype(np.float32)
            return torch.from_numpy(c).to(device)
        c = torch.zeros([n, self.c_dim], device=device)
        c[torch.arange(n), torch.randint(self.c_dim, [n])] = 1
        return c


def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                        batch_gen=None, **stats_kwargs):
    """Detector features of images from `opts.G` (random z, labels drawn from the data set)."""
    if batch_gen is None:
        # G runs in chunks of 4 on a GPU (memory at high resolution); on the CPU
        # per-call overhead dominates, so the whole batch goes at once.
        batch_gen = min(batch_size, 4) if opts.device.type == 'cuda' else batch_size
    if batch_size % batch_gen != 0:
        raise ValueError('batch_size ({}) must be a multiple of batch_gen ({})'.format(batch_size, batch_gen))
    stats = FeatureStats(**stats_kwargs)
    if stats.max_items is None:
        raise ValueError('generator stats need max_items')

    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    dataset = open_dataset(opts)
    sample_c = _LabelSampler(dataset, G.c_dim)
    detector = get_feature_detector(detector_url, device=opts.device, detector_dir=opts.detector_dir)
    progress = opts.progress.sub(tag='generator features', num_items=stats.max_items, rel_lo=rel_lo, rel_hi=rel_hi)

    with torch.no_grad():
        while not stats.is_full():
            images = []
            for _ in range(batch_size // batch_gen):
                z = torch.randn([batch_gen, G.z_dim], device=opts.device)
                c = sample_c(batch_gen, opts.device)
                images.append(images_to_detector_input(G(z=z, c=c, **opts.G_kwargs)))
            images = torch.cat(images)
            features = detector(images, **detector_kwargs)
            stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
            progress.update(stats.num_items)
    if hasattr(dataset, 'close'):
        dataset.close()
    return stats
