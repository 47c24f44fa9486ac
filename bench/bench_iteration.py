"""Time one full training iteration of FastGAN against StyleGAN2 paper256, or against FastGAN
with the previous settings (--versus=previous), in one run.

An iteration is what training_loop.py does for one minibatch: every phase
(G: Gmain/Gboth, D: Dmain/Dboth, plus the lazy regularisation phases Greg and
Dreg where the cfg has them) through `loss.accumulate_gradients` (augment pipe,
adversarial terms, reconstruction, R1, path length: all that the loss does),
the gradient clean-up and the optimiser step, then the G_ema update. The
options are resolved by train.py's own `setup_training_loop_kwargs`, so both
setups are exactly what `train.py --cfg=... --aug=... --batch=...` builds.

Lazy regularisation (StyleGAN2: Greg every 4 minibatches, Dreg every 16) is
timed on every timed iteration and amortised: its per-occurrence time divided
by its interval, reported separately and included in the total. Real images
are taken from the data set once, before timing: data loading and the
ADA p update (a few scalar operations every 4 minibatches) are not timed.

    python bench/bench_iteration.py                              # 256x256, batch 8, device auto
    python bench/bench_iteration.py --iters=3 --warmup=1 --json=bench.jsonl
    python bench/bench_iteration.py --device=cuda --bf16 --channels-last
    python bench/bench_iteration.py --versus=previous --flops     # FastGAN: new defaults vs previous

`--versus=previous` compares FastGAN under the cfg's defaults with FastGAN as
it was built before issue 14: --precision=fp32 (no autocast, reference
up-convolutions), --fake-reuse=0 (G's phase first, each phase its own fakes),
and the official decoder widths whatever --ndf is. `--flops` counts the
floating-point operations of one extra, untimed iteration of each setup
(torch.utils.flop_counter: convolutions and matrix products, forward and backward).

Every phase is timed in wall seconds and in process CPU seconds
(time.process_time: all threads of this process). On a CPU shared with other
jobs, the CPU time at OMP_NUM_THREADS=1 is the figure to quote (`ratio CPU`):
wall time there counts the other jobs' time slices too. On a shared CPU the
two setups are also timed alternately (one iteration of each in
turn), so that a change of load affects both; on CUDA they run one after the
other, so that each one's peak memory is its own.
"""

import contextlib
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, 'stylegan2_ada')
for _path in (HARNESS, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

import dnnlib  # noqa: E402
import train as train_cli  # noqa: E402  (stylegan2_ada/train.py: option resolution only)
from torch_utils import misc  # noqa: E402
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix  # noqa: E402

# Where and when.


def machine_info(device):
    """Machine, date, versions and load: what a benchmark record needs beside its numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    info = dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        host=platform.node(),
        cpu=cpu,
        cores=os.cpu_count(),
        torch=torch.__version__,
        python=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
        load_avg_1_5_15=load,
        device=str(device),
    )
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info

# One setup: resolve with train.py, build as training_loop does, time its phases.


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class Setup:
    """One `train.py` configuration, built the way training_loop builds it."""

    def __init__(self, name, flags, data, batch, device, aug_p=None, overrides=None):
        self.name = name
        self.flags = dict(flags)
        self.device = device
        self.aug_p = aug_p
        # train.py's resolution of --cfg/--aug/--loss/--recon/... (no run folder, no training).
        desc, args, resolved, _summary, cleanup = train_cli.setup_training_loop_kwargs(
            data=data, batch=batch, metrics=[], device=device.type, workers=0, **self.flags)
        if cleanup is not None:
            cleanup.cleanup()
        for where, value in (overrides or {}).items():   # 'section.key' -> value, after resolution
            section, key = where.split('.', 1)
            args[section][key] = value
        self.desc = desc
        self.args = args
        self.resolved = resolved
        self.built = False
        self.times = {}        # phase name -> [seconds per occurrence]
        self.ema_times = []
        self.cpu_times = {}    # the same in process CPU seconds (all threads of this process)
        self.ema_cpu_times = []
        self.peak_mem_gb = None

    def describe(self):
        a = self.args
        aug = self.resolved['aug']
        aug_text = f'{aug["name"]} -> {(aug["class_name"] or "none").rsplit(".", 1)[-1]}'
        if aug['augpipe']:
            aug_text += f' ({aug["augpipe"]}, p held at {self.aug_p:g})'
        loss = self.resolved['loss']
        terms = ', '.join(f'{k}: {v}' for k, v in (loss.get('terms') or {}).items())
        return (f'{self.name}: train.py ' + ' '.join(f'--{k.replace("_", "-")}={v}' for k, v in self.flags.items())
                + f' --batch={a.batch_size}\n    G {a.G_kwargs.class_name}, D {a.D_kwargs.class_name}\n'
                + f'    loss {loss["class_name"]}' + (f' [{terms}]' if terms else '') + f'; aug {aug_text}')

    def build(self, channels_last=False, seed=0):
        a = self.args
        dev = self.device
        torch.manual_seed(seed)
        training_set = dnnlib.util.construct_class_by_name(**a.training_set_kwargs)
        common = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                      img_channels=training_set.num_channels)
        self.resolution = training_set.resolution
        self.G = dnnlib.util.construct_class_by_name(**a.G_kwargs, **common).train().requires_grad_(False).to(dev)
        self.D = dnnlib.util.construct_class_by_name(**a.D_kwargs, **common).train().requires_grad_(False).to(dev)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.mem_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            for module in (self.G, self.D, self.G_ema):
                module.to(memory_format=torch.channels_last)
        self.params = dict(G=sum(p.numel() for p in self.G.parameters()),
                           D=sum(p.numel() for p in self.D.parameters()))

        # Augment pipe: as the loop holds it; ADA's pipe at a fixed p (the adaptive update is not timed).
        augment_p = a.augment_p if self.aug_p is None else self.aug_p
        self.aug_p = float(augment_p)
        self.augment_pipe = None
        if a.augment_kwargs is not None and (augment_p > 0 or a.ada_target is not None):
            self.augment_pipe = dnnlib.util.construct_class_by_name(**a.augment_kwargs).train() \
                .requires_grad_(False).to(dev)
            self.augment_pipe.p.copy_(torch.as_tensor(augment_p))

        self.loss = dnnlib.util.construct_class_by_name(device=dev, G_mapping=self.G.mapping,
                                                        G_synthesis=self.G.synthesis, D=self.D,
                                                        augment_pipe=self.augment_pipe, **a.loss_kwargs)

        # Phases and optimisers, with the loop's lazy-regularisation scaling of lr and betas.
        self.phases = []
        for name, module, opt_kwargs, interval in [('G', self.G, a.G_opt_kwargs, a.get('G_reg_interval', 4)),
                                                   ('D', self.D, a.D_opt_kwargs, a.get('D_reg_interval', 16))]:
            opt_kwargs = dnnlib.EasyDict(copy.deepcopy(opt_kwargs))
            if interval is None:
                opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
                self.phases.append(dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1))
            else:
                ratio = interval / (interval + 1)
                opt_kwargs.lr = opt_kwargs.lr * ratio
                if 'betas' in opt_kwargs:
                    opt_kwargs.betas = [beta ** ratio for beta in opt_kwargs.betas]
                opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
                self.phases.append(dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1))
                self.phases.append(dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=interval))
        if getattr(self.loss, 'D_first', False):   # as the loop orders them (fake reuse: D's phases first)
            self.phases = [p for p in self.phases if p.name[0] == 'D'] + [p for p in self.phases if p.name[0] == 'G']
        self.times = {phase.name: [] for phase in self.phases}
        self.cpu_times = {phase.name: [] for phase in self.phases}

        # One minibatch of real images from the data set, as the loop feeds them.
        n = a.batch_size
        items = [training_set[i % len(training_set)] for i in range(n)]
        training_set.close()
        reals = torch.stack([torch.as_tensor(img) for img, _label in items]).to(dev).to(torch.float32) / 127.5 - 1
        self.reals = reals.contiguous(memory_format=self.mem_format).split(a.batch_gpu)
        labels = torch.stack([torch.as_tensor(label, dtype=torch.float32) for _img, label in items]).to(dev)
        self.real_c = labels.split(a.batch_gpu)
        self.gen_c = torch.zeros([n, self.G.c_dim], device=dev).split(a.batch_gpu)
        self.ema_beta = 0.5 ** (a.batch_size / max(a.ema_kimg * 1000, 1e-8))
        self.built = True

    def free(self):
        for attr in ('G', 'D', 'G_ema', 'augment_pipe', 'loss', 'phases', 'reals', 'real_c', 'gen_c'):
            if hasattr(self, attr):
                delattr(self, attr)
        self.built = False
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()

    def _run_phase(self, phase, bf16):
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if bf16 \
            else contextlib.nullcontext()
        num_rounds = len(self.reals)
        gen_z = torch.randn([self.args.batch_size, self.G.z_dim], device=self.device).split(self.args.batch_gpu)
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        for round_idx, (real_img, real_c, z, c) in enumerate(zip(self.reals, self.real_c, gen_z, self.gen_c)):
            with autocast:
                self.loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=z,
                                               gen_c=c, sync=(round_idx == num_rounds - 1), gain=phase.interval)
        phase.module.requires_grad_(False)
        for param in phase.module.parameters():
            if param.grad is not None:
                misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        phase.opt.step()

    def _update_ema(self):
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, self.ema_beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def count_flops(self, bf16=False):
        """Floating-point operations of one (untimed) iteration, in GFLOP."""
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            self.iteration(bf16=bf16, record=False)
        self.gflop = counter.get_total_flops() / 1e9
        return self.gflop

    def iteration(self, bf16=False, record=True, verbose=False):
        """Every phase once (regularisation phases too: they are amortised in `summary`), then EMA."""
        took, took_cpu = {}, {}
        steps = [(phase.name, lambda phase=phase: self._run_phase(phase, bf16)) for phase in self.phases]
        for name, step in steps + [('G_ema', self._update_ema)]:
            _sync(self.device)
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            _sync(self.device)
            took[name], took_cpu[name] = time.perf_counter() - t0, time.process_time() - c0
        if record:
            for name, sec in took.items():
                (self.ema_times if name == 'G_ema' else self.times[name]).append(sec)
                (self.ema_cpu_times if name == 'G_ema' else self.cpu_times[name]).append(took_cpu[name])
        if verbose:
            print(f'  {self.name:<10s} {"timed" if record else "warm-up"} iteration: '
                  + ', '.join(f'{k} {v:.3f}' for k, v in took.items()) + ' s wall; CPU '
                  + ', '.join(f'{k} {v:.3f}' for k, v in took_cpu.items()) + ' s', flush=True)

    def summary(self):
        phases = {}
        total = 0.0
        for phase in self.phases:
            ts = self.times[phase.name]
            mean = sum(ts) / len(ts)
            amortised = mean / phase.interval
            cpu = self.cpu_times[phase.name]
            cpu_mean = sum(cpu) / len(cpu)
            phases[phase.name] = dict(sec=mean, interval=phase.interval, amortised_sec=amortised,
                                      samples=[round(t, 6) for t in ts], cpu_sec=cpu_mean,
                                      amortised_cpu_sec=cpu_mean / phase.interval,
                                      cpu_samples=[round(t, 6) for t in cpu])
            total += amortised
        ema = sum(self.ema_times) / len(self.ema_times)
        total += ema
        ema_cpu = sum(self.ema_cpu_times) / len(self.ema_cpu_times)
        total_cpu = sum(p['amortised_cpu_sec'] for p in phases.values()) + ema_cpu
        main = sum(v['amortised_sec'] for k, v in phases.items() if not k.endswith('reg'))
        reg = sum(v['amortised_sec'] for k, v in phases.items() if k.endswith('reg'))
        return dict(name=self.name, desc=self.desc, flags=self.flags, resolution=self.resolution,
                    batch=self.args.batch_size, batch_gpu=self.args.batch_gpu,
                    G=self.args.G_kwargs.class_name, D=self.args.D_kwargs.class_name,
                    loss=self.resolved['loss']['class_name'], loss_terms=self.resolved['loss'].get('terms') or {},
                    augment=(self.args.augment_kwargs or {}).get('class_name') if self.augment_pipe is not None
                    else None, augment_p=self.aug_p, params=self.params, phases=phases, ema_sec=ema,
                    main_sec=main, reg_amortised_sec=reg, sec_per_iter=total, it_per_sec=1.0 / total,
                    ema_cpu_sec=ema_cpu, cpu_sec_per_iter=total_cpu,
                    timed_iters=len(self.ema_times), peak_mem_gb=self.peak_mem_gb,
                    gflop_per_iter=getattr(self, 'gflop', None),
                    precision=getattr(self.loss, 'precision', None) if self.built else None,
                    fake_reuse=getattr(self.loss, 'fake_reuse', None) if self.built else None,
                    phase_order=[p.name for p in self.phases] if self.built else None,
                    up_conv={net: kwargs.get('up_conv') for net, kwargs in (('G', self.args.G_kwargs),
                                                                            ('D', self.args.D_kwargs))})



def _fmt_phases(s):
    parts = []
    for name, p in s['phases'].items():
        if p['interval'] == 1:
            parts.append(f'{name} {p["sec"]:.3f}')
        else:
            parts.append(f'{name} {p["sec"]:.3f}/{p["interval"]} = {p["amortised_sec"]:.3f}')
    parts.append(f'G_ema {s["ema_sec"]:.3f}')
    return ', '.join(parts)


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--res', help='Resolution (data: builtin:shapes-RES) [default: 256]', type=int, default=256,
              show_default=False)
@click.option('--batch', help='Batch size of both setups [default: 8]', type=click.IntRange(min=1), default=8)
@click.option('--device', help='Device [default: auto = cuda when available]',
              type=click.Choice(['auto', 'cpu', 'cuda']), default='auto')
@click.option('--warmup', help='Untimed iterations per setup [default: 1]', type=click.IntRange(min=0), default=1)
@click.option('--iters', help='Timed iterations per setup [default: 3]', type=click.IntRange(min=1), default=3)
@click.option('--recon', help='FastGAN reconstruction term [default: mse]; lpips needs NVIDIA vgg16.pt',
              type=click.Choice(['mse', 'l1', 'lpips', 'none']), default='mse')
@click.option('--sg2-aug', help='StyleGAN2 augmentation [default: ada]: ADA\'s bgc pipe at a fixed p, or diffaug',
              type=click.Choice(['ada', 'diffaug']), default='ada')
@click.option('--sg2-p', help='p of the ADA pipe for --sg2-aug=ada [default: 0.2]', type=click.FloatRange(0, 1),
              default=0.2)
@click.option('--sg2-cfg', help='StyleGAN2 cfg [default: paper256]', default='paper256')
@click.option('--cbase', help='StyleGAN2 capacity override (train.py --cbase), for small tests', type=int)
@click.option('--cmax', help='StyleGAN2 maximum channels override (train.py --cmax), for small tests', type=int)
@click.option('--ngf', help='FastGAN generator width override (train.py --ngf), for small tests', type=int)
@click.option('--ndf', help='FastGAN discriminator width override (train.py --ndf), for small tests', type=int)
@click.option('--bf16', help='bf16 autocast around the loss (a CUDA option)', is_flag=True)
@click.option('--channels-last', help='channels_last networks and images (a CUDA option)', is_flag=True)
@click.option('--order', help='interleave (one iteration of each in turn) or sequential [default: interleave on '
              'the CPU, sequential on CUDA]', type=click.Choice(['auto', 'interleave', 'sequential']), default='auto')
@click.option('--versus', help='What FastGAN is timed against [default: stylegan2]: StyleGAN2 (--sg2-*), or '
              'FastGAN with the settings before issue 14 (fp32, reference up-convolutions, no fake reuse, official '
              'decoder widths)', type=click.Choice(['stylegan2', 'previous']), default='stylegan2')
@click.option('--flops', 'count_flops', help='Also count the GFLOP of one untimed iteration of each setup',
              is_flag=True)
@click.option('--seed', help='Random seed [default: 0]', type=int, default=0)
@click.option('--verbose', '-v', help='Print the phase times of every iteration as it ends', is_flag=True)
@click.option('--json', 'json_path', help='Append the result as one JSON line to this file', metavar='PATH')
def main(res, batch, device, warmup, iters, recon, sg2_aug, sg2_p, sg2_cfg, cbase, cmax, ngf, ndf, bf16,
         channels_last, order, versus, count_flops, seed, verbose, json_path):
    """Seconds per training iteration of FastGAN vs StyleGAN2 (paper256), or vs FastGAN's previous
    settings, at the same batch and resolution, and their ratio (other / FastGAN)."""
    dev = _pick_device(device)
    if order == 'auto':
        order = 'sequential' if dev.type == 'cuda' else 'interleave'
    _check_recon(recon)
    # As the training loop sets them.
    torch.backends.cudnn.benchmark = True
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True

    info = machine_info(dev)
    setups = _setups(versus, f'builtin:shapes-{res}', batch, dev, recon=recon, ngf=ngf, ndf=ndf,
                     sg2_cfg=sg2_cfg, sg2_aug=sg2_aug, sg2_p=sg2_p, cbase=cbase, cmax=cmax)
    _print_header(info, dev, res, batch, warmup, iters, order, bf16, channels_last)
    variant = dict(bf16=bf16, channels_last=channels_last, count_flops=count_flops, seed=seed, verbose=verbose)
    (_time_sequential if order == 'sequential' else _time_interleaved)(setups, warmup, iters, variant)

    info['load_avg_after'] = [round(x, 2) for x in os.getloadavg()]
    fg, sg = setups[0].result, setups[1].result
    ratio = sg['sec_per_iter'] / fg['sec_per_iter']
    ratio_cpu = sg['cpu_sec_per_iter'] / fg['cpu_sec_per_iter']
    _print_results(fg, sg, ratio, ratio_cpu, f'StyleGAN2 {sg2_cfg}' if versus == 'stylegan2'
                   else 'FastGAN previous settings', info)
    if json_path:
        record = dict(bench='bench_iteration', **info, res=res, batch=batch, warmup=warmup, iters=iters, order=order,
                      bf16=bf16, channels_last=channels_last, versus=versus, fastgan=fg, ratio=ratio,
                      ratio_cpu=ratio_cpu)
        record['stylegan2' if versus == 'stylegan2' else 'previous'] = sg
        with open(json_path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
        print(f'Appended to {json_path}')


def _pick_device(device):
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.UsageError('--device=cuda, but no CUDA device is available')
    return torch.device(device)


def _check_recon(recon):
    """LPIPS needs NVIDIA's vgg16.pt through the metrics' resolver: say so now, not mid-build."""
    if recon != 'lpips':
        return
    from kdgan_plugins.losses import fastgan_loss
    try:
        train_cli.check_loss_assets(dict(class_name='kdgan_plugins.losses.fastgan_loss.FastGANLoss',
                                         terms=fastgan_loss.default_terms('lpips')))
    except click.ClickException as err:
        raise click.ClickException(f'--recon=lpips is not available here ({err.message}); use --recon=mse')


def _setups(versus, data, batch, dev, recon, ngf, ndf, sg2_cfg, sg2_aug, sg2_p, cbase, cmax):
    """[FastGAN under today's defaults, the setup it is timed against]."""
    fg_flags = dict(cfg='fastgan', aug='diffaug', recon=recon)
    fg_flags.update({k: v for k, v in dict(ngf=ngf, ndf=ndf).items() if v is not None})
    fastgan = Setup('fastgan', fg_flags, data, batch, dev)
    if versus == 'previous':
        return [fastgan, Setup('previous', dict(fg_flags, precision='fp32', fake_reuse=False), data, batch, dev,
                               overrides={'D_kwargs.decoder_widths': 'fixed'})]
    sg_flags = dict(cfg=sg2_cfg, aug=sg2_aug)
    sg_flags.update({k: v for k, v in dict(cbase=cbase, cmax=cmax).items() if v is not None})
    return [fastgan, Setup('stylegan2', sg_flags, data, batch, dev, aug_p=(sg2_p if sg2_aug == 'ada' else None))]


def _print_header(info, dev, res, batch, warmup, iters, order, bf16, channels_last):
    print(f'Machine: {info["cpu"]}, {info["cores"]} cores' + (f', GPU {info["gpu"]}' if 'gpu' in info else ''))
    print(f'Date: {info["date"]}; torch {info["torch"]} ({info["torch_threads"]} threads, '
          f'OMP_NUM_THREADS={info["omp_num_threads"]}); load average {info["load_avg_1_5_15"]}')
    print(f'Device {dev}, {res}x{res}, batch {batch}; {warmup} warm-up + {iters} timed iterations per setup, '
          f'order: {order}')
    if (bf16 or channels_last) and dev.type != 'cuda':
        print('Note: --bf16 and --channels-last are CUDA options (the GPU variants of the benchmark); '
              'applied here on the CPU as asked, where they are not expected to help.')
    print(f'Variant: bf16 autocast {"on" if bf16 else "off"}, channels_last {"on" if channels_last else "off"}')


def _build(s, variant):
    s.build(channels_last=variant['channels_last'], seed=variant['seed'])
    print(s.describe())
    print(f'    params G {s.params["G"]:,}, D {s.params["D"]:,}; phases '
          + ', '.join(f'{p.name} (every {p.interval})' for p in s.phases)
          + f'; precision {getattr(s.loss, "precision", "fp32")}')
    if variant['count_flops']:
        print(f'    {s.count_flops(bf16=variant["bf16"]):.2f} GFLOP per iteration', flush=True)


def _measure(s, n, record, variant):
    """`n` iterations of setup `s`; a failure names the setup and the variant that broke it."""
    try:
        for _ in range(n):
            s.iteration(bf16=variant['bf16'], record=record, verbose=variant['verbose'])
    except Exception as err:
        traceback.print_exc()
        flags = ', '.join(f for f, on in (('--bf16', variant['bf16']),
                                          ('--channels-last', variant['channels_last'])) if on)
        raise click.ClickException(f'{s.name} ({s.desc}) failed' + (f' with {flags}' if flags else '')
                                   + f': {type(err).__name__}: {err}') from err


def _time_sequential(setups, warmup, iters, variant):
    """One setup after the other, each freed before the next is built (GPU memory, peak memory per setup)."""
    for s in setups:
        _build(s, variant)
        _measure(s, warmup, False, variant)
        cuda = s.device.type == 'cuda'
        if cuda:
            torch.cuda.reset_peak_memory_stats(s.device)
        _measure(s, iters, True, variant)
        if cuda:
            s.peak_mem_gb = torch.cuda.max_memory_allocated(s.device) / 2**30
        s.result = s.summary()
        s.free()


def _time_interleaved(setups, warmup, iters, variant):
    """One timed iteration of each setup in turn, so that a shared CPU's load drifts over both alike."""
    for s in setups:
        _build(s, variant)
    for s in setups:
        _measure(s, warmup, False, variant)
    for _ in range(iters):
        for s in setups:
            _measure(s, 1, True, variant)
    for s in setups:
        s.result = s.summary()


def _print_results(fg, sg, ratio, ratio_cpu, other, info):
    print()
    for r in (fg, sg):
        mem = f', peak memory {r["peak_mem_gb"]:.2f} GB' if r['peak_mem_gb'] is not None else ''
        flop = f', {r["gflop_per_iter"]:.2f} GFLOP' if r['gflop_per_iter'] is not None else ''
        print(f'{r["name"]:<10s} sec/iter {r["sec_per_iter"]:.4f}  it/s {r["it_per_sec"]:.4f}{mem}{flop}  '
              f'(main {r["main_sec"]:.4f}, reg amortised {r["reg_amortised_sec"]:.4f}; {_fmt_phases(r)})')
        print(f'{"":<10s} CPU sec/iter {r["cpu_sec_per_iter"]:.4f}  (samples per phase: '
              + '; '.join(f'{k} {v["cpu_samples"]}' for k, v in r['phases'].items()) + ')')
    print(f'ratio      {ratio:.4f}  ({other} sec/iter / FastGAN sec/iter, wall)')
    print(f'ratio CPU  {ratio_cpu:.4f}  ({other} / FastGAN, process CPU seconds per iteration: the measure to '
          f'quote on a shared CPU at {torch.get_num_threads()} thread(s))')
    print(f'Load average after: {info["load_avg_after"]}')


if __name__ == '__main__':
    main()
