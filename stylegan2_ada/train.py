"""Train a GAN with StyleGAN2-ADA's options, on one GPU, several, or the CPU.

Examples:

    # Few-shot training with ADA on a folder or zip of images (upstream's command line works as is).
    python train.py --outdir=training-runs --data=~/datasets/obama.zip --mirror=1 --metrics=none

    # The built-in procedurally drawn set, on the CPU, with a small network.
    python train.py --outdir=runs --data=builtin:shapes-32 --device=cpu --metrics=none \\
        --cbase=2048 --cmax=64 --kimg=4 --tick=0.5 --snap=2

    # Show what the options resolve to (built-in table and plug-in presets) without training.
    python train.py --outdir=runs --data=obama.zip --cfg=paper256 --dry-run

    # FastGAN + DiffAugment with KD-DLGAN's AGKD and CGKD (teacher: CLIP ViT-B-32:openai).
    python train.py --outdir=runs --data=obama.zip --cfg=fastgan --aug=diffaug --loss=kdgan.KDDLGAN --mirror=1

`--cfg`, `--loss` and `--aug` take the built-in names below or a name
registered in `kdgan_plugins.registry`: the kdgan presets
(`kdgan_plugins.presets`) are always loaded, and modules that register more
can be listed in $KDGAN_PLUGINS. Explicit flags win over preset defaults.

\b
--cfg    auto (default), stylegan2, paper256, paper512, paper1024, cifar; fastgan, fastgan_lite
--loss   stylegan2 (the default of every built-in cfg); fastgan; kdgan.AGKD, kdgan.CGKD, kdgan.KDDLGAN
--aug    ada (default), noaug, fixed (needs --p); diffaug

Start-up order: option and metric names are checked and the metric
detectors resolved before torch is even imported (an offline machine
without the detector file gets one line naming it within seconds); the
files the loss needs (the LPIPS VGG16 of --recon=lpips, the CLIP teacher)
are resolved right after, before the run folder is made.
"""

import copy
import json
import logging
import os
import re
import sys
import tempfile

import click

import dnnlib
from training import cfg_specs as cfg_lib
from training import shapes as shapes_lib

# torch (and everything that imports it: the data set, the augment pipe, the
# networks) is imported where it is needed, after the metric names and their
# detector files have been checked: importing torch alone takes seconds.

# Upstream's named `--resume` sources: network pickles that NVIDIA published
# for transfer learning. They download through dnnlib.util.open_url.

_TRANSFER_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets'
resume_specs = {
    'ffhq256':     f'{_TRANSFER_URL}/ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq512':     f'{_TRANSFER_URL}/ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq1024':    f'{_TRANSFER_URL}/ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'celebahq256': f'{_TRANSFER_URL}/celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
    'lsundog256':  f'{_TRANSFER_URL}/lsundog-res256-paper256-kimg100000-noaug.pkl',
}

BUILTIN_LOSS = 'stylegan2'
CPU_GRID_CELLS = 8  # Image grids on the CPU: at most 8 x 8 cells (upstream's 32 x 32 costs seconds per snapshot).
BUILTIN_AUGS = ('ada', 'noaug', 'fixed')
DEFAULT_ADA_TARGET = 0.6
DEFAULT_ADA_KIMG = 500  # upstream's ada_kimg: kimg for p to go from 0 to 1
DEFAULT_AUGPIPE = 'bgc'
# The names of training.augment.augpipe_specs, listed here so that `--help` and option
# parsing need no torch (tests/test_train_cli.py checks that the two agree).
AUGPIPE_NAMES = ('blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc')

# Metrics: names and detector files, checked first (no torch needed).

def check_metrics(metrics, detector_dir=None, check_files=True):
    """Validate metric names and, with `check_files`, resolve the detector files they need
    (metric_main.validate_metrics: explicit folder, $KDGAN_DETECTOR_DIR, cache, a quick
    download). Returns the list. Raises click.UsageError for an unknown name and a
    one-line click.ClickException for a detector that can be neither found nor fetched.
    Imports no torch, so an offline user hears about a missing file within seconds."""
    from metrics import detectors, metric_main
    try:
        return metric_main.validate_metrics(list(metrics), detector_dir=detector_dir, check_files=check_files)
    except detectors.AssetUnavailableError as err:
        raise click.ClickException(str(err))
    except ValueError as err:
        raise click.UsageError(f'--metrics: {err}; or none')

# Plug-in registry (optional: an upstream tree without kdgan_plugins has none).

def load_registry():
    """`kdgan_plugins.registry` with $KDGAN_PLUGINS imported, or None when not installed."""
    try:
        from kdgan_plugins import registry
    except ModuleNotFoundError as err:
        if err.name != 'kdgan_plugins':
            raise
        # Our own tree keeps the plug-ins beside the harness: use them when run from a checkout.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not os.path.isfile(os.path.join(root, 'kdgan_plugins', 'registry.py')):
            return None
        sys.path.append(root)
        from kdgan_plugins import registry
    try:
        # The kdgan presets are part of the project: registered on every start (register_all is
        # idempotent, so they are back even if something unregistered them), then $KDGAN_PLUGINS.
        presets = load_presets()
        if presets is not None:
            presets.register_all()
        registry.load_plugins()
    except ImportError as err:
        raise click.ClickException(str(err))
    return registry


def load_presets():
    """`kdgan_plugins.presets` (loop_options, apply_loss_preset, cli_patch), or None in a tree
    whose kdgan_plugins has only the registry."""
    try:
        from kdgan_plugins import presets
    except ModuleNotFoundError as err:
        if err.name != 'kdgan_plugins.presets':
            raise
        return None
    return presets


def _known(kind, builtins, registry):
    names = list(builtins) + (registry.names(kind) if registry is not None else [])
    return ', '.join(names)


def resolve_name(kind, name, builtins, registry, flag):
    """'builtin' or 'plugin' for a --cfg/--loss/--aug name; UsageError when unknown."""
    if name in builtins:
        return 'builtin'
    if registry is not None and registry.is_registered(kind, name):
        return 'plugin'
    hint = '' if registry is not None else ' (kdgan_plugins is not installed, so only built-in names exist)'
    raise click.UsageError(f'{flag}: unknown name {name!r}; choose from {_known(kind, builtins, registry)}{hint}')

# Data.

def materialize_data(data, dry_run):
    """A --data value as a path for ImageFolderDataset. `builtin:NAME` is drawn into
    dnnlib's cache (`<cache>/datasets/`) once; a dry run draws it in a temporary
    folder and reports the cache path it would use."""
    if not shapes_lib.is_builtin(data):
        return os.path.expanduser(data), None
    cache = dnnlib.util.make_cache_dir_path('datasets')
    try:
        if dry_run:
            tmp = tempfile.TemporaryDirectory(prefix='kdgan-dry-run-')
            path = shapes_lib.materialize_builtin(data, tmp.name)
            return path, (tmp, os.path.join(cache, os.path.basename(path)))
        return shapes_lib.materialize_builtin(data, cache), None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--data'")
    except OSError as err:
        raise click.ClickException(f'cannot write built-in data set {data} into {cache}: {err}; '
                                   f'set $DNNLIB_CACHE_DIR to a writable folder')


def open_dataset(training_set_kwargs):
    from training.dataset import DatasetError
    try:
        return dnnlib.util.construct_class_by_name(**training_set_kwargs)
    except DatasetError as err:
        raise click.ClickException(f'bad --data: {err}')

# Resume.

def resolve_resume(resume):
    """(resume_pkl, exact, what) for a --resume value.

    Named shortcuts map to NVIDIA's URLs; URLs pass through; local paths
    (pickle, checkpoint, or run folder) go to training.checkpoint.resolve_resume,
    which says whether the resume restores the full training state. Without
    that module, a run folder means its latest network pickle.
    """
    if resume in resume_specs:
        return resume_specs[resume], False, f'{resume} ({resume_specs[resume]})'
    if dnnlib.util.is_url(resume):
        return resume, False, resume
    path = os.path.expanduser(resume)
    if not os.path.exists(path):
        raise click.BadParameter(f'{resume}: no such file or folder; give a network pickle, a checkpoint, a run '
                                 f'folder, a URL, or one of {", ".join(resume_specs)}', param_hint="'--resume'")
    try:
        from training import checkpoint
    except ModuleNotFoundError as err:
        if err.name != 'training.checkpoint':
            raise
        checkpoint = None
    if checkpoint is not None:
        try:
            info = checkpoint.resolve_resume(path)
        except (OSError, ValueError) as err:
            raise click.BadParameter(str(err).replace('--resume: ', ''), param_hint="'--resume'")
        return _unpack_resume_info(info, path)
    if os.path.isdir(path):
        snaps = sorted(f for f in os.listdir(path) if re.fullmatch(r'network-snapshot-\d+\.pkl', f))
        if not snaps:
            raise click.BadParameter(f'{resume}: run folder holds no network-snapshot-*.pkl', param_hint="'--resume'")
        path = os.path.join(path, snaps[-1])
    return path, False, path


def _unpack_resume_info(info, path):
    """training.checkpoint.resolve_resume's answer -> (path for the loop, exact, text)."""
    if info is None:
        return path, False, path
    target = info.get('pkl') or info.get('ckpt') or path
    exact = bool(info.get('exact'))
    what = target + (f' (checkpoint {info.get("ckpt")})' if exact and info.get('ckpt') else '')
    return str(target), exact, what


def previous_transfer_options(resume_path):
    """ada_kimg/ema_rampup of the run that wrote an exact-resume checkpoint (from its
    training_options.json), so that resuming a resumed run keeps its options."""
    folder = resume_path if os.path.isdir(resume_path) else os.path.dirname(os.path.abspath(resume_path))
    try:
        with open(os.path.join(folder, 'training_options.json'), encoding='utf-8') as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: saved[k] for k in ('ada_kimg', 'ema_rampup') if k in saved}


# Options: the dict that goes to training_loop (upstream's structure) plus
# what each name resolved to.

def setup_training_loop_kwargs(
    gpus=1, snap=50, metrics=('fid50k_full',), seed=0, data=None, cond=None, subset=None, mirror=None,
    cfg='auto', gamma=None, kimg=None, batch=None, aug=None, p=None, target=None, ada_kimg=None, augpipe=None,
    resume=None,
    freezed=0, fp32=None, nhwc=None, nobench=None, allow_tf32=None, workers=3, device='auto', tick=4,
    loss=None, cbase=None, cmax=None, map_depth=None, mbstd_group=None, dry_run=False, ngf=None, ndf=None,
    grid=None, ema=None, detector_dir=None, teacher=None, teacher_weights=None, teacher_config=None, teacher_dir=None,
    kd_p=None, kd_agkd_weight=None, kd_cgkd_weight=None, kd_dist=None, kd_labels=None, kd_template=None,
    kd_diversity=None, recon=None, recon_weight=None,
):
    """Resolve the command line into (desc, args, resolved, summary, cleanup).

    `args` has upstream's structure (what training_loop receives, minus
    run_dir); `resolved` tells where each --cfg/--loss/--aug name came from
    and what it gave; `summary` describes the data set; `cleanup` is a
    temporary folder to remove after a dry run (or None). Raises click
    exceptions for anything inconsistent.

    Precedence, lowest first: the built-in table row; the cfg, loss and aug
    presets' defaults; the sections those values build, patched by the cfg,
    loss and aug presets (kdgan_plugins.registry.apply; loss presets through
    kdgan_plugins.presets.apply_loss_preset, which wraps the cfg's D where a
    preset asks for it); explicit flags (the --teacher/--kd-*/--recon ones
    through kdgan_plugins.presets.cli_patch).

    The metric names and detector files are checked first, before torch is
    imported (detector files only when not `dry_run`).
    """
    E = dnnlib.EasyDict
    args = E()
    kimg = _whole(kimg)
    tick = _whole(tick)

    # Metrics first: a missing detector is reported before anything slow happens.
    args.metrics = check_metrics(list(metrics), detector_dir=detector_dir, check_files=not dry_run)
    registry = load_registry()
    import torch

    # General options.
    if not (isinstance(gpus, int) and gpus >= 1):
        raise click.BadParameter('must be a positive integer', param_hint="'--gpus'")
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise click.UsageError('--device=cuda, but no CUDA device is available; use --device=cpu')
        if gpus > torch.cuda.device_count():
            raise click.UsageError(f'--gpus={gpus}, but only {torch.cuda.device_count()} CUDA device(s) exist; '
                                   f'lower --gpus (or use --device=cpu, which runs {gpus} processes with gloo)')
    args.num_gpus = gpus
    args.device = device
    if snap < 1:
        raise click.BadParameter('must be at least 1', param_hint="'--snap'")
    args.image_snapshot_ticks = snap
    args.network_snapshot_ticks = snap
    if not tick > 0:
        raise click.BadParameter('must be positive (kimg per tick)', param_hint="'--tick'")
    args.kimg_per_tick = tick
    args.random_seed = seed
    if grid is None:
        grid = CPU_GRID_CELLS if device == 'cpu' else None
    if grid is not None:
        if grid < 1:
            raise click.BadParameter('must be at least 1', param_hint="'--grid'")
        args.grid_max_cells = int(grid)

    # Data.
    if data is None:
        raise click.UsageError("Missing option '--data'")
    path, dry = materialize_data(data, dry_run)
    cleanup = dry[0] if dry else None
    args.training_set_kwargs = E(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=True,
                                 max_size=None, xflip=False)
    args.data_loader_kwargs = E(pin_memory=(device == 'cuda'), num_workers=workers,
                                prefetch_factor=(2 if workers > 0 else None))
    training_set = open_dataset(args.training_set_kwargs)
    try:
        args.training_set_kwargs.resolution = training_set.resolution
        args.training_set_kwargs.use_labels = training_set.has_labels
        args.training_set_kwargs.max_size = len(training_set)
        desc = training_set.name
        num_images = len(training_set)
        has_labels = training_set.has_labels
        label_dim = training_set.label_dim if has_labels else 0
        class_names = getattr(training_set, 'class_names', None)
        res = training_set.resolution
    finally:
        training_set.close()
        del training_set
    if dry:
        args.training_set_kwargs.path = dry[1]  # where a real run keeps it
    if cond:
        if not has_labels:
            raise click.UsageError(f'--cond=1 needs labels, but {data} has none: add a dataset.json with '
                                   f'"labels" (dataset_tool.py writes one), or drop --cond')
        desc += '-cond'
    else:
        args.training_set_kwargs.use_labels = False
    if subset is not None:
        if not 1 <= subset <= num_images:
            raise click.BadParameter(f'{subset} is outside 1..{num_images} (the data set has {num_images} images)',
                                     param_hint="'--subset'")
        desc += f'-subset{subset}'
        if subset < num_images:
            args.training_set_kwargs.max_size = subset
            args.training_set_kwargs.random_seed = seed
    if mirror:
        desc += '-mirror'
        args.training_set_kwargs.xflip = True

    # Names: --cfg, then the cfg's default loss/aug unless given.
    cfg_source = resolve_name('cfg', cfg, cfg_lib.cfg_specs, registry, '--cfg')
    cfg_preset = registry.lookup('cfg', cfg) if cfg_source == 'plugin' else {}
    base_cfg = cfg_preset.get('base', 'auto') if cfg_source == 'plugin' else cfg
    loss_given = loss is not None
    if loss is None:
        loss = cfg_preset.get('loss', BUILTIN_LOSS)
    loss_source = resolve_name('loss', loss, (BUILTIN_LOSS,), registry, '--loss')
    aug_given = aug is not None
    if aug is None:
        aug = cfg_preset.get('aug', 'ada')
    aug_source = resolve_name('aug', aug, BUILTIN_AUGS, registry, '--aug')
    loss_preset = registry.lookup('loss', loss) if loss_source == 'plugin' else {}
    aug_preset = registry.lookup('aug', aug) if aug_source == 'plugin' else {}

    # The cfg table row, then preset defaults (cfg < loss < aug), then explicit flags.
    spec = cfg_lib.resolve_cfg(base_cfg, res, gpus)
    column = dict(batch='mb', lr='lrate')
    for preset in (cfg_preset, loss_preset, aug_preset):
        for key, value in preset.get('defaults', {}).items():
            if key in ('p', 'target'):
                continue
            spec[column.get(key, key)] = value
    batch_from_table = batch is None
    if batch is not None:
        spec.mb = batch
    if kimg is not None:
        spec.kimg = kimg
    if gamma is not None:
        spec.gamma = gamma
    if map_depth is not None:
        spec.map = map_depth
    if mbstd_group is not None:
        spec.mbstd = mbstd_group
    if cbase is not None:
        spec.fmaps = cbase / 32768
    if ema is not None:
        if not ema > 0:
            raise click.BadParameter('must be positive (kimg)', param_hint="'--ema'")
        spec.ema = ema

    desc += f'-{cfg}'
    if gamma is not None:
        if gamma < 0:
            raise click.BadParameter('must be >= 0', param_hint="'--gamma'")
        desc += f'-gamma{gamma:g}'
    if kimg is not None:
        if not kimg > 0:
            raise click.BadParameter('must be positive', param_hint="'--kimg'")
        desc += f'-kimg{kimg}'
    if batch is not None:
        if batch < 1:
            raise click.BadParameter('must be at least 1', param_hint="'--batch'")
        if batch % gpus != 0:
            raise click.UsageError(f'--batch={batch} must be divisible by --gpus={gpus}, e.g. --batch='
                                   f'{max(gpus, batch - batch % gpus)}')
        desc += f'-batch{batch}'
    if loss_given and loss != cfg_preset.get('loss', BUILTIN_LOSS):
        desc += f'-{loss}'

    # Batch split: upstream keeps the per-GPU batch of the preset's reference setup.
    batch_note = None
    if batch_from_table and spec.mb % gpus != 0:
        # The table's batch assumes a power-of-two GPU count: round down to a batch that splits evenly
        # (and, where possible, into whole minibatch-stddev groups).
        step = gpus * spec.mbstd if spec.mbstd and spec.mb >= gpus * spec.mbstd else gpus
        old_mb = spec.mb
        spec.mb = max(spec.mb - spec.mb % step, gpus)
        batch_note = f'batch {old_mb} of cfg {cfg} rounded down to {spec.mb} to split over {gpus} processes'
        print(f'Note: {batch_note}; pass --batch to choose another.')
    args.batch_size = int(spec.mb)
    batch_gpu = spec.mb // gpus if not batch_from_table else max(min(spec.mb // spec.ref_gpus, spec.mb // gpus), 1)
    if args.batch_size % (batch_gpu * gpus) != 0:
        batch_gpu = args.batch_size // gpus
    args.batch_gpu = int(batch_gpu)
    args.total_kimg = spec.kimg
    args.ema_kimg = spec.ema
    args.ema_rampup = spec.ramp

    # Sections built from the spec, then patched by the presets (cfg, loss, aug).
    sections = cfg_lib.network_kwargs(spec, cfg=base_cfg)
    args.G_kwargs = sections.G_kwargs
    args.D_kwargs = sections.D_kwargs
    args.G_opt_kwargs = sections.G_opt_kwargs
    args.D_opt_kwargs = sections.D_opt_kwargs
    args.loss_kwargs = sections.loss_kwargs
    args.augment_kwargs = None
    presets = load_presets() if registry is not None else None
    if cfg_source == 'plugin':
        registry.apply('cfg', cfg, args)
        if presets is not None:
            args.update(presets.loop_options(cfg))  # e.g. FastGAN: no lazy regularisation
        if loss_source == 'builtin' and cfg_preset.get('loss', BUILTIN_LOSS) != BUILTIN_LOSS:
            args.loss_kwargs = copy.deepcopy(sections.loss_kwargs)  # --loss=stylegan2 on a cfg with another loss
    if loss_source == 'plugin':
        if presets is not None:
            presets.apply_loss_preset(loss, args)  # kdgan.* wrap whatever D the cfg chose
        else:
            registry.apply('loss', loss, args)

    # Augmentation.
    aug_defaults = aug_preset.get('defaults', {})
    args.ada_target = None
    args.augment_p = 0
    if aug == 'ada':
        args.ada_target = DEFAULT_ADA_TARGET
    elif aug == 'fixed' and p is None:
        raise click.UsageError('--aug=fixed needs --p (the fixed augmentation probability, e.g. --p=0.2)')
    if aug_source == 'plugin':
        args.augment_p = aug_defaults.get('p', 0)
        args.ada_target = aug_defaults.get('target', None)
    adaptive = args.ada_target is not None
    if adaptive:
        args.ada_kimg = DEFAULT_ADA_KIMG
    if aug != 'ada' or aug_given:
        desc += f'-{aug}'
    if p is not None:
        if aug != 'fixed' and not (aug_source == 'plugin' and 'p' in aug_defaults):
            raise click.UsageError(f'--p sets the probability of --aug=fixed; it does not apply to --aug={aug}')
        if not 0 <= p <= 1:
            raise click.BadParameter('must be between 0 and 1', param_hint="'--p'")
        desc += f'-p{p:g}'
        args.augment_p = p
    if target is not None:
        if not adaptive:
            raise click.UsageError(f'--target sets the ADA target; it needs --aug=ada (got --aug={aug})')
        if not 0 <= target <= 1:
            raise click.BadParameter('must be between 0 and 1', param_hint="'--target'")
        desc += f'-target{target:g}'
        args.ada_target = target
    if ada_kimg is not None:
        if not adaptive:
            raise click.UsageError(f'--ada-kimg sets how fast ADA moves p; it needs --aug=ada (got --aug={aug})')
        if ada_kimg <= 0:
            raise click.BadParameter('must be > 0', param_hint="'--ada-kimg'")
        desc += f'-adakimg{ada_kimg:g}'
    if augpipe is not None:
        if augpipe not in AUGPIPE_NAMES:
            raise click.BadParameter(f'{augpipe!r} is not one of {", ".join(AUGPIPE_NAMES)}',
                                     param_hint="'--augpipe'")
        if aug not in ('ada', 'fixed'):
            raise click.UsageError(f'--augpipe chooses the ADA pipe; it does not apply to --aug={aug}')
        desc += f'-{augpipe}'
    else:
        augpipe = DEFAULT_AUGPIPE
    if aug in ('ada', 'fixed'):
        from training.augment import augpipe_specs
        args.augment_kwargs = E(class_name='training.augment.AugmentPipe', **augpipe_specs[augpipe])
    if aug_source == 'plugin':
        args.augment_kwargs = args.augment_kwargs or E()
        registry.apply('aug', aug, args)

    # Resume.
    args.resume_pkl = None
    resume_exact = False
    resume_what = None
    if resume is not None and resume != 'noresume':
        args.resume_pkl, resume_exact, resume_what = resolve_resume(resume)
        desc += f'-resume{resume}' if resume in resume_specs else '-resumecustom'
        if not resume_exact:
            args.ada_kimg = 100  # Let ADA react quickly to the new data.
            args.ema_rampup = None  # The EMA of a trained network needs no ramp-up.
        else:
            args.update(previous_transfer_options(args.resume_pkl))  # An exact resume continues as it was.
    if ada_kimg is not None:
        args.ada_kimg = ada_kimg  # Explicit beats the resume default (100) and upstream's 500.
    if freezed:
        if freezed < 0:
            raise click.BadParameter('must be >= 0', param_hint="'--freezed'")
        desc += f'-freezed{freezed:d}'

    # Explicit flags: one patch, merged last, so they win over every preset.
    explicit = {}
    def put(section, path, value):
        node = explicit.setdefault(section, {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    if gamma is not None:
        put('loss_kwargs', ['r1_gamma'], gamma)
    if freezed:
        put('D_kwargs', ['block_kwargs', 'freeze_layers'], freezed)
    # Capacity: StyleGAN2-style networks take --cbase/--cmax (and --map-depth); a cfg whose
    # G names `ngf` (FastGAN) takes --ngf/--ndf instead. Which applies is read off the preset's data.
    width_cfg = 'ngf' in (args.G_kwargs or {})
    for flag, value in (('--cbase', cbase), ('--cmax', cmax), ('--map-depth', map_depth)):
        if value is not None and width_cfg:
            raise click.UsageError(f'{flag} sets StyleGAN2 capacity; --cfg={cfg} sizes its networks by '
                                   f'ngf/ndf (use --ngf/--ndf)' + (', and has no mapping network'
                                                                   if flag == '--map-depth' else ''))
    for flag, value, section in (('--ngf', ngf, 'G_kwargs'), ('--ndf', ndf, 'D_kwargs')):
        if value is None:
            continue
        if not width_cfg or flag[2:] not in (args[section] or {}):
            raise click.UsageError(f'{flag} applies to cfgs whose networks take {flag[2:]} (--cfg=fastgan, '
                                   f'fastgan_lite); for --cfg={cfg} use --cbase/--cmax')
        if value < 1:
            raise click.BadParameter('must be positive', param_hint=f"'{flag}'")
        put(section, [flag[2:]], int(value))
    if cbase is not None:
        put('G_kwargs', ['synthesis_kwargs', 'channel_base'], int(cbase))
        put('D_kwargs', ['channel_base'], int(cbase))
    if cmax is not None:
        put('G_kwargs', ['synthesis_kwargs', 'channel_max'], int(cmax))
        put('D_kwargs', ['channel_max'], int(cmax))
    if map_depth is not None:
        put('G_kwargs', ['mapping_kwargs', 'num_layers'], int(map_depth))
    if mbstd_group is not None:
        put('D_kwargs', ['epilogue_kwargs', 'mbstd_group_size'], int(mbstd_group))
    if fp32:
        put('G_kwargs', ['synthesis_kwargs', 'num_fp16_res'], 0)
        put('D_kwargs', ['num_fp16_res'], 0)
        put('G_kwargs', ['synthesis_kwargs', 'conv_clamp'], None)
        put('D_kwargs', ['conv_clamp'], None)
    if nhwc:
        put('G_kwargs', ['synthesis_kwargs', 'fp16_channels_last'], True)
        put('D_kwargs', ['block_kwargs', 'fp16_channels_last'], True)
    plugin_opts = dict(teacher=teacher, teacher_weights=teacher_weights, teacher_config=teacher_config,
                       teacher_dir=teacher_dir, kd_p=kd_p, kd_agkd_weight=kd_agkd_weight,
                       kd_cgkd_weight=kd_cgkd_weight, kd_dist=kd_dist, kd_labels=kd_labels, kd_template=kd_template,
                       kd_diversity=kd_diversity, recon=recon, recon_weight=recon_weight)
    if presets is not None:
        try:
            patch = presets.cli_patch(args, class_names=class_names, detector_dir=detector_dir, seed=seed,
                                      **plugin_opts)
        except ValueError as err:
            raise click.UsageError(str(err))
        for section, value in patch.items():
            registry.deep_merge(explicit.setdefault(section, {}), value)
    else:
        given = [k for k, v in plugin_opts.items() if v is not None]
        if given:
            raise click.UsageError('--' + given[0].replace('_', '-') + ' needs kdgan_plugins.presets, which is not '
                                   'installed in this tree')
    _merge_explicit(registry, args, explicit)

    args.cudnn_benchmark = not nobench
    args.allow_tf32 = bool(allow_tf32)
    if workers < 0:
        raise click.BadParameter('must be >= 0', param_hint="'--workers'")

    resolved = dict(
        cfg=dict(name=cfg, source=_source_text(cfg_source, 'training.cfg_specs'), base=base_cfg,
                 table={k: spec[k] for k in ('ref_gpus', 'kimg', 'mb', 'mbstd', 'fmaps', 'lrate', 'gamma', 'ema',
                                             'ramp', 'map')}),
        loss=dict(name=loss, source=_source_text(loss_source, 'training.loss'),
                  class_name=(args.loss_kwargs or {}).get('class_name'),
                  terms=_term_summary(args.loss_kwargs)),
        D=dict(class_name=(args.D_kwargs or {}).get('class_name'),
               backbone_class_name=(args.D_kwargs or {}).get('backbone_class_name')),
        aug=dict(name=aug, source=_source_text(aug_source, 'training.augment.augpipe_specs'),
                 class_name=(args.augment_kwargs or {}).get('class_name'), adaptive=adaptive,
                 augpipe=(augpipe if aug in ('ada', 'fixed') else None)),
        explicit_flags=explicit,
    )
    if batch_note is not None:
        resolved['cfg']['batch_note'] = batch_note
    for kind, name, source, preset in (('cfg', cfg, cfg_source, cfg_preset), ('loss', loss, loss_source, loss_preset),
                                       ('aug', aug, aug_source, aug_preset)):
        if source == 'plugin':
            resolved[kind]['preset'] = preset
    if resume_what is not None:
        resolved['resume'] = dict(value=resume, resume_pkl=args.resume_pkl, exact=resume_exact,
                                  note=('restores the full training state' if resume_exact else
                                        'networks only: ada_kimg=100, ema_rampup=None (as upstream)'))
    summary = dict(data=data, num_images=num_images, resolution=res, labels=label_dim)
    return desc, args, resolved, summary, cleanup


def _term_summary(loss_kwargs):
    """{term name: class_name (kind)} of the loss' composable terms, for the summary."""
    terms = (loss_kwargs or {}).get('terms') or {}
    items = terms.items() if isinstance(terms, dict) else [(t.get('name'), t) for t in terms if isinstance(t, dict)]
    out = {}
    for name, spec in items:
        if isinstance(spec, dict) and spec.get('class_name'):
            extra = spec.get('kind') or spec.get('dist')
            out[str(name)] = spec['class_name'].rsplit('.', 1)[-1] + (f' ({extra})' if extra else '')
    return out


def _whole(x):
    """4.0 -> 4 (JSON and run names stay as upstream writes them); other values as they are."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _source_text(source, builtin_where):
    return f'built-in ({builtin_where})' if source == 'builtin' else 'plug-in (kdgan_plugins.registry)'


def _merge_explicit(registry, args, explicit):
    if registry is not None:
        for section, patch in explicit.items():
            registry.deep_merge(args[section], patch)
        return
    def merge(dst, patch):  # The same rule as registry.deep_merge, for trees without kdgan_plugins.
        for key, value in patch.items():
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                merge(dst[key], value)
            else:
                dst[key] = copy.deepcopy(value) if not isinstance(value, dict) else merge(dnnlib.EasyDict(), value)
        return dst
    for section, patch in explicit.items():
        merge(args[section], patch)

# Run folders.

def make_run_dir(outdir, desc):
    """Create `outdir/{id:05d}-{desc}` with id = 1 + the largest id there (never reused);
    retries when another process takes the same id first."""
    os.makedirs(outdir, exist_ok=True)
    while True:
        ids = []
        for name in os.listdir(outdir):
            match = re.match(r'^(\d+)', name)
            if match and os.path.isdir(os.path.join(outdir, name)):
                ids.append(int(match.group(1)))
        run_id = max(ids, default=-1) + 1
        run_dir = os.path.join(outdir, f'{run_id:05d}-{desc}')
        try:
            os.makedirs(run_dir, exist_ok=False)
            return run_dir
        except FileExistsError:
            continue


def predict_run_dir(outdir, desc):
    ids = []
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            match = re.match(r'^(\d+)', name)
            if match and os.path.isdir(os.path.join(outdir, name)):
                ids.append(int(match.group(1)))
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')

# Launch.


class _ConsoleLogHandler(logging.Handler):
    """Plug-in log records (logger 'kdgan', e.g. the random-teacher warning) on the console of
    the moment: the current sys.stderr, which dnnlib.util.Logger tees into log.txt."""

    def emit(self, record):
        try:
            sys.stderr.write(f'{record.levelname.capitalize()}: {self.format(record)}\n')
        except Exception:
            self.handleError(record)


def show_plugin_logs():
    """Route the plug-ins' log records (INFO and up) to the console and log.txt (idempotent)."""
    log = logging.getLogger('kdgan')
    if not any(isinstance(h, _ConsoleLogHandler) for h in log.handlers):
        log.addHandler(_ConsoleLogHandler())
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)

def subprocess_fn(rank, args, temp_dir):
    """Run the loop in this process as `rank`. Spawned ranks log to log.txt themselves."""

    import torch
    from torch_utils import custom_ops, misc, training_stats
    from training import training_loop

    logger = None
    if args.num_gpus > 1:
        logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    show_plugin_logs()
    try:
        device = misc.setup_process(rank, args.num_gpus, args.device, temp_dir)
        training_stats.init_multiprocessing(rank=rank, sync_device=(device if args.num_gpus > 1 else None))
        if rank != 0:
            custom_ops.verbosity = 'none'
        kwargs = dict(args)
        kwargs['device'] = device
        training_loop.training_loop(rank=rank, **kwargs)
    finally:
        if args.num_gpus > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if logger is not None:
            logger.close()


def launch(args):
    """One process directly; N > 1 through torch.multiprocessing.spawn."""
    if args.num_gpus == 1:
        subprocess_fn(rank=0, args=args, temp_dir=None)
        return
    import torch
    # The ranks meet through a file in a temporary folder inside the run folder (removed afterwards).
    with tempfile.TemporaryDirectory(prefix='.dist-', dir=args.run_dir) as temp_dir:
        torch.multiprocessing.spawn(fn=subprocess_fn, args=(args, temp_dir), nprocs=args.num_gpus)

# Command line.

def check_loss_assets(loss_kwargs, detector_dir=None):
    """Resolve the files the loss will need (LPIPS VGG16 for --recon=lpips, the KD teacher's
    weights) before anything trains; one-line click.ClickException when one is missing.
    Returns lines for the log ([] for losses without plug-in terms)."""
    if not (loss_kwargs or {}).get('terms') and not str((loss_kwargs or {}).get('class_name', '')).startswith(
            'kdgan_plugins.'):
        return []
    try:
        from kdgan_plugins import losses
    except ModuleNotFoundError as err:
        if err.name not in ('kdgan_plugins', 'kdgan_plugins.losses'):
            raise
        return []
    try:
        return list(losses.check_assets(loss_kwargs, detector_dir=detector_dir))
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err).strip().splitlines()[0] if str(err).strip() else repr(err))


def _metrics_option(ctx, param, value):
    items = [x.strip() for x in value.split(',') if x.strip()] if value else []
    return [] if items == ['none'] or not items else items


def print_summary(args, resolved, summary):
    print(f'Output directory:   {args.run_dir}')
    print(f'Training data:      {args.training_set_kwargs.path} ({summary["data"]})')
    print(f'Number of images:   {args.training_set_kwargs.max_size}'
          + (' (x2 with mirroring)' if args.training_set_kwargs.xflip else ''))
    print(f'Image resolution:   {summary["resolution"]}')
    print(f'Conditional model:  {args.training_set_kwargs.use_labels}'
          + (f' ({summary["labels"]} label dims)' if args.training_set_kwargs.use_labels else ''))
    print(f'Dataset x-flips:    {args.training_set_kwargs.xflip}')
    print(f'Configuration:      {resolved["cfg"]["name"]} [{resolved["cfg"]["source"]}]')
    print(f'Loss:               {resolved["loss"]["name"]} -> {resolved["loss"]["class_name"]} '
          f'[{resolved["loss"]["source"]}]')
    print(f'Augmentation:       {resolved["aug"]["name"]} -> {resolved["aug"]["class_name"]} '
          f'[{resolved["aug"]["source"]}]'
          + (f', target {args.ada_target}, ada_kimg {args.get("ada_kimg", DEFAULT_ADA_KIMG):g}' if args.ada_target is not None else '')
          + (f', p {args.augment_p}' if args.augment_p else ''))
    print(f'Batch:              {args.batch_size} ({args.batch_gpu} per GPU/process)')
    print(f'Training duration:  {args.total_kimg} kimg, {args.kimg_per_tick} kimg per tick, '
          f'snapshots every {args.network_snapshot_ticks} ticks')
    print(f'Device:             {args.device} x {args.num_gpus}')
    if resolved['loss'].get('terms'):
        print(f'Loss terms:         ' + ', '.join(f'{k}: {v}' for k, v in resolved['loss']['terms'].items()))
    teacher = (args.loss_kwargs or {}).get('teacher')
    if teacher:
        print(f'Teacher:            {teacher.get("spec")}' + (f', weights {teacher["weights"]}' if teacher.get('weights')
                                                              else '') + (f', config {teacher["config"]}'
                                                                          if teacher.get('config') else ''))
    if resolved['D'].get('backbone_class_name'):
        print(f'Discriminator:      {resolved["D"]["class_name"]} around {resolved["D"]["backbone_class_name"]}')
    print(f'Metrics:            {", ".join(args.metrics) if args.metrics else "none"}')
    if args.resume_pkl:
        print(f'Resume from:        {args.resume_pkl} ({resolved["resume"]["note"]})')
    print()


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.pass_context
# General options.
@click.option('--outdir', help='Where to save the results', required=True, metavar='DIR')
@click.option('--gpus', help='Number of GPUs (or CPU processes) to use [default: 1]', type=click.IntRange(min=1),
              default=1, metavar='INT')
@click.option('--snap', help='Snapshot interval in ticks [default: 50]', type=click.IntRange(min=1), default=50,
              metavar='INT')
@click.option('--metrics', help='Comma-separated list or "none" [default: fid50k_full]', default='fid50k_full',
              callback=_metrics_option, metavar='LIST')
@click.option('--seed', help='Random seed [default: 0]', type=int, default=0, metavar='INT')
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
# Dataset.
@click.option('--data', help='Training data (folder, zip, or builtin:shapes[-RES])', metavar='PATH', required=True)
@click.option('--cond', help='Train conditional model based on dataset labels [default: false]', type=bool,
              metavar='BOOL')
@click.option('--subset', help='Train with only N images [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Enable dataset x-flips [default: false]', type=bool, metavar='BOOL')
# Base config.
@click.option('--cfg', help='Base config [default: auto]; a built-in name or a registered plug-in', default='auto',
              metavar='NAME')
@click.option('--gamma', help='Override R1 gamma', type=float)
@click.option('--kimg', help='Override training duration (kimg)', type=float, metavar='KIMG')
@click.option('--batch', help='Override batch size', type=int, metavar='INT')
@click.option('--loss', help="Loss [default: the cfg's]; stylegan2 or a registered plug-in", metavar='NAME')
# Discriminator augmentation.
@click.option('--aug', help='Augmentation mode [default: ada]: ada, noaug, fixed, or a registered plug-in',
              metavar='NAME')
@click.option('--p', help='Augmentation probability for --aug=fixed', type=float)
@click.option('--target', help='ADA target value for --aug=ada [default: 0.6]', type=float)
@click.option('--ada-kimg', help='kimg for ADA to move p from 0 to 1 [default: 500, 100 when resuming from a '
              'pickle]; short runs need it smaller', type=float, metavar='KIMG')
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]', type=click.Choice(sorted(AUGPIPE_NAMES)))
# Transfer learning.
@click.option('--resume', help='Resume from network pickle, checkpoint, run folder, URL or '
              + '|'.join(resume_specs) + ' [default: noresume]', metavar='PKL')
@click.option('--freezed', help='Freeze-D [default: 0 layers]', type=click.IntRange(min=0), default=0, metavar='INT')
# Performance options.
@click.option('--fp32', help='Disable mixed-precision training', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Use NHWC memory format with FP16', type=bool, metavar='BOOL')
@click.option('--nobench', help='Disable cuDNN benchmarking', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Allow PyTorch to use TF32 internally', type=bool, metavar='BOOL')
@click.option('--workers', help='Override number of DataLoader workers', type=click.IntRange(min=0), default=3,
              metavar='INT')
# Ours.
@click.option('--device', help='Where to train [default: auto = cuda when available]',
              type=click.Choice(['auto', 'cpu', 'cuda']), default='auto')
@click.option('--tick', help='Progress tick interval in kimg [default: 4]', type=float, default=4, metavar='KIMG')
@click.option('--cbase', help='Override capacity: channel_base (channels at res r = min(cbase/r, cmax))', type=int,
              metavar='INT')
@click.option('--cmax', help='Override the maximum number of channels [default: 512]', type=int, metavar='INT')
@click.option('--map-depth', help='Override the number of mapping layers', type=click.IntRange(min=1), metavar='INT')
@click.option('--mbstd-group', help='Override the minibatch-stddev group size', type=click.IntRange(min=1),
              metavar='INT')
@click.option('--ngf', help='Override the generator width of ngf/ndf cfgs (FastGAN: 64)', type=int, metavar='INT')
@click.option('--ndf', help='Override the discriminator width of ngf/ndf cfgs (FastGAN: 64)', type=int, metavar='INT')
@click.option('--ema', help="Override the G_ema half-life in kimg [default: the cfg's]", type=float, metavar='KIMG')
@click.option('--grid', help='Image grids: at most this many cells per side [default: 32; 8 on the CPU]',
              type=click.IntRange(min=1), metavar='INT')
@click.option('--detector-dir', help='Folder with metric/LPIPS detector files (else $KDGAN_DETECTOR_DIR, cache, '
              'download)', metavar='DIR')
# Plug-in losses: KD-DLGAN (--loss=kdgan.*) and FastGAN's reconstruction.
@click.option('--teacher', help='KD teacher: open_clip MODEL:TAG, or random:MODEL for smoke tests '
              '[default: ViT-B-32:openai]', metavar='SPEC')
@click.option('--teacher-weights', help='KD teacher weights file (open_clip checkpoint)', metavar='PATH')
@click.option('--teacher-config', help='KD teacher architecture: an open_clip model config JSON', metavar='PATH')
@click.option('--teacher-dir', help='Folder with teacher weight files (else $KDGAN_TEACHER_DIR, cache, download)',
              metavar='DIR')
@click.option('--kd-p', help='AGKD: probability of the aggregated cross terms [default: 0.7]', type=float)
@click.option('--kd-agkd-weight', help='AGKD weight [default: 10]', type=float)
@click.option('--kd-cgkd-weight', help='CGKD weight [default: 10]', type=float)
@click.option('--kd-dist', help='KD distance [default: the term\'s own]', type=click.Choice(['l2', 'l1', 'mse']))
@click.option('--kd-labels', help='Prompt labels: auto, a comma list, or a file [default: auto]', metavar='LABELS')
@click.option('--kd-template', help='Prompt template [default: "A photo of a {label}"]', metavar='TEXT')
@click.option('--kd-diversity', help='CGKD generator-side diversity weight [default: 0]', type=float)
@click.option('--recon', help='FastGAN D reconstruction loss [default: lpips]',
              type=click.Choice(['lpips', 'mse', 'l1', 'none']))
@click.option('--recon-weight', help='Reconstruction weight [default: 1]', type=float)
def main(ctx, outdir, dry_run, **config_kwargs):
    """Train a GAN using the techniques described in "Training Generative
    Adversarial Networks with Limited Data" (StyleGAN2-ADA), with kdgan's
    plug-ins available by name.

    \b
    Examples:
    python train.py --outdir=~/training-runs --data=~/mydataset.zip --gpus=1 --dry-run
    python train.py --outdir=~/training-runs --data=~/mydataset.zip --mirror=1 --metrics=none
    python train.py --outdir=runs --data=builtin:shapes-32 --device=cpu --metrics=none --kimg=4 --tick=0.5
    """
    del ctx
    for key in ('cbase', 'cmax'):
        if config_kwargs[key] is not None and config_kwargs[key] < 1:
            raise click.BadParameter('must be positive', param_hint=f"'--{key}'")
    detector_dir = config_kwargs['detector_dir']
    if detector_dir is not None:
        detector_dir = os.path.abspath(os.path.expanduser(detector_dir))
        config_kwargs['detector_dir'] = detector_dir
        from metrics import detectors
        os.environ[detectors.DEFAULT_ENV_VAR] = detector_dir  # Spawned ranks and the loop inherit it.
    desc, args, resolved, summary, cleanup = setup_training_loop_kwargs(dry_run=dry_run, **config_kwargs)
    try:
        if dry_run:
            args.run_dir = predict_run_dir(outdir, desc)
            print_summary(args, resolved, summary)
            print('Training options:')
            print(json.dumps(args, indent=2))
            print()
            print('Resolved names:')
            print(json.dumps(resolved, indent=2))
            print()
            print('Dry run; exiting.')
            return
    finally:
        if cleanup is not None:
            cleanup.cleanup()

    show_plugin_logs()
    asset_lines = check_loss_assets(args.loss_kwargs, detector_dir)
    args.run_dir = make_run_dir(outdir, desc)
    logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    try:
        print_summary(args, resolved, summary)
        for line in asset_lines:
            print(f'Asset:              {line}')
        with open(os.path.join(args.run_dir, 'training_options.json'), 'wt', encoding='utf-8') as f:
            json.dump(args, f, indent=2)
        print('Launching processes...')
        if args.num_gpus > 1:
            logger.close()  # The spawned ranks append to log.txt themselves.
        launch(args)
    finally:
        logger.close()


if __name__ == '__main__':
    main()

