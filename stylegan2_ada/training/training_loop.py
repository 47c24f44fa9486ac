"""The main training loop: one implementation for every method (CONTRACT.md,
"Training loop"); what is trained is named by class names and kwargs.

Differences from upstream, all additive:
- `device` (None = cuda:rank when CUDA is available, else the CPU);
- exact resume (training/checkpoint.py): `resume_pkl` may be a snapshot .pkl
  (networks only; exact when its .ckpt.pt sits beside it), a .ckpt.pt, or a
  run folder; `resume_mode='networks'` forces upstream's networks-only resume;
- network initialisation depends on `random_seed` only, and latents and
  labels are drawn from one generator shared by all ranks, each rank taking
  every num_gpus-th sample (the same interleaving InfiniteSampler applies
  to real images). So a run on N processes sees the same data, latents and
  initial weights as a one-process run with the same total batch.

Multi-process runs: the caller initialises torch.distributed (gloo on the
CPU, nccl on CUDA) and training_stats.init_multiprocessing(rank, sync_device)
before calling training_loop in every process; only rank 0 writes files.
"""

import copy
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

# Image grids.


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
    if c == 1:
        PIL.Image.fromarray(tiled[:, :, 0], 'L').save(fname)
    elif c == 3:
        PIL.Image.fromarray(tiled, 'RGB').save(fname)
    else:
        raise ValueError('save_image_grid: cannot save {} channels'.format(c))


# Helpers.


class _ResumedSampler(torch.utils.data.Sampler):
    """Iterates a seeded sampler after dropping its first `skip` indices, so data
    order continues exactly where a previous run stopped."""

    def __init__(self, base, skip):
        super().__init__()
        self.base = base
        self.skip = int(skip)

    def __iter__(self):
        it = iter(self.base)
        for _ in range(self.skip):
            next(it)
        yield from it


def _cpu_mem_gb():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**30
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _is_distributed(num_gpus):
    return num_gpus > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def _pending_moments(collector, name):
    """What `collector` has not consumed yet of `name` (count, sum, sum of squares):
    synced totals minus what the collector saw at its last update. Valid right after
    another collector's update() has synced everything pending."""
    total = training_stats._cumulative.get(name)
    if total is None:
        return torch.zeros([3], dtype=torch.float64)
    seen = collector._cumulative.get(name, torch.zeros_like(total))
    return (total - seen).clone()


def _restore_pending_moments(collector, name, pending):
    """Make `collector`'s next update() also count `pending` (see _pending_moments)."""
    total = training_stats._cumulative.get(name)
    if total is None:
        total = torch.zeros([3], dtype=torch.float64)
    collector._cumulative[name] = total.clone() - pending.to(torch.float64)


def _trajectory_options(**kw):
    """The options that decide what training computes; an exact resume requires them equal."""
    keys = ['training_set_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'augment_kwargs',
            'loss_kwargs', 'random_seed', 'num_gpus', 'batch_size', 'batch_gpu', 'ema_kimg', 'ema_rampup',
            'G_reg_interval', 'D_reg_interval', 'ada_target', 'ada_interval', 'ada_kimg', 'has_augment_pipe']
    return {k: kw[k] for k in keys}




def training_loop(
    run_dir='.',                # Output directory.
    training_set_kwargs={},     # Options for the training set.
    data_loader_kwargs={},      # Options for torch.utils.data.DataLoader.
    G_kwargs={},                # Options for the generator.
    D_kwargs={},                # Options for the discriminator.
    G_opt_kwargs={},            # Options for the generator optimiser.
    D_opt_kwargs={},            # Options for the discriminator optimiser.
    augment_kwargs=None,        # Options for the augment pipe (None = no augmentation).
    loss_kwargs={},             # Options for the loss (class_name included).
    metrics=[],                 # Metrics to evaluate at each network snapshot.
    random_seed=0,              # Global random seed.
    num_gpus=1,                 # Number of processes taking part.
    rank=0,                     # Rank of this process in [0, num_gpus).
    batch_size=4,               # Total batch over all processes.
    batch_gpu=4,                # Samples per process per accumulation round.
    ema_kimg=10,                # Half-life of the G_ema average, in kimg.
    ema_rampup=None,            # EMA ramp-up coefficient (None = off).
    G_reg_interval=4,           # Lazy regularisation interval for G (None = Gboth).
    D_reg_interval=16,          # Lazy regularisation interval for D (None = Dboth).
    augment_p=0,                # Initial augmentation probability.
    ada_target=None,            # ADA target for E[sign(D(real))] (None = fixed p).
    ada_interval=4,             # Minibatches between p updates.
    ada_kimg=500,               # kimg for p to move from 0 to 1.
    total_kimg=25000,           # Length of training.
    kimg_per_tick=4,            # Progress snapshot interval.
    image_snapshot_ticks=50,    # Ticks between image grids (None = off).
    grid_max_cells=32,          # Our extension: at most this many cells per side of the image grids.
    network_snapshot_ticks=50,  # Ticks between network snapshots (None = off).
    resume_pkl=None,            # Snapshot .pkl / .ckpt.pt / run folder / URL to resume from.
    cudnn_benchmark=True,       # torch.backends.cudnn.benchmark.
    allow_tf32=False,           # TF32 matmuls and convolutions.
    abort_fn=None,              # Callable: stop training when it returns True.
    progress_fn=None,           # Callable(cur_kimg, total_kimg), called each tick.
    device=None,                # Our extension: torch device (None = cuda:rank or cpu).
    resume_mode='auto',         # Our extension: 'auto' (exact when a checkpoint exists) or 'networks'.
):
    start_time = time.time()
    if device is None:
        device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    device = torch.device(device)
    is_cuda = device.type == 'cuda'
    if not (num_gpus >= 1 and 0 <= rank < num_gpus):
        raise ValueError('need num_gpus >= 1 and 0 <= rank < num_gpus, got {} and {}'.format(num_gpus, rank))
    if batch_size % num_gpus != 0 or (batch_size // num_gpus) % batch_gpu != 0:
        raise ValueError('batch_size ({}) must be a multiple of num_gpus * batch_gpu ({} * {})'.format(
            batch_size, num_gpus, batch_gpu))
    if resume_mode not in ('auto', 'networks'):
        raise ValueError("resume_mode must be 'auto' or 'networks', got {!r}".format(resume_mode))
    distributed = _is_distributed(num_gpus)
    if num_gpus > 1 and not distributed:
        raise RuntimeError('num_gpus={} needs torch.distributed initialised in every process '
                           '(train.py does this)'.format(num_gpus))
    batch_per_rank = batch_size // num_gpus
    num_rounds = batch_per_rank // batch_gpu

    # Initialisation depends on random_seed only (the same on every rank); the per-rank
    # streams used during training are seeded right before the first minibatch.
    np.random.seed(random_seed)
    torch.manual_seed(random_seed)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    if rank == 0:
        os.makedirs(run_dir, exist_ok=True)

    # Resume: what and how.
    resume = ckpt_io.resolve_resume(resume_pkl) if resume_pkl else None
    if resume is not None and resume_mode == 'networks':
        resume = dnnlib.EasyDict(resume, exact=False)
        if resume.pkl is None:
            raise FileNotFoundError('resume_mode="networks" needs the snapshot .pkl beside {}'.format(resume.ckpt))
    ckpt = None
    if resume is not None and resume.exact:
        ckpt = ckpt_io.load_checkpoint(resume.ckpt)
        if len(ckpt['ranks']) != num_gpus:
            raise ValueError('{} was written by {} process(es); resume it with num_gpus={}'.format(
                resume.ckpt, len(ckpt['ranks']), len(ckpt['ranks'])))

    # Training set.
    if rank == 0:
        print('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    base_sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    consumed = int(ckpt['sampler']['consumed_per_rank']) if ckpt is not None else 0
    sampler = _ResumedSampler(base_sampler, consumed) if consumed else base_sampler
    training_set_iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler,
                                                             batch_size=batch_per_rank, **data_loader_kwargs))
    if rank == 0:
        print()
        print('Num images: ', len(training_set))
        print('Image shape:', training_set.image_shape)
        print('Label shape:', training_set.label_shape)
        print()

    # Networks.
    if rank == 0:
        print('Constructing networks...')
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                         img_channels=training_set.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()

    if resume is not None and not resume.exact:
        if rank == 0:
            print('Resuming networks from "{}"'.format(resume.pkl))
        import legacy   # Local import: only needed here.
        with dnnlib.util.open_url(resume.pkl) as f:
            resume_data = legacy.load_network_pkl(f)
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            misc.copy_params_and_buffers(resume_data[name], module, require_all=False)
    if ckpt is not None:
        if rank == 0:
            print('Resuming exactly from "{}" (kimg {:.1f}, tick {})'.format(
                resume.ckpt, ckpt['progress']['cur_nimg'] / 1000, ckpt['progress']['cur_tick']))
        G.load_state_dict(ckpt['G'])
        D.load_state_dict(ckpt['D'])
        G_ema.load_state_dict(ckpt['G_ema'])

    if rank == 0:
        # Summaries run real forwards; keep them from touching buffers (w_avg).
        saved = [copy.deepcopy(m.state_dict()) for m in (G, D)]
        z = torch.zeros([batch_gpu, G.z_dim], device=device)
        c = torch.zeros([batch_gpu, G.c_dim], device=device)
        with torch.no_grad():
            img = misc.print_module_summary(G, [z, c])
            misc.print_module_summary(D, [img, c])
        for m, sd in zip((G, D), saved):
            m.load_state_dict(sd)

    # Augmentation.
    augment_pipe = None
    ada_stats = None
    has_augment_pipe = augment_kwargs is not None and (augment_p > 0 or ada_target is not None)
    if has_augment_pipe:
        if rank == 0:
            print('Setting up augmentation...')
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))
        if ckpt is not None:
            augment_pipe.load_state_dict(ckpt['augment_pipe'])
        if ada_target is not None:
            ada_stats = training_stats.Collector(regex='Loss/signs/real')
            if ckpt is not None and ckpt.get('ada') is not None:
                _restore_pending_moments(ada_stats, 'Loss/signs/real', ckpt['ada']['pending'])

    # Distribute: every rank starts from rank 0's tensors; DDP averages gradients.
    if distributed:
        if rank == 0:
            print('Distributing across {} processes...'.format(num_gpus))
        for module in [G, D, G_ema, augment_pipe]:
            if module is not None:
                for tensor in misc.params_and_buffers(module):
                    torch.distributed.broadcast(tensor, src=0)
    ddp_modules = dict()
    for name, module in [('G_mapping', G.mapping), ('G_synthesis', G.synthesis), ('D', D),
                         ('augment_pipe', augment_pipe)]:
        if distributed and module is not None and len(list(module.parameters())) != 0:
            module.requires_grad_(True)
            module = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device] if is_cuda else None, broadcast_buffers=False)
            module.requires_grad_(False)
        ddp_modules[name] = module

    # Loss and phases.
    if rank == 0:
        print('Setting up training phases...')
    loss = dnnlib.util.construct_class_by_name(device=device, **ddp_modules, **loss_kwargs)
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                                   ('D', D, D_opt_kwargs, D_reg_interval)]:
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, opt_name=name, interval=1)]
        else:
            # Lazy regularisation: scale lr and betas so the main steps behave as if every step ran.
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs = dnnlib.EasyDict(copy.deepcopy(opt_kwargs))
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            if 'betas' in opt_kwargs:
                opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
            opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, opt_name=name, interval=1)]
            phases += [dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, opt_name=name,
                                       interval=reg_interval)]
    optimizers = {phase.opt_name: phase.opt for phase in phases}
    if ckpt is not None:
        for opt_name, opt in optimizers.items():
            opt.load_state_dict(ckpt['opt'][opt_name])
        loss.load_state_dict(ckpt['ranks'][rank]['loss'])
    for phase in phases:
        phase.start_event = phase.end_event = None
        if rank == 0 and is_cuda:
            phase.start_event = torch.cuda.Event(enable_timing=True)
            phase.end_event = torch.cuda.Event(enable_timing=True)

    # Options that must match for an exact resume.
    trajectory_options = _trajectory_options(
        training_set_kwargs=training_set_kwargs, G_kwargs=G_kwargs, D_kwargs=D_kwargs, G_opt_kwargs=G_opt_kwargs,
        D_opt_kwargs=D_opt_kwargs, augment_kwargs=augment_kwargs, loss_kwargs=loss_kwargs,
        random_seed=random_seed, num_gpus=num_gpus, batch_size=batch_size, batch_gpu=batch_gpu,
        ema_kimg=ema_kimg, ema_rampup=ema_rampup, G_reg_interval=G_reg_interval, D_reg_interval=D_reg_interval,
        ada_target=ada_target, ada_interval=ada_interval, ada_kimg=ada_kimg, has_augment_pipe=has_augment_pipe)
    if ckpt is not None:
        ckpt_io.check_options(ckpt, trajectory_options, resume.ckpt)

    # Latents and labels: one stream shared by every rank (see the module docstring).
    latent_gen = torch.Generator()
    latent_gen.manual_seed(random_seed)
    if ckpt is not None:
        latent_gen.set_state(ckpt['latent_rng'])

    # Image grids (their latents come from a separate fixed stream).
    grid_size = grid_z = grid_c = None
    if rank == 0 and image_snapshot_ticks is not None:
        print('Exporting sample images...')
        grid_size, images, labels = setup_snapshot_image_grid(training_set, random_seed=random_seed,
                                                                  max_cells=grid_max_cells)
        save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_gen = torch.Generator()
        grid_gen.manual_seed(random_seed)
        grid_z = torch.randn([labels.shape[0], G.z_dim], generator=grid_gen).to(device).split(batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)
        save_image_grid(_grid_fakes(G_ema, grid_z, grid_c, device), os.path.join(run_dir, 'fakes_init.png'),
                        drange=[-1, 1], grid_size=grid_size)

    # Logs.
    if rank == 0:
        print('Initializing logs...')
    stats_collector = training_stats.Collector(regex='.*')
    stats_metrics = dict()
    stats_jsonl = None
    stats_tfevents = None
    if rank == 0:
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except Exception:   # TensorBoard is optional.
            stats_tfevents = None

    # Progress counters.
    cur_nimg = 0
    cur_tick = 0
    batch_idx = 0
    elapsed_before = 0.0    # Training time of earlier sessions (exact resume).
    if ckpt is not None:
        progress = ckpt['progress']
        cur_nimg = int(progress['cur_nimg'])
        cur_tick = int(progress['cur_tick'])
        batch_idx = int(progress['batch_idx'])
        elapsed_before = float(progress['elapsed_sec'])
    tick_start_nimg = cur_nimg
    if rank == 0:
        print()
        print('Training for {} kimg{}...'.format(total_kimg, ' (from kimg {:.1f}, tick {})'.format(
            cur_nimg / 1000, cur_tick) if ckpt is not None else ''))
        print()
    if progress_fn is not None:
        progress_fn(cur_nimg // 1000, total_kimg)

    # Per-rank random streams (noise inputs, style mixing, augmentation, pl noise).
    if ckpt is not None:
        ckpt_io.restore_rng_state(ckpt['ranks'][rank]['rng'], device)
    else:
        np.random.seed(random_seed * num_gpus + rank)
        torch.manual_seed(random_seed * num_gpus + rank)
        random.seed(random_seed * num_gpus + rank)
    del ckpt

    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    done = False
    while True:

        # Fetch a minibatch.
        with torch.autograd.profiler.record_function('data_fetch'):
            phase_real_img, phase_real_c = next(training_set_iterator)
            phase_real_img = (phase_real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            phase_real_c = phase_real_c.to(device).split(batch_gpu)
            n_all = len(phases) * batch_size
            all_gen_z = torch.randn([n_all, G.z_dim], generator=latent_gen)
            label_idx = torch.randint(len(training_set), [n_all], generator=latent_gen)
            all_gen_c = torch.from_numpy(np.stack([training_set.get_label(int(i)) for i in label_idx])
                                         .astype(np.float32))
            all_gen_z = [z[rank::num_gpus].to(device).split(batch_gpu) for z in all_gen_z.split(batch_size)]
            all_gen_c = [c[rank::num_gpus].to(device).split(batch_gpu) for c in all_gen_c.split(batch_size)]

        # Run the phases due at this minibatch.
        for phase, phase_gen_z, phase_gen_c in zip(phases, all_gen_z, all_gen_c):
            if batch_idx % phase.interval != 0:
                continue
            if phase.start_event is not None:
                phase.start_event.record(torch.cuda.current_stream(device))

            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for round_idx, (real_img, real_c, gen_z, gen_c) in enumerate(
                    zip(phase_real_img, phase_real_c, phase_gen_z, phase_gen_c)):
                sync = (round_idx == num_rounds - 1)
                loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                          gen_c=gen_c, sync=sync, gain=phase.interval)
            phase.module.requires_grad_(False)

            # The sync round's backward has averaged gradients over ranks (DDP); clean and step.
            with torch.autograd.profiler.record_function(phase.name + '_opt'):
                for param in phase.module.parameters():
                    if param.grad is not None:
                        misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
                phase.opt.step()
            if phase.end_event is not None:
                phase.end_event.record(torch.cuda.current_stream(device))

        # G_ema: parameters follow G with a half-life of ema_kimg, buffers are copied.
        with torch.autograd.profiler.record_function('Gema'):
            ema_nimg = ema_kimg * 1000
            if ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            with torch.no_grad():
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(p.lerp(p_ema, ema_beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)

        cur_nimg += batch_size
        batch_idx += 1

        # ADA: move p towards the target overfitting heuristic E[sign(D(real))].
        if ada_stats is not None and batch_idx % ada_interval == 0:
            ada_stats.update()
            rt = ada_stats['Loss/signs/real']
            if np.isfinite(rt):
                adjust = np.sign(rt - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
                augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(min=0))

        # Tick?
        done = (cur_nimg >= total_kimg * 1000)
        if (not done) and (cur_tick != 0) and (cur_nimg < tick_start_nimg + kimg_per_tick * 1000):
            continue

        # Status line.
        tick_end_time = time.time()
        total_sec = elapsed_before + (tick_end_time - start_time)
        fields = []
        fields += ['tick {:<5d}'.format(training_stats.report0('Progress/tick', cur_tick))]
        fields += ['kimg {:<8.1f}'.format(training_stats.report0('Progress/kimg', cur_nimg / 1e3))]
        fields += ['time {:<12s}'.format(dnnlib.util.format_time(training_stats.report0('Timing/total_sec',
                                                                                          total_sec)))]
        fields += ['sec/tick {:<7.1f}'.format(training_stats.report0('Timing/sec_per_tick',
                                                                     tick_end_time - tick_start_time))]
        fields += ['sec/kimg {:<7.2f}'.format(training_stats.report0(
            'Timing/sec_per_kimg', (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3))]
        fields += ['maintenance {:<6.1f}'.format(training_stats.report0('Timing/maintenance_sec',
                                                                        maintenance_time))]
        fields += ['cpumem {:<6.2f}'.format(training_stats.report0('Resources/cpu_mem_gb', _cpu_mem_gb()))]
        if is_cuda:
            fields += ['gpumem {:<6.2f}'.format(training_stats.report0(
                'Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(device) / 2**30))]
            torch.cuda.reset_peak_memory_stats(device)
        fields += ['augment {:.3f}'.format(training_stats.report0(
            'Progress/augment', float(augment_pipe.p.cpu()) if augment_pipe is not None else 0))]
        training_stats.report0('Timing/total_hours', total_sec / (60 * 60))
        training_stats.report0('Timing/total_days', total_sec / (24 * 60 * 60))
        if rank == 0:
            print(' '.join(fields), flush=True)

        # Abort?
        if (not done) and (abort_fn is not None) and abort_fn():
            done = True
            if rank == 0:
                print()
                print('Aborting...')

        # Image grid. Maintenance must not consume the training random streams.
        if rank == 0 and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
            images = _grid_fakes(G_ema, grid_z, grid_c, device)
            save_image_grid(images, os.path.join(run_dir, 'fakes{:06d}.png'.format(cur_nimg // 1000)),
                            drange=[-1, 1], grid_size=grid_size)

        # Network snapshot.
        snapshot_pkl = None
        snapshot_data = None
        write_snapshot = network_snapshot_ticks is not None and (done or cur_tick % network_snapshot_ticks == 0)
        if write_snapshot:
            snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
            for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
                if module is not None:
                    if distributed:
                        misc.check_ddp_consistency(module, ignore_regex=r'.*\.w_avg')
                    module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
                snapshot_data[name] = module
                del module
            snapshot_pkl = os.path.join(run_dir, ckpt_io.snapshot_pkl_name(cur_nimg // 1000))
            if rank == 0:
                tmp = snapshot_pkl + '.tmp{}'.format(os.getpid())
                with open(tmp, 'wb') as f:
                    pickle.dump(snapshot_data, f)
                os.replace(tmp, snapshot_pkl)

        # Metrics.
        if snapshot_data is not None and len(metrics) > 0:
            if rank == 0:
                print('Evaluating metrics...')
            from metrics import metric_main   # Lazy: only runs that ask for metrics need the module.
            with torch.random.fork_rng(devices=[device] if is_cuda else []):
                for metric in metrics:
                    result_dict = metric_main.calc_metric(metric=metric, G=snapshot_data['G_ema'],
                                                          dataset_kwargs=training_set_kwargs, num_gpus=num_gpus,
                                                          rank=rank, device=device)
                    if rank == 0:
                        metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                    stats_metrics.update(result_dict.results)
        del snapshot_data

        # Statistics.
        for phase in phases:
            value = []
            if phase.start_event is not None and phase.end_event is not None:
                phase.end_event.synchronize()
                value = phase.start_event.elapsed_time(phase.end_event)
            training_stats.report0('Timing/' + phase.name, value)
        stats_collector.update()
        stats_dict = stats_collector.as_dict()

        timestamp = time.time()
        if stats_jsonl is not None:
            fields = dict(stats_dict, timestamp=timestamp)
            stats_jsonl.write(json.dumps(fields) + '\n')
            stats_jsonl.flush()
        if stats_tfevents is not None:
            global_step = int(cur_nimg / 1e3)
            walltime = timestamp - start_time
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
            for name, value in stats_metrics.items():
                stats_tfevents.add_scalar('Metrics/' + name, value, global_step=global_step, walltime=walltime)
            stats_tfevents.flush()
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        # Next tick.
        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time

        # Exact-resume checkpoint beside the pickle, holding the state after this tick.
        if write_snapshot:
            rank_state = dict(rng=ckpt_io.capture_rng_state(device), loss=loss.state_dict())
            if distributed:
                gathered = [None] * num_gpus
                torch.distributed.all_gather_object(gathered, ckpt_io._to_cpu(rank_state))
            else:
                gathered = [rank_state]
            if rank == 0:
                state = dict(
                    options_hash=ckpt_io.options_hash(trajectory_options),
                    options_json=ckpt_io.options_json(trajectory_options),
                    progress=dict(cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx,
                                  tick_start_nimg=tick_start_nimg,
                                  elapsed_sec=elapsed_before + (tick_start_time - start_time)),
                    G=G.state_dict(), D=D.state_dict(), G_ema=G_ema.state_dict(),
                    augment_pipe=augment_pipe.state_dict() if augment_pipe is not None else None,
                    augment_p=float(augment_pipe.p) if augment_pipe is not None else 0.0,
                    opt={name: opt.state_dict() for name, opt in optimizers.items()},
                    ada=dict(pending=_pending_moments(ada_stats, 'Loss/signs/real')) if ada_stats is not None
                    else None,
                    latent_rng=latent_gen.get_state(),
                    sampler=dict(seed=random_seed, consumed_per_rank=batch_idx * batch_per_rank),
                    ranks=gathered,
                )
                ckpt_io.save_checkpoint(state, ckpt_io.ckpt_path_for(snapshot_pkl))
            maintenance_time = time.time() - tick_end_time

        if done:
            break

    # Done.
    if stats_jsonl is not None:
        stats_jsonl.close()
    if stats_tfevents is not None:
        stats_tfevents.close()
    if rank == 0:
        print()
        print('Exiting...')


def _grid_fakes(G_ema, grid_z, grid_c, device):
    """G_ema's images for the grid latents, with constant noise, leaving every random stream untouched.
    On the CPU, per-sample (non-fused) modulation is about twice as fast and gives the same images."""
    extra = dict(fused_modconv=False) if device.type == 'cpu' else dict()
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []), torch.no_grad():
        return torch.cat([G_ema(z=z, c=c, noise_mode='const', **extra).cpu() for z, c in zip(grid_z, grid_c)]).numpy()
