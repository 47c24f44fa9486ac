"""How many generated images does the evaluator recognise: the share of samples whose top class probability
(softmax of the detector's logits) is at least 0.9, at the best and the final snapshot of each run.

FID can sit still while samples turn from blobs into garments; this share says how many samples a
classifier of the data's own classes accepts. So it needs such a classifier returning logits, as the
Fashion-MNIST evaluator does (`det(images)` -> [N, 10]). Inception's classes are ImageNet's: with it, or
with a detector that gives no logits, there is no share and the report says why.

Each run keeps its shares in `snapshots/confidence.json`, keyed by snapshot, detector content, sample
count, latent seed and threshold, so rewriting the report after every run recomputes nothing.
"""
import json
import os
import time

from bench.comparison.common import say, write_json_atomic
from bench.comparison.evaluation import load_generator, resolve_device

THRESHOLD = 0.9
SAMPLES = 5000
LATENT_SEED = 0
BATCH = 100
CACHE_NAME = 'confidence.json'


def _named_like_inception(path, outdir):
    """True for NVIDIA's or pytorch-fid's Inception file. A file that compare.py --detector staged in
    <outdir>/detector carries Inception's name but is another network."""
    from metrics import detectors
    if os.path.dirname(os.path.abspath(path)) == os.path.join(os.path.abspath(outdir), 'detector'):
        return False
    real = os.path.basename(os.path.realpath(path))
    return any(real == name or real.endswith('_' + name) for name in detectors.get_asset('inception').filenames)


def _logits_problem(detector, device):
    """None when det(images) gives class logits [N, K]; else what it gives instead."""
    import torch
    images = torch.randint(0, 256, [2, 3, 32, 32], dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            out = detector(images)
    except Exception as err:   # any failure of a foreign network means: no logits to read
        return 'det(images) fails ({})'.format(str(err).strip().splitlines()[0][:160] if str(err).strip() else
                                               type(err).__name__)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2 or out.shape[1] < 2 or \
            not out.is_floating_point():
        return 'det(images) returns {}, not logits [N, K]'.format(
            list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__)
    if bool((out >= 0).all()) and bool(torch.allclose(out.sum(dim=1), torch.ones(2, device=out.device),
                                                      atol=1e-4)):
        return 'det(images) returns probabilities (rows summing to 1), not logits'
    try:
        with torch.no_grad():
            features = detector(images, return_features=True)
    except Exception:   # the metrics would have failed first; only the comparison below needs this call
        features = None
    if isinstance(features, torch.Tensor) and features.shape == out.shape and bool(torch.equal(features, out)):
        return 'det(images) returns the same as det(images, return_features=True): features, not logits'
    return None


def open_classifier(detector_files, outdir, device):
    """(detector, md5, None) when the comparison's detector is a classifier with logits, else
    (None, md5 or None, the reason in words)."""
    from metrics import detectors
    entry = detector_files.get('inception')
    if entry is None:
        return None, None, 'the metric uses no FID/KID feature detector ({})'.format(
            ', '.join(sorted(detector_files)) or 'none')
    if _named_like_inception(entry['path'], outdir):
        return None, entry['md5'], ('the detector is Inception, whose classes are ImageNet\'s, not the data\'s; '
                                    'give a classifier of the data with --detector (e.g. the Fashion-MNIST '
                                    'evaluator) for this share')
    detector = detectors.load_detector_file(entry['path'], device)
    problem = _logits_problem(detector, device)
    if problem:
        return None, entry['md5'], 'the detector gives no class logits: {}'.format(problem)
    return detector, entry['md5'], None


def latents(count, z_dim, seed=LATENT_SEED):
    """The z of the share's images: the same for every run and snapshot, drawn on the CPU (device-independent)."""
    import torch
    return torch.randn([count, z_dim], generator=torch.Generator().manual_seed(seed))


def confident_share(G, detector, device, count=SAMPLES, seed=LATENT_SEED, threshold=THRESHOLD, batch=BATCH):
    """Share of `count` images of G (on `device`) whose top softmax probability under `detector` is >=
    threshold. Images as the metrics feed the detector (uint8, RGB); a conditional G cycles through its classes."""
    import torch
    from metrics.metric_utils import images_to_detector_input
    z_all = latents(count, G.z_dim, seed)
    confident = 0
    with torch.no_grad():
        for start in range(0, count, batch):
            z = z_all[start:start + batch].to(device)
            c = torch.zeros([len(z), G.c_dim], device=device)
            if G.c_dim:
                c[torch.arange(len(z)), (torch.arange(len(z)) + start) % G.c_dim] = 1
            logits = detector(images_to_detector_input(G(z=z, c=c, noise_mode='const')))
            assert logits.ndim == 2 and logits.shape[0] == len(z), list(logits.shape)
            top = torch.softmax(logits.to(torch.float64), dim=1).max(dim=1).values
            confident += int((top >= threshold).sum())
    return dict(share=confident / count, confident=confident, count=count)


def _read_cache(path):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f).get('entries', {})
    except (OSError, ValueError, AttributeError):
        return {}


def attach_confidence(cfg, summary, detector_files, count=SAMPLES):
    """run['best'/'final']['confidence'] = share for every finished run of `summary` (results.summarize),
    from the run's cache or computed now; returns how the shares were made, or why there are none."""
    device = resolve_device(cfg.device)
    detector, md5, reason = open_classifier(detector_files, cfg.outdir, device)
    info = dict(applies=detector is not None, reason=reason, threshold=THRESHOLD, samples=count,
                latent_seed=LATENT_SEED, detector_md5=md5, cache=os.path.join('snapshots', CACHE_NAME))
    if detector is None:
        return info
    for run in summary['runs']:
        if 'final' not in run:
            continue
        snap_dir = cfg.run_dir(run['method'], run['seed'], 'snapshots')
        cache_path = os.path.join(snap_dir, CACHE_NAME)
        cache = _read_cache(cache_path)
        for what in ('best', 'final'):
            name = run[what]['snapshot']
            key = '{}|{}|n={}|seed={}|thr={:g}'.format(name, md5, count, LATENT_SEED, THRESHOLD)
            if key not in cache:
                start = time.time()
                G, _ = load_generator(os.path.join(snap_dir, name), device)
                cache[key] = dict(snapshot=name, detector_md5=md5, latent_seed=LATENT_SEED, threshold=THRESHOLD,
                                  **confident_share(G, detector, device, count), seconds=round(time.time() - start, 2))
                write_json_atomic(cache_path, dict(entries=cache))
                say('  [{} seed {}] confidence >= {:g} at {}: {:.1%} of {} images ({:.1f} s)'.format(
                    run['method'], run['seed'], THRESHOLD, name, cache[key]['share'], count, cache[key]['seconds']))
            run[what]['confidence'] = cache[key]['share']
    return info
