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
can be listed in $KDGAN_PLUGINS. Explicit flags win over preset defaults;
training/config.py resolves the options and documents the precedence.

\b
--cfg    auto (default), stylegan2, paper256, paper512, paper1024, cifar; fastgan, fastgan_lite,
         biggan_cifar, stylegan2_100shot
--loss   stylegan2 (the default of every built-in cfg); fastgan; biggan; kdgan.AGKD, kdgan.CGKD,
         kdgan.KDDLGAN
--aug    ada (default), noaug, fixed (needs --p); diffaug

Start-up order: option and metric names are checked and the metric
detectors resolved before torch is even imported (an offline machine
without the detector file gets one line naming it within seconds); the
files the loss needs (the LPIPS VGG16 of --recon=lpips, the CLIP teacher)
are resolved right after, before the run folder is made.

This file only parses, prints and launches; torch (and everything that
imports it) is imported where it is needed.
"""

import functools
import json
import logging
import os
import re
import sys
import tempfile

import click

import dnnlib
from training import config, preflight
from training.config import (AUGPIPE_NAMES, BUILTIN_AUGS, BUILTIN_LOSS, CPU_GRID_CELLS, DEFAULT_ADA_KIMG,
                             DEFAULT_ADA_TARGET, DEFAULT_AUGPIPE, load_presets, previous_transfer_options,
                             resume_specs)

__all__ = ['AUGPIPE_NAMES', 'BUILTIN_AUGS', 'BUILTIN_LOSS', 'CPU_GRID_CELLS', 'DEFAULT_ADA_KIMG', 'DEFAULT_ADA_TARGET',
           'DEFAULT_AUGPIPE', 'check_loss_assets', 'check_metrics', 'launch', 'load_presets', 'load_registry',
           'main', 'make_run_dir', 'materialize_data', 'open_dataset', 'predict_run_dir', 'previous_transfer_options',
           'print_summary', 'resolve_name', 'resolve_resume', 'resume_specs', 'setup_training_loop_kwargs',
           'show_plugin_logs', 'subprocess_fn']


# The config module raises its own errors; on the command line they read as click's.

def _click_error(err):
    if isinstance(err, config.BadValue):
        return click.BadParameter(err.message, param_hint=f"'{err.flag}'")
    if isinstance(err, config.Conflict):
        return click.UsageError(err.message)
    return click.ClickException(err.message)


def _clicked(func):
    """`func` with config.ConfigError turned into the matching click exception."""
    @functools.wraps(func)
    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except config.ConfigError as err:
            raise _click_error(err) from err
    return call


check_metrics = _clicked(config.check_metrics)
load_registry = _clicked(config.load_registry)
resolve_name = _clicked(config.resolve_name)
materialize_data = _clicked(config.materialize_data)
open_dataset = _clicked(config.open_dataset)
resolve_resume = _clicked(config.resolve_resume)


def setup_training_loop_kwargs(**options):
    """(desc, args, resolved, summary, cleanup) for train.py's options given as keywords
    (see training.config.Flags for the names and defaults). `args` is what
    training_loop receives, minus run_dir; `cleanup` is a temporary folder to remove
    after a dry run, or None. Problems raise click exceptions."""
    return _clicked(config.resolve)(config.Flags(**options)).astuple()


def check_loss_assets(loss_kwargs, detector_dir=None):
    """Fetch or find the files the loss will need (LPIPS VGG16 for --recon=lpips, the KD
    teacher's weights) before anything trains; a missing one is a one-line
    click.ClickException. Returns lines for the log ([] for a loss without plug-in terms)."""
    loss_kwargs = loss_kwargs or {}
    from_plugins = str(loss_kwargs.get('class_name', '')).startswith('kdgan_plugins.')
    if not (loss_kwargs.get('terms') or from_plugins):
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
        if hasattr(err, 'in_context'):   # a detector file: name the loss option that needs it, not metrics
            err = err.in_context('loss')
        text = str(err).strip()
        raise click.ClickException(text.splitlines()[0] if text else repr(err))


# Run folders: outdir/{id:05d}-{desc}, id one past the largest there, never reused.

def _next_run_id(outdir):
    taken = [-1]
    for name in os.listdir(outdir) if os.path.isdir(outdir) else ():
        number = re.match(r'^(\d+)', name)
        if number and os.path.isdir(os.path.join(outdir, name)):
            taken.append(int(number.group(1)))
    return max(taken) + 1


def make_run_dir(outdir, desc):
    """Create the next run folder; when another process takes the same id first, try the next."""
    os.makedirs(outdir, exist_ok=True)
    while True:
        run_dir = os.path.join(outdir, f'{_next_run_id(outdir):05d}-{desc}')
        try:
            os.makedirs(run_dir, exist_ok=False)
        except FileExistsError:
            continue
        return run_dir


def predict_run_dir(outdir, desc):
    """The folder make_run_dir would create now (a dry run creates nothing)."""
    return os.path.join(outdir, f'{_next_run_id(outdir):05d}-{desc}')


# Console.

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


def _augmentation_text(args, resolved):
    aug = resolved['aug']
    text = f'{aug["name"]} -> {aug["class_name"]} [{aug["source"]}]'
    if args.ada_target is not None:
        text += f', target {args.ada_target}, ada_kimg {args.get("ada_kimg", DEFAULT_ADA_KIMG):g}'
    if args.augment_p:
        text += f', p {args.augment_p}'
    return text


def _ema_text(args):
    """G_ema's averaging in words: how soon snapshots show what G has learnt (--ema, --ema-rampup)."""
    text = f'half-life {args.ema_kimg:g} kimg'
    if args.get('ema_start_kimg'):
        text += f', a copy of G until kimg {args.ema_start_kimg:g}'
    if args.get('ema_rampup') is None:
        return text + ', no ramp-up'
    return text + (f', ramp-up {args.ema_rampup:g} (half-life <= {args.ema_rampup:g} x images seen, '
                   f'until kimg {args.ema_kimg / args.ema_rampup:.4g}; --ema-rampup=none: off)')


_EMA_BN_WORDS = dict(recompute="its own running statistics, re-estimated for each grid and snapshot",
                     copy="G's running statistics", batch='the statistics of each generated batch')


def _ema_bn_text(args):
    """G_ema's batch-norm statistics in words (--ema-bn), for the cfgs that choose them."""
    mode = args.get('ema_bn')
    return f'; batch norm: {mode}, {_EMA_BN_WORDS[mode]}' if mode else ''


def _summary_rows(args, resolved, summary):
    """(label, text) pairs of the start-of-run summary, optional rows included only when they apply."""
    data = args.training_set_kwargs
    loss = resolved['loss']
    teacher = (args.loss_kwargs or {}).get('teacher')
    rows = [
        ('Output directory', args.run_dir),
        ('Training data', f'{data.path} ({summary["data"]})'),
        ('Number of images', f'{data.max_size}' + (' (x2 with mirroring)' if data.xflip else '')),
        ('Image resolution', summary['resolution']),
        ('Conditional model', f'{data.use_labels}' + (f' ({summary["labels"]} label dims)' if data.use_labels else '')),
        ('Dataset x-flips', data.xflip),
        ('Configuration', f'{resolved["cfg"]["name"]} [{resolved["cfg"]["source"]}]'),
        ('Loss', f'{loss["name"]} -> {loss["class_name"]} [{loss["source"]}]'),
        ('Augmentation', _augmentation_text(args, resolved)),
        ('Batch', f'{args.batch_size} ({args.batch_gpu} per GPU/process)'),
        ('G_ema', _ema_text(args) + _ema_bn_text(args)),
        ('Training duration', f'{args.total_kimg} kimg, {args.kimg_per_tick} kimg per tick, '
                              f'snapshots every {args.network_snapshot_ticks} ticks'),
        ('Device', f'{args.device} x {args.num_gpus}'),
    ]
    if loss.get('terms'):
        rows.append(('Loss terms', ', '.join(f'{k}: {v}' for k, v in loss['terms'].items())))
    if teacher:
        text = f'{teacher.get("spec")}'
        text += f', weights {teacher["weights"]}' if teacher.get('weights') else ''
        text += f', config {teacher["config"]}' if teacher.get('config') else ''
        rows.append(('Teacher', text))
        from kdgan_plugins.teachers import clip_teacher   # the prompts, and how to choose them
        rows.append(('Teacher prompts', clip_teacher.prompt_summary(
            teacher.get('labels'), teacher.get('template'), (args.loss_kwargs or {}).get('class_names'))))
    if resolved['D'].get('backbone_class_name'):
        rows.append(('Discriminator', f'{resolved["D"]["class_name"]} around {resolved["D"]["backbone_class_name"]}'))
    rows.append(('Metrics', ', '.join(args.metrics) if args.metrics else 'none'))
    if args.resume_pkl:
        rows.append(('Resume from', f'{args.resume_pkl} ({resolved["resume"]["note"]})'))
    if resolved.get('recorded'):
        rows.append(('Options restored', resolved['recorded']['text']))
    return rows


def _print_row(label, text):
    print(f'{label + ":":<20}{text}')


def print_summary(args, resolved, summary):
    for label, text in _summary_rows(args, resolved, summary):
        _print_row(label, text)
    print()


def _print_dry_run(args, resolved, summary):
    print_summary(args, resolved, summary)
    for title, value in (('Training options', args), ('Resolved names', resolved)):
        print(f'{title}:')
        print(json.dumps(value, indent=2))
        print()
    print('Dry run; exiting.')


# Launch.

def subprocess_fn(rank, args, temp_dir):
    """The training loop in this process, as `rank`. Spawned ranks keep their own log.txt handle."""
    import torch
    from torch_utils import custom_ops, misc, training_stats
    from training import run_guard, training_loop

    spawned = args.num_gpus > 1
    log_file = None
    if spawned:
        run_guard.watch_launcher()   # No orphans: a rank whose launcher died stops within seconds.
        log_file = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a',
                                      should_flush=True)
    show_plugin_logs()
    try:
        device = misc.setup_process(rank, args.num_gpus, args.device, temp_dir)
        training_stats.init_multiprocessing(rank=rank, sync_device=device if spawned else None)
        if rank != 0:
            custom_ops.verbosity = 'none'
        try:
            training_loop.training_loop(rank=rank, **{**args, 'device': device})
        except run_guard.TrainingStopped as err:
            if not spawned:
                raise
            if rank == 0:
                run_guard.leave_note(temp_dir, err)   # The launcher exits with it once every rank is done.
    finally:
        if spawned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if log_file is not None:
            log_file.close()


def launch(args):
    """One process runs the loop itself; N > 1 are spawned by torch.multiprocessing."""
    if args.num_gpus == 1:
        subprocess_fn(rank=0, args=args, temp_dir=None)
        return
    import torch
    # The ranks find each other through a file in a scratch folder inside the run folder.
    from training import run_guard
    with tempfile.TemporaryDirectory(prefix='.dist-', dir=args.run_dir) as meeting_dir:
        ranks = torch.multiprocessing.start_processes(subprocess_fn, args=(args, meeting_dir), nprocs=args.num_gpus,
                                                      join=False, start_method='spawn')
        with run_guard.ForwardSignals(ranks.pids()):
            while not ranks.join():
                pass
        stopped = run_guard.read_note(meeting_dir)
    if stopped is not None:
        raise stopped


def _open_run(outdir, desc, args, resolved, summary, asset_lines):
    """Make the run folder, start log.txt, print the summary and record the options. Returns the Logger."""
    args.run_dir = make_run_dir(outdir, desc)
    logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    print_summary(args, resolved, summary)
    for line in asset_lines:
        _print_row('Asset', line)
    options_path = os.path.join(args.run_dir, 'training_options.json')
    with open(f'{options_path}.tmp{os.getpid()}', 'wt', encoding='utf-8') as f:
        json.dump({**args, **summary.get('record', {})}, f, indent=2)   # + the options a resume restores
    os.replace(f'{options_path}.tmp{os.getpid()}', options_path)   # Whole or absent: --resume reads it.
    return logger


def torchrun_fn(env, outdir, desc, args, resolved, summary, asset_lines):
    """This process as global rank env.rank of a torchrun launch: join the group (env://), let rank 0
    make the run folder and share its path, then run the loop. Only rank 0 writes to the folder."""
    from torch_utils import custom_ops, training_stats
    from training import distributed, training_loop
    device = distributed.join_group(env, args.device)
    logger = None
    try:
        def lead_opens_run():
            nonlocal logger
            logger = _open_run(outdir, desc, args, resolved, summary, asset_lines)
            print(f'Launching under torchrun: {env.world_size} processes...')
            return args.run_dir
        args.run_dir = distributed.from_lead(lead_opens_run, env, device)
        training_stats.init_multiprocessing(rank=env.rank, sync_device=device if env.world_size > 1 else None)
        if env.rank != 0:
            custom_ops.verbosity = 'none'
        training_loop.training_loop(rank=env.rank, **{**args, 'device': device})
    finally:
        distributed.leave_group()
        if logger is not None:
            logger.close()


def _train(outdir, desc, args, resolved, summary, detector_dir, torchrun=None):
    """Check the loss' files, make the run folder, record the options and launch."""
    show_plugin_logs()
    asset_lines = check_loss_assets(args.loss_kwargs, detector_dir)
    if torchrun is not None:
        torchrun_fn(torchrun, outdir, desc, args, resolved, summary, asset_lines)
        return
    logger = _open_run(outdir, desc, args, resolved, summary, asset_lines)
    try:
        print('Launching processes...')
        if args.num_gpus > 1:
            logger.close()  # Spawned ranks append to log.txt on their own.
        launch(args)
    finally:
        logger.close()


def _torchrun_env(options):
    """The env:// launch this process is part of (None when started plainly); --gpus becomes its world size."""
    from training import distributed
    try:
        env = distributed.torchrun_env()
    except distributed.LaunchError as err:
        raise click.UsageError(str(err))
    if env is None:
        return None
    if options['gpus'] not in (1, env.world_size):
        raise click.BadParameter(f'{options["gpus"]} disagrees with torchrun (WORLD_SIZE={env.world_size}); '
                                 'leave --gpus out under torchrun', param_hint="'--gpus'")
    options['gpus'] = env.world_size
    return env


# Command line.

def _metrics_option(ctx, param, value):
    del ctx, param
    names = [name.strip() for name in value.split(',') if name.strip()] if value else []
    return [] if names in ([], ['none']) else names


# (declarations, click.option keywords), in --help order. Option names and defaults are
# upstream's (users' command lines keep working); the kdgan options follow their style.
_OPTIONS = (
    (('--outdir',), dict(metavar='DIR', help='Folder that receives the run folders [default with '
                                             '--resume=<run>: the folder that run is in]')),
    (('--gpus',), dict(type=click.IntRange(min=1), default=1, metavar='INT',
                       help='How many GPUs (or CPU processes) share the work [default: 1]')),
    (('--snap',), dict(type=click.IntRange(min=1), default=50, metavar='INT',
                       help='Ticks between snapshots of the networks and image grids [default: 50]')),
    (('--metrics',), dict(default='fid50k_full', callback=_metrics_option, metavar='LIST',
                          help='Metrics at each snapshot: names separated by commas, or none [default: fid50k_full]')),
    (('--seed',), dict(type=int, default=0, metavar='INT', help='Seed for every random choice [default: 0]')),
    (('-n', '--dry-run'), dict(is_flag=True, help='Show the resolved options, then stop before training')),
    (('--data',), dict(metavar='PATH', help="Images: a folder, a zip, or builtin:shapes[-RES] [default with "
                                            "--resume=<run>: that run's]")),
    (('--cond',), dict(type=bool, metavar='BOOL',
                       help="Condition G and D on the data set's labels [default: false]")),
    (('--subset',), dict(type=int, metavar='INT', help='Use a random N of the images [default: all of them]')),
    (('--mirror',), dict(type=bool, metavar='BOOL', help='Add left-right mirrored images [default: false]')),
    (('--cfg',), dict(default='auto', metavar='NAME',
                      help='Configuration: a built-in name or a registered plug-in [default: auto]')),
    (('--gamma',), dict(type=float, help="R1 weight instead of the cfg's")),
    (('--kimg',), dict(type=float, metavar='KIMG', help="Length of training in thousands of images instead "
                                                        "of the cfg's")),
    (('--batch',), dict(type=int, metavar='INT', help="Total batch over all GPUs instead of the cfg's")),
    (('--lr',), dict(type=float, metavar='FLOAT', help="Learning rate of G and D instead of the cfg's")),
    (('--loss',), dict(metavar='NAME', help="Loss: stylegan2 or a registered plug-in [default: the cfg's]")),
    (('--aug',), dict(metavar='NAME', help='Augmentation: ada, noaug, fixed, or a registered plug-in '
                                           '[default: ada]')),
    (('--p',), dict(type=float, help='With --aug=fixed: the probability of each augmentation')),
    (('--target',), dict(type=float, help='With --aug=ada: the overfitting heuristic to aim for [default: 0.6]')),
    (('--ada-kimg',), dict(type=float, metavar='KIMG', help='kimg for ADA to move p from 0 to 1 [default: 500, 100 '
                                                            'when resuming from a pickle]; short runs need it '
                                                            'smaller')),
    (('--augpipe',), dict(type=click.Choice(sorted(AUGPIPE_NAMES)),
                          help='Which augmentations ADA (or --aug=fixed) applies [default: bgc]')),
    (('--resume',), dict(metavar='PKL', help='Start from a network pickle, checkpoint, run folder, outdir (its '
                                             'newest complete snapshot), URL or ' + '|'.join(resume_specs)
                                             + '; a train.py run also restores its options: give only what '
                                             'changes, e.g. --kimg [default: noresume]')),
    (('--resume-mode',), dict(type=click.Choice(['auto', 'networks']), default='auto',
                              help='networks: take only the weights (upstream; options may change), never the '
                                   'training state [default: auto = exact where a checkpoint exists]')),
    (('--freezed',), dict(type=click.IntRange(min=0), default=0, metavar='INT',
                          help="How many of D's highest-resolution layers stay frozen (Freeze-D) [default: 0]")),
    (('--fp32',), dict(type=bool, metavar='BOOL', help='Keep every layer in float32 (no fp16 layers)')),
    (('--nhwc',), dict(type=bool, metavar='BOOL', help='Channels-last memory layout for the fp16 layers')),
    (('--nobench',), dict(type=bool, metavar='BOOL', help="Turn off cuDNN's algorithm benchmarking")),
    (('--allow-tf32',), dict(type=bool, metavar='BOOL', help='Let PyTorch use TF32 inside matmuls and convolutions')),
    (('--workers',), dict(type=click.IntRange(min=0), default=3, metavar='INT',
                          help='DataLoader worker processes [default: 3]')),
    (('--device',), dict(type=click.Choice(['auto', 'cpu', 'cuda']), default='auto',
                         help='Where to train [default: auto = cuda when available]')),
    (('--tick',), dict(type=float, default=4, metavar='KIMG', help='Progress tick interval in kimg [default: 4]')),
    (('--cbase',), dict(type=int, metavar='INT', help='Override capacity: channel_base (channels at res r = '
                                                      'min(cbase/r, cmax))')),
    (('--cmax',), dict(type=int, metavar='INT', help='Override the maximum number of channels [default: 512]')),
    (('--map-depth',), dict(type=click.IntRange(min=1), metavar='INT', help='Override the number of mapping layers')),
    (('--mbstd-group',), dict(type=click.IntRange(min=1), metavar='INT',
                              help='Override the minibatch-stddev group size')),
    (('--ngf',), dict(type=int, metavar='INT', help='Override the generator width of ngf/ndf cfgs (FastGAN: 64)')),
    (('--ndf',), dict(type=int, metavar='INT', help='Override the discriminator width of ngf/ndf cfgs (FastGAN: 64)')),
    (('--ema',), dict(type=float, metavar='KIMG', help="Override the G_ema half-life in kimg [default: the cfg's]")),
    (('--ema-rampup',), dict(metavar='RATIO|none', help="Cap G_ema's half-life at this fraction of the images seen "
                                                        "so far, so early snapshots show what G learnt; none = off "
                                                        "[default: the cfg's: 0.05; none for stylegan2, paper256/512/1024 "
                                                        "and biggan_cifar, whose G_ema copies G up to kimg 200]")),
    (('--ema-bn',), dict(type=click.Choice(list(config.EMA_BN_MODES)),
                         help="FastGAN: G_ema's batch-norm statistics in grids, snapshots and metrics: recompute "
                              "(its own), copy (G's) or batch (each generated batch's) [default: the cfg's]")),
    (('--grid',), dict(type=click.IntRange(min=1), metavar='INT',
                       help='Image grids: at most this many cells per side [default: 32; 8 on the CPU]')),
    (('--detector-dir',), dict(metavar='DIR', help='Folder with metric/LPIPS detector files (else '
                                                   '$KDGAN_DETECTOR_DIR, cache, download)')),
    (('--teacher',), dict(metavar='SPEC', help='KD teacher: open_clip MODEL:TAG, or random:MODEL for smoke tests '
                                               '[default: ViT-B-32:openai]')),
    (('--teacher-weights',), dict(metavar='PATH', help='KD teacher weights file (open_clip checkpoint)')),
    (('--teacher-config',), dict(metavar='PATH', help='KD teacher architecture: an open_clip model config JSON')),
    (('--teacher-dir',), dict(metavar='DIR', help='Folder with teacher weight files (else $KDGAN_TEACHER_DIR, '
                                                  'cache, download)')),
    (('--kd-p',), dict(type=float, help='AGKD: probability of the aggregated cross terms [default: 0.7]')),
    (('--kd-agkd-weight',), dict(type=float, help='AGKD weight [default: 10]')),
    (('--kd-cgkd-weight',), dict(type=float, help='CGKD weight [default: 10]')),
    (('--kd-dist',), dict(type=click.Choice(['l2', 'l1', 'mse']), help="KD distance [default: the term's own]")),
    (('--kd-labels',), dict(metavar='LABELS', help='Prompt labels: auto, a comma list, or a file [default: auto]')),
    (('--kd-template',), dict(metavar='TEXT', help='Prompt template [default: "A photo of a {label}"]')),
    (('--kd-diversity',), dict(type=float, help='CGKD generator-side diversity weight [default: 0]')),
    (('--recon',), dict(type=click.Choice(['lpips', 'mse', 'l1', 'none']),
                        help='FastGAN D reconstruction loss [default: lpips]')),
    (('--recon-weight',), dict(type=float, help='Reconstruction weight [default: 1]')),
    (('--lecam',), dict(type=float, metavar='WEIGHT', help="LeCam regulariser's weight on any backbone, 0 = off "
                                                          "[default: the cfg's; biggan_cifar 0.3, others off]")),
    (('--precision',), dict(type=click.Choice(['auto', 'fp32', 'bf16']),
                            help="FastGAN arithmetic: auto (bf16 where the CPU has it natively), bf16, or fp32 with "
                                 "the reference kernels [default: the cfg's; fastgan auto]")),
    (('--fake-reuse',), dict(type=bool, metavar='BOOL', help="FastGAN: the D step's fakes also train G (one G forward "
                                                            "per minibatch, D first) [default: the cfg's; fastgan true]")),
    (('--diffaug',), dict(metavar='POLICY', help='DiffAugment ops with --aug=diffaug, e.g. color,translation,cutout '
                                                 "[default: the cfg's]")),
)


_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def _with_recorded(options, outdir, dry_run):
    """The options not given on the command line come from the resumed run's training_options.json
    (config.with_recorded: precedence step 0); --outdir defaults to the folder that run is in."""
    ctx = click.get_current_context()
    given = tuple(name for name in ctx.params if ctx.get_parameter_source(name) in _GIVEN)
    flags, recorded = _clicked(config.with_recorded)(config.Flags(dry_run=dry_run, explicit=given, **options))
    if outdir is None:
        if recorded is None:
            raise click.UsageError("Missing option '--outdir' (it may be left out only with --resume=<a train.py "
                                   "run folder, checkpoint or snapshot>, whose folder it then is)")
        outdir = os.path.dirname(recorded.run_dir)
    options = {key: value for key, value in vars(flags).items() if key != 'dry_run'}
    return options, outdir


def _with_options(command):
    for declarations, keywords in reversed(_OPTIONS):
        command = click.option(*declarations, **keywords)(command)
    return command


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@_with_options
def main(outdir, dry_run, **options):
    """Train a GAN the StyleGAN2-ADA way (adaptive discriminator augmentation for
    small data sets), with the kdgan plug-ins available by name.

    \b
    Examples:
    python train.py --outdir=~/training-runs --data=~/mydataset.zip --gpus=1 --dry-run
    python train.py --outdir=~/training-runs --data=~/mydataset.zip --mirror=1 --metrics=none
    python train.py --outdir=runs --data=builtin:shapes-32 --device=cpu --metrics=none --kimg=4 --tick=0.5
    """
    for name in ('cbase', 'cmax'):
        if options[name] is not None and options[name] < 1:
            raise click.BadParameter('must be positive', param_hint=f"'--{name}'")
    options, outdir = _with_recorded(options, outdir, dry_run)
    _clicked(preflight.check_outdir)(outdir)
    detector_dir = options['detector_dir']
    if detector_dir is not None:
        detector_dir = options['detector_dir'] = os.path.abspath(os.path.expanduser(detector_dir))
        from metrics import detectors
        os.environ[detectors.DEFAULT_ENV_VAR] = detector_dir  # Spawned ranks and the loop inherit it.
    torchrun = _torchrun_env(options)
    desc, args, resolved, summary, cleanup = setup_training_loop_kwargs(dry_run=dry_run, **options)
    if not dry_run:
        from training import run_guard
        try:
            _train(outdir, desc, args, resolved, summary, detector_dir, torchrun)
        except run_guard.TrainingStopped as err:   # A signal or divergence: a message, a non-zero exit.
            stopped = click.ClickException(str(err))
            stopped.exit_code = err.exit_code
            raise stopped from err
        return
    try:
        args.run_dir = predict_run_dir(outdir, desc)
        _print_dry_run(args, resolved, summary)
    finally:
        if cleanup is not None:
            cleanup.cleanup()


if __name__ == '__main__':
    main()
