"""One training run as a fixed sequence of named phases over a `TrainingState`.

The run is built once (`_set_up`: seeds, resume, data, networks, augmentation,
processes, phases, grids, logs, random streams), then repeats one minibatch
(`_draw_minibatch`, `_run_phase` for each phase due, `_update_ema`,
`_adapt_augment`) and, at every tick boundary, the maintenance steps
(`_print_status`, `_export_fakes`, `_write_snapshot`, `_evaluate_metrics`,
`_log_stats`, `_write_checkpoint`). Which generator, discriminator, loss and
augmentation are trained is named by class names and kwargs, so every method in
kdgan_plugins runs through this one loop.

Beyond upstream's behaviour (CONTRACT.md, "Training loop"), all additive:
- `device` (None: cuda:rank when CUDA is available, else the CPU);
- exact resume (training/checkpoint.py): `resume_pkl` may be a snapshot .pkl
  (networks only, unless its .ckpt.pt sits beside it), a .ckpt.pt, a run folder
  or an outdir (its newest complete snapshot); `resume_mode='networks'` asks for
  upstream's networks-only resume (weights from the checkpoint when there is one,
  so nothing is unpickled); the log says which of the two happened;
- a snapshot is one unit: the pickle, its weights-only model file, then its
  checkpoint, renamed into place last (a snapshot without it is incomplete and
  never resumed from); metrics follow. Temporary files that killed writers left
  in the run's outdir are removed at the start;
- SIGTERM/SIGINT (training/run_guard.py): the minibatch is finished, a snapshot
  and checkpoint written and `TrainingInterrupted` raised; a second signal ends
  the process at once;
- a divergence guard (run_guard.DivergenceGuard) raises `TrainingDiverged` at the
  end of a tick whose losses, gradients or weights went non-finite, before that
  tick writes anything; stats.jsonl is strict JSON (non-finite values as null);
- initial weights depend on `random_seed` only, and latents and labels come from
  one stream shared by all ranks, rank r taking every num_gpus-th row (as
  InfiniteSampler deals out real images). A run on N processes therefore sees
  the data, latents and initial weights of a one-process run of the same total
  batch.

Multi-process runs: the caller sets up torch.distributed (gloo on the CPU, nccl
on CUDA) and training_stats.init_multiprocessing(rank, sync_device) in every
process before calling training_loop there; only rank 0 prints and writes files.
"""

import copy
import itertools
import json
import os
import pickle
import random
import time

import numpy as np
import PIL.Image
import torch

import dnnlib
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from training import checkpoint as ckpt_io
from training import progress as progress_meter
from training import run_guard


def training_loop(
    *,
    run_dir='.', training_set_kwargs={}, data_loader_kwargs={}, metrics=[],
    G_kwargs={}, D_kwargs={}, loss_kwargs={}, G_opt_kwargs={}, D_opt_kwargs={},
    G_reg_interval=4, D_reg_interval=16, batch_size=4, batch_gpu=4, ema_kimg=10, ema_rampup=None,
    num_D_steps=1, ema_start_kimg=0, ema_bn='copy',
    augment_kwargs=None, ada_target=None, ada_kimg=500, ada_interval=4, augment_p=0,
    total_kimg=25000, kimg_per_tick=4, image_snapshot_ticks=50, network_snapshot_ticks=50, grid_max_cells=32,
    random_seed=0, num_gpus=1, rank=0, device=None, cudnn_benchmark=True, allow_tf32=False,
    resume_pkl=None, resume_mode='auto', abort_fn=None, progress_fn=None, progress_sec=60,
):
    """Train until `total_kimg` thousand real images have been shown (or `abort_fn()` says stop).

    Data and models: `training_set_kwargs`, `data_loader_kwargs`, `G_kwargs`, `D_kwargs`,
    `loss_kwargs`, `augment_kwargs` (None: no augmentation) are class_name + kwargs dicts;
    `G_opt_kwargs`/`D_opt_kwargs` name the optimisers. `G_reg_interval`/`D_reg_interval`:
    minibatches between lazy regularisation steps (None: regularise in the main step).
    `batch_size` is the total over `num_gpus` processes, `batch_gpu` one accumulation
    round of one process. G_ema follows G with a half-life of `ema_kimg` (capped at
    `ema_rampup` times the images seen, when set); before `ema_start_kimg` G_ema is a copy of G.
    `ema_bn` (config.EMA_BN_MODES; G with batch norm, e.g. FastGAN): which batch-norm statistics
    G_ema's pictures, snapshots and metrics use: 'copy' G's running ones (the EMA copies G's
    buffers), 'recompute' its own, re-estimated before each grid and snapshot, 'batch' those of
    each generated batch (recorded in the network, so loaded snapshots do the same).
    `num_D_steps` > 1: each minibatch trains D only, and G's phases run after every
    `num_D_steps` of them (BigGAN's D steps per G step). Augmentation starts at `augment_p`;
    with `ada_target`, every `ada_interval` minibatches p moves towards keeping
    E[sign(D(real))] at the target, by at most 1 per `ada_kimg`. A tick lasts
    `kimg_per_tick`; image grids (at most `grid_max_cells` per side) and network
    snapshots, then `metrics`, come every `image_snapshot_ticks`/`network_snapshot_ticks`
    (None: never). `progress_fn(cur_kimg, total_kimg)` is called at the start and at
    every tick. Rank 0 also prints a time estimate after a short warm-up, an eta on each
    status line and a progress line when `progress_sec` pass without one (training/progress.py;
    the clock never changes tick boundaries or numbers). The rest is described in the module docstring.
    """
    cfg = dnnlib.EasyDict(locals())
    run = _Run(cfg)
    run.signals.install()
    try:
        state = _set_up(run)
        finished = False
        while not finished:
            finished = _train_minibatch(run, state)
    finally:
        run.signals.restore()
        _close(run)
    run.say('', 'Exiting...')


class _Phase:
    """One optimiser step kind ('Gmain', 'Greg', 'Gboth', 'Dmain', ...), due every `interval` minibatches."""

    def __init__(self, name, module, opt, interval, timed, start=0, gain=None):
        self.name = name
        self.module = module
        self.opt = opt
        self.interval = interval
        self.start = start      # the first minibatch it is due in
        self.gain = interval if gain is None else gain
        self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if timed else None

    def due(self, batch_idx):
        return batch_idx >= self.start and (batch_idx - self.start) % self.interval == 0


class _Run:
    """The fixed facts and open resources of one call to training_loop. Nothing here is
    checkpointed: a resumed process rebuilds it all from the same options."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.started = time.time()
        if not (cfg.num_gpus >= 1 and 0 <= cfg.rank < cfg.num_gpus):
            raise ValueError('need num_gpus >= 1 and 0 <= rank < num_gpus, got {} and {}'.format(
                cfg.num_gpus, cfg.rank))
        per_rank, rest = divmod(cfg.batch_size, cfg.num_gpus)
        if rest != 0 or per_rank % cfg.batch_gpu != 0:
            raise ValueError('batch_size ({}) must be a multiple of num_gpus * batch_gpu ({} * {})'.format(
                cfg.batch_size, cfg.num_gpus, cfg.batch_gpu))
        from training.config import EMA_BN_MODES
        if cfg.ema_bn not in EMA_BN_MODES:
            raise ValueError('ema_bn must be one of {}, got {!r}'.format(', '.join(EMA_BN_MODES), cfg.ema_bn))
        self.shown_ema = None                 # (cur_nimg, G_ema as pictures show it) with ema_bn='recompute'.
        if cfg.resume_mode not in ('auto', 'networks'):
            raise ValueError("resume_mode must be 'auto' or 'networks', got {!r}".format(cfg.resume_mode))
        self.distributed = (cfg.num_gpus > 1 and torch.distributed.is_available()
                            and torch.distributed.is_initialized())
        if cfg.num_gpus > 1 and not self.distributed:
            raise RuntimeError('num_gpus={} needs torch.distributed initialised in every process '
                               '(train.py does this)'.format(cfg.num_gpus))
        device = cfg.device
        if device is None:
            device = torch.device('cuda', cfg.rank) if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        self.on_cuda = self.device.type == 'cuda'
        self.lead = cfg.rank == 0
        self.batch_per_rank = per_rank
        self.rounds = per_rank // cfg.batch_gpu
        self.uses_augment_pipe = cfg.augment_kwargs is not None and (cfg.augment_p > 0 or cfg.ada_target is not None)
        self.training_set = self.batches = None
        self.phases = []
        self.grid = None                      # (grid_size, latents, labels) on rank 0 when grids are on.
        self.collector = self.jsonl = self.tfevents = None
        self.metric_values = {}
        self.tick_started = self.started
        self.maintenance_sec = 0.0
        self.signals = run_guard.StopSignals(announce=self.lead)
        self.stopper = self.guard = None
        self.last_snapshot = None             # The newest complete snapshot (or the resume source).
        self.snapshot_nimg = None             # cur_nimg when this run last wrote a snapshot.
        self.grid_nimg = None                 # cur_nimg of this run's last fakes grid.
        self.progress = progress_meter.Progress(cfg.total_kimg, cfg.progress_sec, say=self.say)

    def say(self, *lines):
        """Print on rank 0 only (the other ranks stay silent)."""
        if self.lead:
            for line in lines:
                print(line)

    def rng_devices(self):
        """What torch.random.fork_rng must save besides the CPU stream."""
        return [self.device] if self.on_cuda else []


def _pending_moments(collector, name):
    """Moments of `name` synced but not yet consumed by `collector` (kept for tests and
    tools; the checkpoint reads Collector.backlog directly)."""
    return collector.backlog(name)


def _restore_pending_moments(collector, name, pending):
    """Make `collector`'s next update also count `pending` (see _pending_moments)."""
    collector.restore_backlog(name, pending)


# Setting up.

def _set_up(run):
    """Build the run. Everything before the per-rank seeding at the end draws from the
    global streams seeded with random_seed, so the order of these steps is part of the
    numerics (and the same on every rank)."""
    cfg = run.cfg
    _configure_torch(cfg)
    if run.lead:
        os.makedirs(cfg.run_dir, exist_ok=True)
        _remove_leftovers(run)
    options = ckpt_io.trajectory_options(dict(cfg, has_augment_pipe=run.uses_augment_pipe))
    state = ckpt_io.TrainingState(options, cfg.random_seed, run.batch_per_rank)
    resume, ckpt = _open_resume(run, state)
    _open_dataset(run, ckpt)
    _build_networks(run, state, resume, ckpt)
    _print_summaries(run, state)
    _build_augmentation(run, state)
    _build_phases(run, state, _distribute(run, state))
    run.stopper = run_guard.StopAgreement(run.distributed)
    run.guard = run_guard.DivergenceGuard([phase.name for phase in run.phases], run.device, say=run.say)
    state.latent_gen = torch.Generator()
    state.latent_gen.manual_seed(cfg.random_seed)
    if run.lead and cfg.image_snapshot_ticks is not None:
        _export_start_grids(run, state)
    _open_logs(run)
    if ckpt is not None:
        ckpt_io.restore_training_state(state, ckpt, cfg.rank)
    resumed_at = ' (from kimg {:.1f}, tick {})'.format(state.cur_nimg / 1000, state.cur_tick) if ckpt else ''
    run.say('', 'Training for {} kimg{}...'.format(cfg.total_kimg, resumed_at), '')
    if cfg.progress_fn is not None:
        cfg.progress_fn(state.cur_nimg // 1000, cfg.total_kimg)
    _start_rank_streams(run, ckpt)
    run.tick_started = time.time()
    run.maintenance_sec = run.tick_started - run.started
    return state


def _remove_leftovers(run):
    """Temporary files of writers that were killed (in this outdir's run folders and the
    folders the resume comes from): a kill mid-write leaves nothing else behind."""
    cfg = run.cfg
    resume = cfg.resume_pkl if isinstance(cfg.resume_pkl, str) else None
    removed = ckpt_io.remove_stale_temporaries(ckpt_io.run_folder_family(cfg.run_dir, resume))
    if removed:
        run.say('Removed {} temporary file(s) left by killed runs: {}'.format(len(removed), ', '.join(removed)))


def _configure_torch(cfg):
    """Gradient-fix ops on, backend flags as asked, and the global streams seeded with
    random_seed alone so that initial weights are the same on every rank."""
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    backends = torch.backends
    backends.cudnn.benchmark = cfg.cudnn_benchmark
    backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = cfg.allow_tf32
    np.random.seed(cfg.random_seed)
    torch.manual_seed(cfg.random_seed)


def _open_resume(run, state):
    """(where, checkpoint) for resume_pkl: where=None for a fresh run, checkpoint=None unless
    the resume is exact. A checkpoint is checked against this run before anything is built."""
    cfg = run.cfg
    if not cfg.resume_pkl:
        return None, None
    where = ckpt_io.resolve_resume(cfg.resume_pkl, mode=cfg.resume_mode)
    run.last_snapshot = where.ckpt or where.pkl
    if not where.exact:
        return where, None
    ckpt = ckpt_io.load_checkpoint(where.ckpt)
    writers = len(ckpt['ranks'])
    if writers != cfg.num_gpus:
        raise ValueError('{} was written by {} process(es); resume it with num_gpus={}'.format(
            where.ckpt, writers, writers))
    ckpt_io.check_options(ckpt, state.options, where.ckpt)
    return where, ckpt


class _SkipAhead(torch.utils.data.Sampler):
    """A seeded sampler replayed past the indices an earlier session already used, so the
    data order goes on exactly where that session stopped."""

    def __init__(self, base, skip):
        super().__init__()
        self.base = base
        self.skip = int(skip)

    def __iter__(self):
        return itertools.islice(iter(self.base), self.skip, None)


def usable_cores():
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _open_dataset(run, ckpt):
    cfg = run.cfg
    run.say('Loading training set...')
    data = dnnlib.util.construct_class_by_name(**cfg.training_set_kwargs)
    order = misc.InfiniteSampler(dataset=data, rank=cfg.rank, num_replicas=cfg.num_gpus, seed=cfg.random_seed)
    skip = ckpt_io.images_consumed(ckpt)
    if skip:
        order = _SkipAhead(order, skip)
    loader_kwargs = dict(cfg.data_loader_kwargs)
    # Upstream's 3 workers on a 2-core machine only add a process fighting for a core (and torch warns);
    # batches and their order do not depend on the worker count.
    loader_kwargs['num_workers'] = min(loader_kwargs.get('num_workers', 0), usable_cores())
    loader = torch.utils.data.DataLoader(dataset=data, sampler=order, batch_size=run.batch_per_rank,
                                         **loader_kwargs)
    run.training_set = data
    run.batches = iter(loader)   # Creating the iterator draws its base seed from the global torch stream.
    run.say('', 'Num images:  {}'.format(len(data)), 'Image shape: {}'.format(data.image_shape),
            'Label shape: {}'.format(data.label_shape), '')


def _build_networks(run, state, resume, ckpt):
    """G and D from their kwargs (G_ema a copy of G), then the weights a resume asks for."""
    cfg, data = run.cfg, run.training_set
    run.say('Constructing networks...')
    dims = dict(c_dim=data.label_dim, img_resolution=data.resolution, img_channels=data.num_channels)
    for key, kwargs in (('G', cfg.G_kwargs), ('D', cfg.D_kwargs)):
        net = dnnlib.util.construct_class_by_name(**kwargs, **dims)
        setattr(state, key, net.train().requires_grad_(False).to(run.device))
    state.G_ema = copy.deepcopy(state.G).eval()
    if cfg.ema_bn != 'copy':
        _check_ema_bn(cfg.ema_bn, state.G_ema)
    if cfg.ema_bn == 'batch':
        state.G_ema = state.G_ema.with_eval_bn('batch')   # Before any resume: tensors load into it.
    if resume is not None and not resume.exact:
        _resume_networks_only(run, state, resume)
    if ckpt is not None:
        progress = ckpt['progress']
        run.say('Resuming exactly from "{}" (kimg {:.1f}, tick {})'.format(
            resume.ckpt, progress['cur_nimg'] / 1000, progress['cur_tick']))
        ckpt_io.restore_networks(state, ckpt)


def _resume_networks_only(run, state, resume):
    """Upstream's resume: the weights only, training starts over at kimg 0 with fresh
    optimisers, augment p and random streams. From the checkpoint when there is one (read
    without unpickling), else from the pickle (which runs the code it carries)."""
    run.say('Resuming networks only from "{}": kimg 0, fresh optimisers, augment p and random streams '
            '(--resume-mode=networks, or a pickle without checkpoint)'.format(resume.ckpt or resume.pkl))
    if resume.ckpt is not None:
        ckpt_io.copy_network_weights(state, ckpt_io.load_checkpoint(resume.ckpt))
        return
    import legacy   # Only a networks-only resume from a bare pickle or URL unpickles.
    with dnnlib.util.open_url(resume.pkl) as f:
        saved = legacy.load_network_pkl(f)
    for key in ('G', 'D', 'G_ema'):
        misc.copy_params_and_buffers(saved[key], getattr(state, key), require_all=False)


def _print_summaries(run, state):
    """Layer tables of G and D (rank 0). They run real forwards, so buffers such as w_avg
    are put back afterwards."""
    if not run.lead:
        return
    G, D = state.G, state.D
    kept = [copy.deepcopy(net.state_dict()) for net in (G, D)]
    z = torch.zeros([run.cfg.batch_gpu, G.z_dim], device=run.device)
    c = torch.zeros([run.cfg.batch_gpu, G.c_dim], device=run.device)
    with torch.no_grad():
        img = misc.print_module_summary(G, [z, c])
        misc.print_module_summary(D, [img, c])
    for net, saved in zip((G, D), kept):
        net.load_state_dict(saved)


def _build_augmentation(run, state):
    """The augment pipe at augment_p and, with ADA, the collector p is steered by."""
    cfg = run.cfg
    if not run.uses_augment_pipe:
        return
    run.say('Setting up augmentation...')
    pipe = dnnlib.util.construct_class_by_name(**cfg.augment_kwargs)
    state.augment_pipe = pipe.train().requires_grad_(False).to(run.device)
    state.augment_pipe.p.copy_(torch.as_tensor(cfg.augment_p))
    if cfg.ada_target is not None:
        state.ada_stats = training_stats.Collector(regex=ckpt_io.ADA_STAT)


def _distribute(run, state):
    """The modules the loss drives, keyed as its constructor names them. With several
    processes, every rank first takes rank 0's tensors and the trainable ones are wrapped
    in DistributedDataParallel, which averages their gradients."""
    driven = dict(G_mapping=state.G.mapping, G_synthesis=state.G.synthesis, D=state.D,
                  augment_pipe=state.augment_pipe)
    if not run.distributed:
        return driven
    run.say('Distributing across {} processes...'.format(run.cfg.num_gpus))
    for net in (state.G, state.D, state.G_ema, state.augment_pipe):
        for tensor in ([] if net is None else misc.params_and_buffers(net)):
            torch.distributed.broadcast(tensor, src=0)
    for key, net in list(driven.items()):
        if net is None or next(iter(net.parameters()), None) is None:
            continue
        net.requires_grad_(True)
        driven[key] = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[run.device] if run.on_cuda else None, broadcast_buffers=False)
        net.requires_grad_(False)
    return driven


def _lazy_regularised(opt_kwargs, interval):
    """Optimiser kwargs for a network whose regulariser runs every `interval` minibatches.
    It then takes interval+1 steps where plain training takes interval, so lr and the
    Adam betas are raised to that ratio to keep the main steps' effective rate and horizon."""
    ratio = interval / (interval + 1)
    scaled = dnnlib.EasyDict(copy.deepcopy(opt_kwargs))
    scaled.lr = scaled.lr * ratio
    if 'betas' in scaled:
        scaled.betas = [beta ** ratio for beta in scaled.betas]
    return scaled


def _build_phases(run, state, driven):
    """The loss, one optimiser per network, and the phase list in its fixed order:
    G's phases, then D's; each network has a main and a reg phase, or one 'both' phase."""
    cfg = run.cfg
    run.say('Setting up training phases...')
    state.loss = dnnlib.util.construct_class_by_name(device=run.device, **driven, **cfg.loss_kwargs)
    timed = run.lead and run.on_cuda
    plan = (('G', state.G, cfg.G_opt_kwargs, cfg.G_reg_interval), ('D', state.D, cfg.D_opt_kwargs, cfg.D_reg_interval))
    if getattr(state.loss, 'D_first', False):   # e.g. fake reuse: G's phase consumes the D phase's fakes
        plan = plan[::-1]
    for key, net, opt_kwargs, interval in plan:
        if interval is None:
            schedule = [(key + 'both', 1)]
        else:
            opt_kwargs = _lazy_regularised(opt_kwargs, interval)
            schedule = [(key + 'main', 1), (key + 'reg', interval)]
        opt = dnnlib.util.construct_class_by_name(net.parameters(), **opt_kwargs)
        state.optimizers[key] = opt
        # With num_D_steps = n, G's phases come after D's n-th, 2n-th, ... step (D, D, .., D, G).
        n = cfg.num_D_steps if key == 'G' else 1
        run.phases += [_Phase(name, net, opt, every * n, timed, start=n if n > 1 else 0, gain=every)
                       for name, every in schedule]


def _export_start_grids(run, state):
    """reals.png, the fixed grid latents (their own stream) and fakes_init.png."""
    cfg = run.cfg
    run.say('Exporting sample images...')
    size, images, labels = setup_snapshot_image_grid(run.training_set, random_seed=cfg.random_seed,
                                                     max_cells=cfg.grid_max_cells)
    save_image_grid(images, os.path.join(cfg.run_dir, 'reals.png'), drange=[0, 255], grid_size=size)
    stream = torch.Generator()
    stream.manual_seed(cfg.random_seed)
    z = torch.randn([labels.shape[0], state.G.z_dim], generator=stream).to(run.device).split(cfg.batch_gpu)
    c = torch.from_numpy(labels).to(run.device).split(cfg.batch_gpu)
    run.grid = (size, z, c)
    save_image_grid(_grid_fakes(run, _shown_ema(run, state)), os.path.join(cfg.run_dir, 'fakes_init.png'),
                    drange=[-1, 1], grid_size=size)


def _open_logs(run):
    """The per-tick collector of every statistic, stats.jsonl and (when installed) TensorBoard."""
    run.say('Initializing logs...')
    run.collector = training_stats.Collector(regex='.*')
    if not run.lead:
        return
    run.jsonl = open(os.path.join(run.cfg.run_dir, 'stats.jsonl'), 'at')
    try:
        from torch.utils import tensorboard
        run.tfevents = tensorboard.SummaryWriter(run.cfg.run_dir)
    except Exception:   # TensorBoard is optional; any failure to start it only loses the events.
        run.tfevents = None


def _start_rank_streams(run, ckpt):
    """The per-rank streams that noise inputs, style mixing, augmentation and the path-length
    penalty draw from: seeded per rank, or as the checkpoint left them."""
    cfg = run.cfg
    if ckpt is not None:
        ckpt_io.restore_rank_streams(ckpt, cfg.rank, run.device)
        return
    seed = cfg.random_seed * cfg.num_gpus + cfg.rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# One minibatch.

def _train_minibatch(run, state):
    """One minibatch: its due phases, then G_ema and ADA, then the tick's maintenance when
    the tick is over. Returns True when training has ended."""
    cfg = run.cfg
    reals, latents = _draw_minibatch(run, state)
    for phase, (gen_z, gen_c) in zip(run.phases, latents):
        if phase.due(state.batch_idx):
            _run_phase(run, state, phase, reals, gen_z, gen_c)
    _update_ema(run, state)
    state.cur_nimg += cfg.batch_size
    state.batch_idx += 1
    _adapt_augment(run, state)
    done = state.cur_nimg >= cfg.total_kimg * 1000
    stop = not done and run.stopper.poll(run.signals.signum is not None)
    tick_over = state.cur_tick == 0 or state.cur_nimg >= state.tick_start_nimg + cfg.kimg_per_tick * 1000
    if not (done or tick_over or stop):
        run.progress.after_minibatch(state.cur_nimg, state.tick_start_nimg + cfg.kimg_per_tick * 1000)
        return False
    finished = _end_tick(run, state, done) if (done or tick_over) else False
    if stop and not finished:
        _write_stop_snapshot(run, state)
        raise run_guard.TrainingInterrupted(_stop_message(run, state), run.signals.signum)
    return finished


def _write_stop_snapshot(run, state):
    """The snapshot unit where the ranks agreed to stop, mid-tick: the tick keeps its number
    and start, so a resumed run ends it where an unstopped run would. No grid, metrics or
    statistics line (a stop must be quick), but the divergence check comes first. Snapshot
    names never collide (checkpoint.snapshot_stem), so the stop is saved even within the kimg
    of the previous snapshot; only a snapshot of this very image count is not written twice."""
    _check_divergence(run, state, _collect_stats(run))
    if run.snapshot_nimg != state.cur_nimg:
        _write_snapshot(run, state)


def _stop_message(run, state):
    outdir = os.path.dirname(os.path.abspath(run.cfg.run_dir))
    if run.snapshot_nimg == state.cur_nimg:
        saved = 'snapshot and checkpoint written: {}'.format(ckpt_io.ckpt_path_for(run.last_snapshot))
    else:
        saved = 'the snapshot of the same kimg, {} images back, is kept: {}'.format(
            state.cur_nimg - run.snapshot_nimg, ckpt_io.ckpt_path_for(run.last_snapshot))
    return 'Stopped by {} at kimg {:.3f}; {}\nTo continue, run the same command with --resume={} ' \
           '(its newest complete snapshot).'.format(
               run_guard.signal_name(run.signals.signum) if run.signals.signum else 'a stop request of another rank',
               state.cur_nimg / 1000, saved, outdir)


def _draw_minibatch(run, state):
    """This rank's reals as (image, label) per accumulation round, and for every phase (due
    or not, so the shared stream never depends on the schedule) this rank's rows of the
    latents and labels drawn for the whole batch."""
    cfg = run.cfg
    with torch.autograd.profiler.record_function('draw_minibatch'):
        images, labels = next(run.batches)
        images = (images.to(run.device).to(torch.float32) / 127.5 - 1).split(cfg.batch_gpu)
        reals = list(zip(images, labels.to(run.device).split(cfg.batch_gpu)))
        count = len(run.phases) * cfg.batch_size
        z = torch.randn([count, state.G.z_dim], generator=state.latent_gen)
        picks = torch.randint(len(run.training_set), [count], generator=state.latent_gen)
        c = torch.from_numpy(np.stack([run.training_set.get_label(int(i)) for i in picks]).astype(np.float32))

        def share(rows):
            return rows[cfg.rank::cfg.num_gpus].to(run.device).split(cfg.batch_gpu)

        latents = [(share(zz), share(cc)) for zz, cc in zip(z.split(cfg.batch_size), c.split(cfg.batch_size))]
    return reals, latents


def _run_phase(run, state, phase, reals, gen_z, gen_c):
    """Accumulate the phase's gradients over the rounds (DDP syncs in the last one), zero
    any NaN/inf in them and take one optimiser step."""
    if phase.events is not None:
        phase.events[0].record(torch.cuda.current_stream(run.device))
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    last = run.rounds - 1
    for step, ((real_img, real_c), z, c) in enumerate(zip(reals, gen_z, gen_c)):
        state.loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=z, gen_c=c,
                                        sync=step == last, gain=phase.gain)
    phase.module.requires_grad_(False)
    with torch.autograd.profiler.record_function(phase.name + '_step'):
        grads = [param.grad for param in phase.module.parameters() if param.grad is not None]
        run.guard.note_gradients(phase.name, grads)
        _scrub_gradients(grads)
        phase.opt.step()
    if phase.events is not None:
        phase.events[1].record(torch.cuda.current_stream(run.device))


def _scrub_gradients(grads):
    """One bad sample must not poison the weights: NaN gradients become 0, infinities +-1e5
    (the divergence guard has counted them first)."""
    for grad in grads:
        misc.nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5, out=grad)


def _update_ema(run, state):
    """G_ema's parameters move towards G's with a half-life of ema_kimg thousand images
    (shorter early on with a ramp-up); its buffers are G's."""
    cfg = run.cfg
    horizon = cfg.ema_kimg * 1000
    if cfg.ema_rampup is not None:
        horizon = min(horizon, state.cur_nimg * cfg.ema_rampup)
    beta = 0.5 ** (cfg.batch_size / max(horizon, 1e-8)) if state.cur_nimg >= cfg.ema_start_kimg * 1000 else 0
    with torch.no_grad(), torch.autograd.profiler.record_function('ema_update'):
        for avg, live in zip(state.G_ema.parameters(), state.G.parameters()):
            avg.copy_(live.lerp(avg, beta))
        for avg, live in zip(state.G_ema.buffers(), state.G.buffers()):
            avg.copy_(live)


def _adapt_augment(run, state):
    """ADA: every ada_interval minibatches, one step of p up when E[sign(D(real))] is above
    the target (D grows confident on reals: overfitting), down when below; never below 0."""
    cfg = run.cfg
    if state.ada_stats is None or state.batch_idx % cfg.ada_interval != 0:
        return
    state.ada_stats.update()
    signs = state.ada_stats.mean(ckpt_io.ADA_STAT)
    if not np.isfinite(signs):
        return
    step = (cfg.batch_size * cfg.ada_interval) / (cfg.ada_kimg * 1000)
    p = state.augment_pipe.p
    p.copy_((p + np.sign(signs - cfg.ada_target) * step).clamp(min=0))


# Tick maintenance.

def _due(every, tick, done):
    return every is not None and (done or tick % every == 0)


def _end_tick(run, state, done):
    """Maintenance at a tick boundary, in a fixed order: status line, abort check, the tick's
    statistics and the divergence check, image grid, the snapshot unit (holding the state
    after the tick) and its metrics, the statistics line. Returns True when training has ended."""
    cfg = run.cfg
    tick_end = time.time()
    _print_status(run, state, tick_end)
    if not done and cfg.abort_fn is not None and cfg.abort_fn():
        done = True
        run.say('', 'Aborting...')
    table = _collect_stats(run)
    _check_divergence(run, state, table)
    if run.grid is not None and _due(cfg.image_snapshot_ticks, state.cur_tick, done):
        path = os.path.join(cfg.run_dir, 'fakes{}.png'.format(ckpt_io.snapshot_stem(state.cur_nimg, run.grid_nimg)))
        save_image_grid(_grid_fakes(run, _shown_ema(run, state)), path, drange=[-1, 1], grid_size=run.grid[0])
        run.grid_nimg = state.cur_nimg
    snapshot_due = _due(cfg.network_snapshot_ticks, state.cur_tick, done)
    state.cur_tick += 1
    state.tick_start_nimg = state.cur_nimg
    if snapshot_due:
        snapshot_pkl, frozen = _write_snapshot(run, state)
        if len(cfg.metrics) > 0:
            _evaluate_metrics(run, snapshot_pkl, frozen)
        del frozen
    _write_stats(run, state, table)
    run.tick_started = time.time()
    run.maintenance_sec = run.tick_started - tick_end
    run.progress.after_minibatch(state.cur_nimg)
    return done


def _check_divergence(run, state, table):
    """Stop with TrainingDiverged when this tick's losses, gradients or weights went non-finite:
    the tick's statistics line is written (non-finite values as null), nothing else."""
    problems = run.guard.problems(table, dict(G=state.G, D=state.D, G_ema=state.G_ema))
    if not problems:
        return
    _write_stats(run, state, table)
    last = run.last_snapshot or 'none (this run has not written one)'
    raise run_guard.TrainingDiverged(
        'Training diverged at kimg {:.3f} (tick {}):\n  {}\nNothing of this tick was saved. The last good '
        'snapshot is {}.\nStart again from it with --resume=<it> (the same options), or change what diverged '
        '(e.g. a lower learning rate) and add --resume-mode=networks.'.format(
            state.cur_nimg / 1000, state.cur_tick, '\n  '.join(problems), last))


def _resident_gb():
    """This process's resident memory in GiB (peak RSS where /proc is missing)."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE') / 2**30
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _print_status(run, state, tick_end):
    """The status line; each column is also reported as a statistic."""
    tick_sec = tick_end - run.tick_started
    total_sec = state.elapsed_before + (tick_end - run.started)
    shown = state.cur_nimg - state.tick_start_nimg
    pipe = state.augment_pipe
    columns = [
        ('tick', 'Progress/tick', state.cur_tick, '{:<5d}'.format),
        ('kimg', 'Progress/kimg', state.cur_nimg / 1e3, '{:<8.1f}'.format),
        ('time', 'Timing/total_sec', total_sec, lambda sec: '{:<12s}'.format(dnnlib.util.format_time(sec))),
        ('sec/tick', 'Timing/sec_per_tick', tick_sec, '{:<7.1f}'.format),
        ('sec/kimg', 'Timing/sec_per_kimg', tick_sec / max(shown, 1) * 1e3, '{:<7.2f}'.format),
        ('maintenance', 'Timing/maintenance_sec', run.maintenance_sec, '{:<6.1f}'.format),
        ('cpumem', 'Resources/cpu_mem_gb', _resident_gb(), '{:<6.2f}'.format),
    ]
    if run.on_cuda:
        peak = torch.cuda.max_memory_allocated(run.device) / 2**30
        torch.cuda.reset_peak_memory_stats(run.device)
        columns.append(('gpumem', 'Resources/peak_gpu_mem_gb', peak, '{:<6.2f}'.format))
    columns.append(('augment', 'Progress/augment', float(pipe.p.cpu()) if pipe is not None else 0, '{:.3f}'.format))
    text = ' '.join(label + ' ' + fmt(training_stats.report0(stat, value)) for label, stat, value, fmt in columns)
    training_stats.report0('Timing/total_hours', total_sec / (60 * 60))
    training_stats.report0('Timing/total_days', total_sec / (24 * 60 * 60))
    text += ' eta ' + run.progress.eta_text(state.cur_nimg, tick_sec / max(shown, 1))   # Not a statistic: clock only.
    if run.lead:
        print(text, flush=True)


def _check_ema_bn(mode, G_ema):
    """ema_bn other than 'copy' needs a G that can re-estimate or skip its batch-norm statistics."""
    needs = dict(recompute='recompute_bn_stats', batch='with_eval_bn')[mode]
    if not callable(getattr(G_ema, needs, None)):
        raise ValueError("ema_bn='{}' needs a generator with {}(); {} has none (no batch norm?): use "
                         "ema_bn='copy'".format(mode, needs, type(G_ema).__name__))


def _shown_ema(run, state):
    """G_ema as grids, snapshots and metrics see it. With ema_bn='recompute', a copy whose
    batch-norm running statistics are its own (G.recompute_bn_stats: seeded, random streams
    untouched), made once per image count; otherwise G_ema itself."""
    if run.cfg.ema_bn != 'recompute':
        return state.G_ema
    if run.shown_ema is None or run.shown_ema[0] != state.cur_nimg:
        run.shown_ema = None   # Free the previous copy first.
        shown = copy.deepcopy(state.G_ema)
        shown.recompute_bn_stats(c=_label_sample(run.training_set, state.G_ema.c_dim, run.device))
        run.shown_ema = (state.cur_nimg, shown)
    return run.shown_ema[1]


def _label_sample(data, c_dim, device, num=1024):
    """Labels of up to `num` evenly spaced training images [M, c_dim], the classes that
    recompute_bn_stats draws from (None for an unconditional G)."""
    if c_dim == 0:
        return None
    picks = np.linspace(0, len(data) - 1, num=min(num, len(data))).astype(np.int64)
    return torch.from_numpy(np.stack([data.get_label(int(i)) for i in picks])).to(device)


def _grid_fakes(run, G_ema):
    """G_ema's pictures of the grid latents with constant noise, leaving every random stream
    as it was. On the CPU, per-sample modulation (fused_modconv=False) gives the same
    images about twice as fast."""
    _size, zs, cs = run.grid
    extra = dict(fused_modconv=False) if run.device.type == 'cpu' else {}
    with torch.random.fork_rng(devices=run.rng_devices()), torch.no_grad():
        pictures = [G_ema(z=z, c=c, noise_mode='const', **extra).cpu() for z, c in zip(zs, cs)]
    return torch.cat(pictures).numpy()


def _write_snapshot(run, state):
    """The snapshot as one unit: network-snapshot-<kimg>.pkl in upstream's layout (eval-mode
    CPU copies of the networks; every rank makes them, for the metrics), its weights-only model
    file, then the checkpoint of the state after the tick, renamed into place last: its
    presence marks the unit complete. Returns (pkl path, contents)."""
    cfg = run.cfg
    frozen = dict(training_set_kwargs=dict(cfg.training_set_kwargs))
    for key in ('G', 'D', 'G_ema', 'augment_pipe'):
        net = _shown_ema(run, state) if key == 'G_ema' else getattr(state, key)
        if net is not None:
            if run.distributed:
                misc.check_ddp_consistency(net, ignore_regex=r'.*\.w_avg')
            net = copy.deepcopy(net).eval().requires_grad_(False).cpu()
        frozen[key] = net
    ranks = ckpt_io.gather_rank_states(state, run.device, cfg.num_gpus)   # A collective call.
    path = os.path.join(cfg.run_dir, ckpt_io.snapshot_pkl_name(state.cur_nimg, run.snapshot_nimg))
    if run.lead:
        _write_atomically(path, lambda f: pickle.dump(frozen, f))
        _write_model_file(run, path, frozen)
        elapsed = state.elapsed_before + (time.time() - run.started)
        ckpt_io.save_checkpoint(ckpt_io.training_state_dict(state, ranks, elapsed), ckpt_io.ckpt_path_for(path))
    run.last_snapshot, run.snapshot_nimg = path, state.cur_nimg
    return path, frozen


def _write_atomically(path, write):
    """`write(file)` into a temporary beside `path`, then renamed over it: readers see the old
    file or the whole new one, never a part."""
    partial = ckpt_io.temporary_path(path)
    try:
        with open(partial, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _write_model_file(run, pkl_path, frozen):
    """The weights-only model file beside the pickle (training/model_file.py). Networks whose
    construction options it cannot store get none, with a warning: training goes on."""
    from training import model_file
    try:
        model_file.save_model_file(model_file.model_path_for(pkl_path), frozen)
    except model_file.ModelFileError as err:
        run.say('Warning: no weights-only model file for {}: {}'.format(os.path.basename(pkl_path), err))


def _evaluate_metrics(run, snapshot_pkl, frozen):
    """Every requested metric on the snapshot's G_ema, outside the training random streams
    (torch's, numpy's and python's are all put back)."""
    cfg = run.cfg
    run.say('Evaluating metrics...')
    from metrics import metric_main   # Only runs that ask for metrics need it (and its detectors).
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=run.rng_devices()):
            for metric in cfg.metrics:
                result = metric_main.calc_metric(metric=metric, G=frozen['G_ema'],
                                                 dataset_kwargs=cfg.training_set_kwargs, num_gpus=cfg.num_gpus,
                                                 rank=cfg.rank, device=run.device)
                if run.lead:
                    metric_main.report_metric(result, run_dir=cfg.run_dir, snapshot_pkl=snapshot_pkl)
                run.metric_values.update(result.results)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _collect_stats(run):
    """Phase timings, then the tick's {name: {num, mean, std}} over all ranks."""
    for phase in run.phases:
        elapsed_ms = []
        if phase.events is not None:
            phase.events[1].synchronize()
            elapsed_ms = phase.events[0].elapsed_time(phase.events[1])
        training_stats.report0('Timing/' + phase.name, elapsed_ms)
    run.collector.update()
    return run.collector.as_dict()


def _write_stats(run, state, table):
    """One line of stats.jsonl (strict JSON: non-finite values as null) and TensorBoard scalars."""
    cfg = run.cfg
    now = time.time()
    if run.jsonl is not None:
        line = json.dumps(training_stats.strict_json_value(dict(table, timestamp=now)), allow_nan=False)
        run.jsonl.write(line + '\n')
        run.jsonl.flush()
    if run.tfevents is not None:
        step, walltime = int(state.cur_nimg / 1e3), now - run.started
        for name, value in table.items():
            run.tfevents.add_scalar(name, value.mean, global_step=step, walltime=walltime)
        for name, value in run.metric_values.items():
            run.tfevents.add_scalar('Metrics/' + name, value, global_step=step, walltime=walltime)
        run.tfevents.flush()
    if cfg.progress_fn is not None:
        cfg.progress_fn(state.cur_nimg // 1000, cfg.total_kimg)


def _close(run):
    """Close the logs and the ranks' stop channel (also when training raised)."""
    if run.stopper is not None:
        try:
            run.stopper.close()
        except RuntimeError:   # A rank is gone; the error that ended the run speaks for itself.
            pass
    if run.jsonl is not None:
        run.jsonl.close()
        run.jsonl = None
    if run.tfevents is not None:
        run.tfevents.close()
        run.tfevents = None


# Picture helpers.

def setup_snapshot_image_grid(training_set, random_seed=0, max_width=7680, max_height=4320, max_cells=32):
    """Pick the reals shown in `reals.png`: as many cells as fit in a max_width x
    max_height picture (at least 7 x 4 unless max_cells is smaller, at most max_cells per side). With labels,
    each row holds one class (classes cycle down the rows). Returns
    ((grid_w, grid_h), images uint8 NCHW, labels)."""
    rnd = np.random.RandomState(random_seed)
    res_h, res_w = training_set.image_shape[1], training_set.image_shape[2]
    grid_w = int(np.clip(max_width // res_w, min(7, max_cells), max_cells))
    grid_h = int(np.clip(max_height // res_h, min(4, max_cells), max_cells))
    num = len(training_set)

    if not training_set.has_labels:
        order = rnd.permutation(num)
        indices = [int(order[i % num]) for i in range(grid_w * grid_h)]
    else:
        groups = {}
        for idx in range(num):
            key = tuple(np.asarray(training_set.get_label(idx)).flatten().tolist())
            groups.setdefault(key, []).append(idx)
        keys = sorted(groups)
        for key in keys:
            rnd.shuffle(groups[key])
        next_pos = {key: 0 for key in keys}   # Each row of a class continues where the last one stopped.
        indices = []
        for row in range(grid_h):
            key = keys[row % len(keys)]
            members = groups[key]
            indices += [members[(next_pos[key] + col) % len(members)] for col in range(grid_w)]
            next_pos[key] = (next_pos[key] + grid_w) % len(members)

    items = [training_set[i] for i in indices]
    images = np.stack([img for img, _label in items])
    labels = np.stack([label for _img, label in items])
    return (grid_w, grid_h), images, labels


def save_image_grid(img, fname, drange, grid_size):
    """Tile NCHW images (values in `drange`) row by row into one PNG of grid_size=(w, h) cells."""
    lo, hi = float(drange[0]), float(drange[1])
    img = np.asarray(img, dtype=np.float32)
    img = np.rint((img - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)
    grid_w, grid_h = grid_size
    n, c, h, w = img.shape
    if n != grid_w * grid_h:
        raise ValueError('save_image_grid: {} images do not fill a {}x{} grid'.format(n, grid_w, grid_h))
    # [row, col, C, H, W] -> [row, H, col, W, C] -> one picture.
    tiled = img.reshape(grid_h, grid_w, c, h, w).transpose(0, 3, 1, 4, 2).reshape(grid_h * h, grid_w * w, c)
    if c not in (1, 3):
        raise ValueError('save_image_grid: cannot save {} channels'.format(c))
    picture = PIL.Image.fromarray(tiled[:, :, 0], 'L') if c == 1 else PIL.Image.fromarray(tiled, 'RGB')
    kind = PIL.Image.registered_extensions().get(os.path.splitext(fname)[1].lower(), 'PNG')
    _write_atomically(fname, lambda f: picture.save(f, format=kind))
