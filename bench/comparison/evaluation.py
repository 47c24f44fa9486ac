"""Evaluating kept snapshots in-process with the harness's metrics, as calc_metrics.py would."""
import contextlib
import copy
import io
import os
import re

from bench.comparison.common import CompareError


class Evaluator:
    def __init__(self, cfg):
        import numpy as np
        import torch
        self.np, self.torch = np, torch
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self._dataset_kwargs = {}
        self._warm = False

    def _metric(self, G, dataset_kwargs):
        """The metric of G with the latents and labels of seed 0, as every snapshot gets them."""
        from metrics import metric_main, metric_utils
        self.torch.manual_seed(0)
        self.np.random.seed(0)
        return metric_main.calc_metric(metric=self.cfg.metric, G=G, dataset_kwargs=dataset_kwargs, num_gpus=1, rank=0,
                                       device=self.device, progress=metric_utils.ProgressMonitor(verbose=False),
                                       detector_dir=self.cfg.detector_dir)

    def dataset_kwargs(self, G, pkl_kwargs):
        key = (G.img_resolution, G.c_dim)
        if key not in self._dataset_kwargs:
            import calc_metrics
            with contextlib.redirect_stdout(io.StringIO()):
                self._dataset_kwargs[key] = calc_metrics._dataset_kwargs(
                    self.cfg.eval_data, None, pkl_kwargs, G)
        return copy.deepcopy(self._dataset_kwargs[key])

    def __call__(self, pkl):
        from metrics import metric_main
        G, data = load_generator(pkl, self.device)
        kwargs = self.dataset_kwargs(G, data.get('training_set_kwargs'))
        if not self._warm:
            # Computing the real images' statistics (no cache yet) draws from torch's generator, which
            # would shift this snapshot's latents against every later one (they read the cache); one
            # throw-away evaluation per process fills the cache, so every value is drawn the same way.
            self._metric(G, kwargs)
            self._warm = True
        result = self._metric(G, kwargs)
        with contextlib.redirect_stdout(io.StringIO()):
            metric_main.report_metric(result, run_dir=os.path.dirname(pkl), snapshot_pkl=pkl)
        return result


def resolve_device(name):
    """--device's value as a torch device: 'auto' is the GPU when there is one."""
    import torch
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(name)


def load_generator(pkl, device):
    """A snapshot's generator as every reading of it uses it: G_ema (G when the pickle has none), a frozen
    copy in eval mode on `device`; also the pickle's entries (training_set_kwargs for the metrics)."""
    import legacy
    with open(pkl, 'rb') as f:
        data = legacy.load_network_pkl(f)
    G = data['G_ema'] if data.get('G_ema') is not None else data['G']
    return copy.deepcopy(G).eval().requires_grad_(False).to(device), data


def evaluated(cfg, snaps):
    """The snapshots that get the metric: all, or all but the untrained tick-0 one with --skip-start."""
    return [s for s in snaps if not (cfg.skip_start and s['tick'] == 0)]


def primary_key(metric, results):
    """The result a snapshot is ranked by: the metric's own key, else the first one
    (FID for `fidkid*`: its results are {fid..., kid...})."""
    for key in (metric, metric + '_mean'):
        if key in results:
            return key
    return next(iter(results), None)


def primary_value(metric, results):
    return float(results[primary_key(metric, results)])


def higher_is_better(metric, better):
    if better != 'auto':
        return better == 'higher'
    return bool(re.match(r'^(is|pr)', metric))


def metric_identity(cfg):
    """What an evaluation depends on: metric, data compared against and detector files (by content)."""
    from metrics import detectors, metric_main
    try:
        metric_main.validate_metrics([cfg.metric], check_files=False)
        found = metric_main.check_detectors([cfg.metric], detector_dir=cfg.detector_dir)
    except ValueError as err:
        raise CompareError('--metric: {}'.format(err))
    except detectors.AssetUnavailableError as err:
        raise CompareError(str(err.for_metrics([cfg.metric], metric_main.required_detectors, 'bench/compare.py')))
    files = {name: dict(path=path, md5=detectors.detector_fingerprint(path)) for name, path in found.items()}
    key = '{}|{}|{}'.format(cfg.metric, cfg.eval_data,
                            ','.join('{}={}'.format(k, v['md5'][:12]) for k, v in sorted(files.items())))
    return key, files


def stage_detector(outdir, detector, detector_dir, metric=None):
    """--detector=FILE: checked against the documented call (detectors.FEATURE_SIGNATURE), then
    placed in <outdir>/detector, where it stands for the Inception detector and is searched first."""
    from metrics import detectors
    path = os.path.abspath(os.path.expanduser(detector))
    if not os.path.isfile(path):
        raise CompareError('--detector: {} is not a file; give a TorchScript feature network called as {}'.format(
            detector, detectors.FEATURE_SIGNATURE))
    try:
        detectors.check_feature_detector(path, probabilities=bool(metric and metric.startswith('is')))
        folder = detectors.stage_detector(path, os.path.join(outdir, 'detector'))
    except (ValueError, OSError) as err:
        raise CompareError(str(err))
    return folder + (os.pathsep + detector_dir if detector_dir else '')
