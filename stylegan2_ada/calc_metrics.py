"""Compute quality metrics of a trained network: a pickle, or a weights-only model file
(`.safetensors`, loaded without unpickling; preferred when it lies beside the pickle).

Examples:
    python calc_metrics.py --network=runs/00000-obama/network-snapshot-000400.pkl --metrics=fid5k_full
    python calc_metrics.py --network=ffhq.pkl --metrics=fid50k_full,pr50k3_full --data=~/ffhq.zip --mirror=1
    python calc_metrics.py --network=net.pkl --detector-dir=~/detectors --gpus=2

Detector files (NVIDIA's inception-2015-12-05.pt / vgg16.pt, or pytorch-fid's
pt_inception-2015-12-05-6726825d.pth for FID/KID/IS) come from --detector-dir,
$KDGAN_DETECTOR_DIR or dnnlib's cache, else are downloaded; they are checked
before anything else, so a machine without them stops at once. Offline,
`--detector=PATH` computes FID/KID/IS with any TorchScript feature network
called as `det(images, return_features=True)` (detectors.FEATURE_SIGNATURE);
it is tried on two images first. Results are printed and appended to
metric-<name>.jsonl beside the pickle.
"""
# torch is imported only after the detector check: importing it takes seconds,
# and an offline user should hear about a missing detector at once.
import copy
import os
import sys
import tempfile

import click

import dnnlib
from metrics import detectors, metric_main



def _comma_list(ctx, param, value):
    items = [x.strip() for x in (value or '').split(',') if x.strip()]
    if not items or items == ['none']:
        raise click.BadParameter('give at least one metric, e.g. --metrics=fid50k_full', ctx=ctx, param=param)
    return items


def _load_network(network_pkl):
    import legacy
    try:
        data = legacy.load_network(network_pkl)
    except (OSError, EOFError) as err:
        raise click.ClickException(f'cannot read {network_pkl}: {err}')
    except Exception as err:
        raise click.ClickException(f'cannot load {network_pkl}: {err}')
    G = data['G_ema'] if data.get('G_ema') is not None else data.get('G')
    if G is None:
        raise click.ClickException(f'{network_pkl} contains no generator')
    return G, data.get('training_set_kwargs')


def _use_detector(path, metrics, detector_dir):
    """--detector=PATH: check that the file answers as the metrics will call it, then put it where
    the Inception file is looked for first. Returns the detector folder(s) to search."""
    try:
        if not os.path.isfile(os.path.expanduser(path)):
            raise ValueError(f'--detector: {path} is not a file; give a TorchScript feature network called as '
                             f'{detectors.FEATURE_SIGNATURE}')
        detectors.check_feature_detector(os.path.expanduser(path),
                                          probabilities=any(m.startswith('is') for m in metrics))
        folder = detectors.stage_detector(path)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err))
    inception = detectors.get_asset('inception')
    if not any(detectors.get_asset(str(d)) is inception for d in metric_main.required_detectors(metrics)):
        print('Warning: --detector stands in for Inception (FID/KID/IS); none of the metrics uses it')
    return folder + (os.pathsep + detector_dir if detector_dir else '')


def _dataset_kwargs(data, mirror, pkl_kwargs, G):
    """Data set options: --data (or the pickle's), resolution and labels from G, --mirror (or the pickle's)."""
    if data is not None:
        path = os.path.expanduser(data)
        from training import shapes
        if shapes.is_builtin(data):
            try:
                _key, name_res = shapes.parse_builtin(data)
                path = shapes.materialize_builtin(data, dnnlib.util.make_cache_dir_path('datasets'),
                                                  resolution=(None if name_res else G.img_resolution))
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="'--data'")
        kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path)
        if pkl_kwargs and mirror is None:
            mirror = bool(pkl_kwargs.get('xflip', False))
    elif pkl_kwargs is not None:
        kwargs = dnnlib.EasyDict(pkl_kwargs)
    else:
        raise click.UsageError('the pickle does not say which data set it was trained on; give --data')
    kwargs.resolution = G.img_resolution
    kwargs.use_labels = (G.c_dim != 0)
    if mirror is not None:
        kwargs.xflip = bool(mirror)
    try:
        dataset = dnnlib.util.construct_class_by_name(**kwargs)
    except Exception as err:
        raise click.ClickException(f'cannot open the data set: {err}')
    try:
        if G.c_dim != 0 and dataset.label_dim != G.c_dim:
            raise click.ClickException(f'the network is conditional ({G.c_dim} label dims) but the data set gives '
                                       f'{dataset.label_dim}; give the --data it was trained on')
        print(f'Data set: {kwargs.path} ({len(dataset)} images at {dataset.resolution}x{dataset.resolution}'
              + (', mirrored' if kwargs.get('xflip') else '') + ')')
    finally:
        if hasattr(dataset, 'close'):
            dataset.close()
    return kwargs


def subprocess_fn(rank, args, temp_dir):
    """Compute every metric as process `rank` of `args.num_gpus` (torch.distributed when > 1)."""
    import numpy as np
    import torch
    from metrics import metric_utils

    from torch_utils import misc
    device = misc.setup_process(rank, args.num_gpus, args.device, temp_dir)
    try:
        # Different ranks draw different latents; the same command gives the same numbers.
        torch.manual_seed(rank)
        np.random.seed(rank)
        G = copy.deepcopy(args.G).eval().requires_grad_(False).to(device)
        verbose = args.verbose and rank == 0
        for metric in args.metrics:
            if verbose:
                print(f'Calculating {metric}...', flush=True)
            progress = metric_utils.ProgressMonitor(verbose=verbose, flush_interval=args.flush_interval)
            result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=args.dataset_kwargs,
                                             num_gpus=args.num_gpus, rank=rank, device=device, progress=progress,
                                             detector_dir=args.detector_dir)
            if rank == 0:
                metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
            if verbose:
                print(f'{metric}: ' + ', '.join(f'{k} = {v:g}' for k, v in result.results.items())
                      + f' ({result.total_time_str})', flush=True)
    finally:
        if args.num_gpus > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()



@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--network', 'network_pkl', help='Model file (.safetensors) or network pickle (file or URL)',
              metavar='PATH', required=True)
@click.option('--metrics', help='Comma-separated list of metrics [default: fid50k_full]', default='fid50k_full',
              callback=_comma_list, metavar='LIST')
@click.option('--data', help="Data set to compare against (folder, zip or builtin:shapes[-RES]) [default: the "
              "pickle's]", metavar='PATH')
@click.option('--mirror', help="Also use x-flipped real images [default: the pickle's]", type=bool, metavar='BOOL')
@click.option('--gpus', help='Number of GPUs (or CPU processes) to use [default: 1]', type=click.IntRange(min=1),
              default=1, metavar='INT')
@click.option('--verbose', help='Print progress [default: true]', type=bool, default=True, metavar='BOOL')
@click.option('--detector-dir', help=f'Folder holding detector files [default: ${detectors.DEFAULT_ENV_VAR}, '
              'then the dnnlib cache, then download]', metavar='DIR')
@click.option('--detector', help='Another feature network for FID/KID/IS instead of Inception: a TorchScript '
              'file called as det(images, return_features=True) (README, "Evaluating offline")', metavar='PATH')
@click.option('--device', help='Where to compute [default: auto = cuda when available]',
              type=click.Choice(['auto', 'cuda', 'cpu']), default='auto')
def calc_metrics(network_pkl, metrics, data, mirror, gpus, verbose, detector_dir, detector, device):
    """Calculate quality metrics of a network pickle.

    \b
    Recommended metrics:
      fid50k_full  Frechet inception distance against the full data set.
      kid50k_full  Kernel inception distance against the full data set.
      pr50k3_full  Precision and recall against the full data set.
      ppl2_wend    Perceptual path length in W, endpoints, full image.
      is50k        Inception score (CIFAR-10).
    \b
    Few-shot protocol (DiffAugment, FastGAN, KD-DLGAN):
      fid5k_full   FID of 5k generated images against the whole training set.
      kid5k_full   KID of 5k generated images against the whole training set.
    \b
    Any number of generated images: fid<N>[k]_full, kid<N>[k]_full,
    is<N>[k] (e.g. fid10k_full, fid500_full, is5k).
    \b
    Legacy metrics:
      fid50k, kid50k, pr50k3 (against 50k real images),
      ppl_zfull, ppl_wfull, ppl_zend, ppl_wend (cropped).
    """
    # 1. Names and detector files, before anything slow (no torch yet).
    try:
        metrics = metric_main.validate_metrics(metrics, detector_dir=detector_dir, check_files=False)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--metrics'")
    if detector_dir is not None and not os.path.isdir(os.path.expanduser(detector_dir)):
        raise click.BadParameter(f'{detector_dir} is not a folder', param_hint="'--detector-dir'")
    if detector is not None:
        detector_dir = _use_detector(detector, metrics, detector_dir)
    try:
        found = metric_main.check_detectors(metrics, detector_dir=detector_dir, verbose=verbose)
    except detectors.AssetUnavailableError as err:
        raise click.ClickException(str(err.for_metrics(metrics, metric_main.required_detectors, 'calc_metrics.py')))
    if not dnnlib.util.is_url(network_pkl, allow_file_urls=True) and not os.path.isfile(network_pkl):
        raise click.BadParameter(f'file not found: {network_pkl}', param_hint="'--network'")
    if verbose:
        for name, path in found.items():
            print(f'Detector {name}: {path}')

    # 2. Device, network, data.
    import torch
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise click.UsageError('--device=cuda, but no CUDA device is available; use --device=cpu')
        if gpus > torch.cuda.device_count():
            raise click.UsageError(f'--gpus={gpus}, but only {torch.cuda.device_count()} CUDA device(s) exist')
    print(f'Loading network from "{network_pkl}"...')
    G, pkl_kwargs = _load_network(network_pkl)
    args = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, network_pkl=network_pkl, verbose=verbose, G=G,
                           detector_dir=detector_dir, device=device, flush_interval=1000)
    args.dataset_kwargs = _dataset_kwargs(data, mirror, pkl_kwargs, G)

    # Results go beside a local pickle (its run folder), like a training run's.
    args.run_dir = None
    if os.path.isfile(network_pkl):
        args.run_dir = os.path.dirname(os.path.abspath(network_pkl))
    if verbose:
        print(f'Metrics: {", ".join(metrics)}; {gpus} {"GPU" if device == "cuda" else "CPU process"}'
              + ('s' if gpus > 1 else '') + (f'; results in {args.run_dir}' if args.run_dir else ''))
    sys.stdout.flush()

    # 3. Launch.
    with tempfile.TemporaryDirectory(prefix='.calc-metrics-') as temp_dir:
        if gpus == 1:
            subprocess_fn(rank=0, args=args, temp_dir=temp_dir)
        else:
            torch.multiprocessing.spawn(fn=subprocess_fn, args=(args, temp_dir), nprocs=gpus)



if __name__ == '__main__':
    calc_metrics()
