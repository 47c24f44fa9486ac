"""The metric registry: names -> functions, `calc_metric`, `report_metric`, and
the up-front detector check that training and calc_metrics.py run first.

    result = calc_metric('fid50k_full', G=G_ema, dataset_kwargs=training_set_kwargs,
                         num_gpus=1, rank=0, device=device)
    report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)

Register another metric with `@register_metric` (or
`register_metric(detectors=('inception',))(fn)` so that `check_detectors`
knows what it needs); the function takes a `metric_utils.MetricOptions` and
returns a dict of results.
"""
import json
import os
import re
import time

import dnnlib
from metrics import detectors as detector_lib

# The metric implementations (and torch) are imported when a metric runs, not
# here: importing torch takes seconds, and `check_detectors` must answer an
# offline user faster than that.

_metric_dict = dict()       # name -> function(opts) -> dict of results
_metric_detectors = dict()  # name -> tuple of asset keys or URLs, or None when unknown

# Registry.


def register_metric(fn=None, *, detectors=None, name=None):
    """Register `fn(opts) -> dict` under its name (or `name`). Usable as `@register_metric`
    or `@register_metric(detectors=('inception',))`; re-registering a name replaces it."""
    def wrap(func):
        if not callable(func):
            raise TypeError('a metric must be callable')
        key = name or func.__name__
        _metric_dict[key] = func
        _metric_detectors[key] = tuple(detectors) if detectors is not None else None
        return func
    return wrap(fn) if fn is not None else wrap


def is_valid_metric(metric):
    """True for a registered name, or a sized variant of one (`fid10k_full`, `kid2k_full`, `is1k`)."""
    if not isinstance(metric, str):
        return False
    if metric not in _metric_dict:
        _register_sized(metric)
    return metric in _metric_dict


def list_valid_metrics():
    """The registered names (sized variants such as fid10k_full are valid too but not listed)."""
    return [name for name in _metric_dict if name not in _sized_names]


def required_detectors(metrics):
    """Asset keys / URLs of the detectors a list of metric names needs, without duplicates, in order.

    Raises ValueError for unknown names."""
    out = []
    for metric in metrics:
        if not is_valid_metric(metric):
            raise ValueError('unknown metric {!r}; valid: {}'.format(metric, ', '.join(list_valid_metrics())))
        for det in _metric_detectors.get(metric) or ():
            if det not in out:
                out.append(det)
    return out


def validate_metrics(metrics, detector_dir=None, check_files=True):
    """What train.py and calc_metrics.py call first: the list of names, checked.

    Raises ValueError (one line) for an unknown name and, with `check_files`,
    `detectors.AssetUnavailableError` (one line, a FileNotFoundError) when a
    detector can be neither found nor downloaded. Imports no torch.
    """
    metrics = list(metrics)
    bad = [m for m in metrics if not is_valid_metric(m)]
    if bad:
        raise ValueError('unknown metric(s) {}; valid: {}'.format(', '.join(bad), ', '.join(list_valid_metrics())))
    if check_files and metrics:
        check_detectors(metrics, detector_dir=detector_dir)
    return metrics


def check_detectors(metrics, detector_dir=None, quick=True, verbose=False):
    """Make sure every detector `metrics` need is at hand, fetching it if the network allows.

    Returns {asset key or URL: local path}. With no file and no network it
    raises `detectors.AssetUnavailableError` within a few seconds; its
    message is one line naming the file, its URL, `--detector-dir`,
    `$KDGAN_DETECTOR_DIR` and the cache path. Call it before training starts.
    """
    found = {}
    for det in required_detectors(metrics):
        found[det] = detector_lib.resolve_asset(det, detector_dir=detector_dir, quick=quick, verbose=verbose)
    return found

# Running and reporting.


def _broadcast_results(results, opts):
    """Rank 0's values on every rank (other ranks compute NaN placeholders)."""
    if opts.num_gpus <= 1:
        return results
    import torch
    device = opts.device if opts.device.type == 'cuda' else torch.device('cpu')
    out = dnnlib.EasyDict()
    for key in sorted(results):
        t = torch.as_tensor(float(results[key]), dtype=torch.float64, device=device)
        torch.distributed.broadcast(tensor=t, src=0)
        out[key] = float(t.cpu())
    return out


def calc_metric(metric, **kwargs):
    """Compute one registered metric. `kwargs` are `MetricOptions`' (G, G_kwargs, dataset_kwargs,
    num_gpus, rank, device, progress, cache, detector_dir).

    Returns EasyDict(results, metric, total_time, total_time_str, num_gpus).
    """
    if not is_valid_metric(metric):
        raise ValueError('unknown metric {!r}; valid: {}'.format(metric, ', '.join(list_valid_metrics())))
    from metrics import metric_utils
    opts = metric_utils.MetricOptions(**kwargs)
    started = time.time()
    raw = _metric_dict[metric](opts)
    seconds = time.time() - started
    values = _broadcast_results(dnnlib.EasyDict(raw), opts)
    # Key order matters: it is the order of the fields in the jsonl line.
    return dnnlib.EasyDict(results=dnnlib.EasyDict((key, float(val)) for key, val in values.items()),
                           metric=metric, total_time=seconds, total_time_str=dnnlib.util.format_time(seconds),
                           num_gpus=opts.num_gpus)


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print the result and append it as one JSON line to `<run_dir>/metric-<name>.jsonl`.

    `snapshot_pkl` is stored relative to `run_dir` when both are given.
    """
    metric = result_dict['metric']
    if not is_valid_metric(metric):
        raise ValueError('unknown metric {!r}'.format(metric))
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)

    from torch_utils.training_stats import strict_json_value   # torch is loaded once a metric has run.
    line = json.dumps(strict_json_value(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time())),
                      allow_nan=False)   # Strict JSON: a non-finite result is written as null.
    print(line, flush=True)
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, 'metric-{}.jsonl'.format(metric)), 'at', encoding='utf-8') as f:
            f.write(line + '\n')

# Building blocks, so other protocols are one line each.

_INCEPTION = ('inception',)
_VGG16 = ('vgg16',)


def _full(opts):
    """Metrics against the whole training set: no subset, no mirroring."""
    opts.dataset_kwargs.update(max_size=None, xflip=False)


def make_fid(max_real, num_gen, full=True):
    """A metric function: FID of `num_gen` generated vs the first `max_real` real images (None: all)."""
    def fn(opts):
        if full:
            _full(opts)
        else:
            opts.dataset_kwargs.update(max_size=None)
        from metrics import frechet_inception_distance
        return {fn.__name__: frechet_inception_distance.compute_fid(opts, max_real=max_real, num_gen=num_gen)}
    return fn


def make_kid(max_real, num_gen, num_subsets=100, max_subset_size=1000, full=True):
    def fn(opts):
        if full:
            _full(opts)
        else:
            opts.dataset_kwargs.update(max_size=None)
        from metrics import kernel_inception_distance
        kid = kernel_inception_distance.compute_kid(opts, max_real=max_real, num_gen=num_gen,
                                                    num_subsets=num_subsets, max_subset_size=max_subset_size)
        return {fn.__name__: kid}
    return fn


def make_fid_kid(max_real, num_gen, num_subsets=100, max_subset_size=1000):
    """FID and KID from one set of features (`fidkid5k_full` -> {'fid5k_full': ..., 'kid5k_full': ...}):
    for comparisons that report both, at the cost of one generation pass."""
    def fn(opts):
        _full(opts)
        from metrics import kernel_inception_distance
        fid, kid = kernel_inception_distance.compute_fid_kid(opts, max_real=max_real, num_gen=num_gen,
                                                             num_subsets=num_subsets, max_subset_size=max_subset_size)
        suffix = fn.__name__[len('fidkid'):]
        return {'fid' + suffix: fid, 'kid' + suffix: kid}
    return fn


def make_pr(max_real, num_gen, nhood_size=3, row_batch_size=10000, col_batch_size=10000, full=True):
    def fn(opts):
        if full:
            _full(opts)
        else:
            opts.dataset_kwargs.update(max_size=None)
        from metrics import precision_recall
        precision, recall = precision_recall.compute_pr(opts, max_real=max_real, num_gen=num_gen,
                                                        nhood_size=nhood_size, row_batch_size=row_batch_size,
                                                        col_batch_size=col_batch_size)
        return {fn.__name__ + '_precision': precision, fn.__name__ + '_recall': recall}
    return fn


def make_is(num_gen, num_splits=10):
    def fn(opts):
        _full(opts)
        from metrics import inception_score
        mean, std = inception_score.compute_is(opts, num_gen=num_gen, num_splits=num_splits)
        return {fn.__name__ + '_mean': mean, fn.__name__ + '_std': std}
    return fn


def make_ppl(num_samples, space, sampling, crop, epsilon=1e-4, batch_size=2):
    def fn(opts):
        from metrics import perceptual_path_length
        ppl = perceptual_path_length.compute_ppl(opts, num_samples=num_samples, epsilon=epsilon, space=space,
                                                 sampling=sampling, crop=crop, batch_size=batch_size)
        return {fn.__name__: ppl}
    return fn


def register_builtin(name, fn, detectors):
    """Register a metric function made by one of the `make_*` helpers under `name`."""
    fn.__name__ = name
    return register_metric(fn, detectors=detectors, name=name)

# The registered metrics. Recommended:

register_builtin('fid50k_full', make_fid(max_real=None, num_gen=50000), _INCEPTION)
register_builtin('kid50k_full', make_kid(max_real=1000000, num_gen=50000), _INCEPTION)
register_builtin('pr50k3_full', make_pr(max_real=200000, num_gen=50000), _VGG16)
register_builtin('ppl2_wend', make_ppl(num_samples=50000, space='w', sampling='end', crop=False), _VGG16)
register_builtin('is50k', make_is(num_gen=50000), _INCEPTION)

# The few-shot protocol (DiffAugment, FastGAN, KD-DLGAN): 5k generated vs the whole training set.
register_builtin('fid5k_full', make_fid(max_real=None, num_gen=5000), _INCEPTION)
register_builtin('kid5k_full', make_kid(max_real=None, num_gen=5000), _INCEPTION)
register_builtin('fidkid5k_full', make_fid_kid(max_real=None, num_gen=5000), _INCEPTION)

# Legacy (StyleGAN / StyleGAN2 papers).
register_builtin('fid50k', make_fid(max_real=50000, num_gen=50000, full=False), _INCEPTION)
register_builtin('kid50k', make_kid(max_real=50000, num_gen=50000, full=False), _INCEPTION)
register_builtin('pr50k3', make_pr(max_real=50000, num_gen=50000, full=False), _VGG16)
register_builtin('ppl_zfull', make_ppl(num_samples=50000, space='z', sampling='full', crop=True), _VGG16)
register_builtin('ppl_wfull', make_ppl(num_samples=50000, space='w', sampling='full', crop=True), _VGG16)
register_builtin('ppl_zend', make_ppl(num_samples=50000, space='z', sampling='end', crop=True), _VGG16)
register_builtin('ppl_wend', make_ppl(num_samples=50000, space='w', sampling='end', crop=True), _VGG16)

# Sized variants: the same protocols with another number of generated images,
# `<N>` or `<N>k` (for quick checks and small data: fid1k_full, fid64_full,
# kid10k_full, is5k). They register themselves when first named, in any
# process (spawned ranks included).

_SIZED = (
    (re.compile(r'fid([1-9][0-9]*)(k?)_full'), lambda n: make_fid(max_real=None, num_gen=n), _INCEPTION, 2),
    (re.compile(r'kid([1-9][0-9]*)(k?)_full'), lambda n: make_kid(max_real=1000000, num_gen=n), _INCEPTION, 2),
    (re.compile(r'fidkid([1-9][0-9]*)(k?)_full'), lambda n: make_fid_kid(max_real=None, num_gen=n), _INCEPTION, 2),
    (re.compile(r'is([1-9][0-9]*)(k?)'), lambda n: make_is(num_gen=n), _INCEPTION, 10),
)


_sized_names = set()


def _register_sized(metric):
    for pattern, make, dets, minimum in _SIZED:
        m = pattern.fullmatch(metric)
        if m:
            num_gen = int(m.group(1)) * (1000 if m.group(2) else 1)
            if num_gen >= minimum:
                register_builtin(metric, make(num_gen), dets)
                _sized_names.add(metric)
            return
