"""Time StyleGAN2 G and D forward+backward for one preset.

Default: paper256 at 256x256, batch 8, the figure docs/benchmarks.md tracks.
On CUDA, `--compare-ref` also times the same step with every custom op forced
onto its reference PyTorch path, which is the speed-up the kernels buy.

    python bench/bench_networks.py                      # CPU or CUDA, whichever is here
    python bench/bench_networks.py --device=cuda --compare-ref
"""

import datetime
import functools
import json
import os
import platform
import sys
import time

import click
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada'))

import dnnlib  # noqa: E402
from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402
from training import cfg_specs  # noqa: E402


def build_networks(cfg, res, device):
    spec = cfg_specs.resolve_cfg(cfg, res)
    kw = cfg_specs.network_kwargs(spec, cfg=cfg, c_dim=0, img_resolution=res, img_channels=3)
    G = dnnlib.util.construct_class_by_name(**kw.G_kwargs).train().requires_grad_(True).to(device)
    D = dnnlib.util.construct_class_by_name(**kw.D_kwargs).train().requires_grad_(True).to(device)
    return G, D


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(G, D, batch, device, iters, warmup):
    """Mean seconds per G forward+backward and per D forward+backward.

    G's step backpropagates a scalar of its output; D's step runs on a detached
    image so that the two timings do not overlap."""
    z = torch.randn([batch, G.z_dim], device=device)
    c = torch.zeros([batch, G.c_dim], device=device)

    def g_step():
        img = G(z, c)
        img.square().mean().backward()

    img = G(z, c).detach().requires_grad_(True)

    def d_step():
        D(img, c).sum().backward()

    out = {}
    for name, step in (('G', g_step), ('D', d_step)):
        for _ in range(warmup):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(device)
        out[name] = (time.perf_counter() - t0) / iters
    return out


def _force_ref(fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        kwargs['impl'] = 'ref'
        return fn(*args, **kwargs)
    return wrapped


def reference_ops():
    """Patch the op modules so every call takes its reference path; returns an undo function."""
    saved = [(bias_act, 'bias_act', bias_act.bias_act), (upfirdn2d, 'upfirdn2d', upfirdn2d.upfirdn2d)]
    for module, name, fn in saved:
        setattr(module, name, _force_ref(fn))

    def undo():
        for module, name, fn in saved:
            setattr(module, name, fn)
    return undo


def machine_description(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{cpu}, {torch.get_num_threads()} threads'


@click.command()
@click.option('--cfg', default='paper256', show_default=True, help='Preset of train.py.')
@click.option('--res', default=256, show_default=True, type=int, help='Image resolution.')
@click.option('--batch', default=8, show_default=True, type=int, help='Minibatch size.')
@click.option('--device', default='auto', show_default=True, type=click.Choice(['auto', 'cpu', 'cuda']))
@click.option('--iters', default=None, type=int, help='Timed iterations [default: 3 on CPU, 20 on CUDA].')
@click.option('--warmup', default=None, type=int, help='Untimed iterations first [default: 1 on CPU, 5 on CUDA].')
@click.option('--compare-ref', is_flag=True, help='Also time with the custom ops on their reference path.')
@click.option('--json', 'json_path', default=None, help='Append the result as one JSON line to this file.')
def main(cfg, res, batch, device, iters, warmup, compare_ref, json_path):
    """Time G and D forward+backward for one preset and print sec/iteration."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    iters = iters if iters is not None else (20 if device.type == 'cuda' else 3)
    warmup = warmup if warmup is not None else (5 if device.type == 'cuda' else 1)

    torch.manual_seed(0)
    G, D = build_networks(cfg, res, device)
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    machine = machine_description(device)
    print(f'{cfg} {res}x{res} batch {batch} on {machine}; torch {torch.__version__}; '
          f'G {n_g:,} params, D {n_d:,} params; {warmup} warm-up + {iters} timed iterations')

    result = dict(date=datetime.date.today().isoformat(), machine=machine, device=device.type, cfg=cfg, res=res,
                  batch=batch, torch=torch.__version__, iters=iters)
    result['ops'] = time_steps(G, D, batch, device, iters, warmup)
    print(f'  G fwd+bwd {result["ops"]["G"]:.4f} s/iter   D fwd+bwd {result["ops"]["D"]:.4f} s/iter')
    if compare_ref:
        undo = reference_ops()
        try:
            result['ref'] = time_steps(G, D, batch, device, iters, warmup)
        finally:
            undo()
        for k in ('G', 'D'):
            result[f'speedup_{k}'] = result['ref'][k] / result['ops'][k]
        print(f'  reference ops: G {result["ref"]["G"]:.4f} s/iter ({result["speedup_G"]:.2f}x slower)   '
              f'D {result["ref"]["D"]:.4f} s/iter ({result["speedup_D"]:.2f}x slower)')
    if device.type == 'cuda':
        result['peak_mem_gb'] = torch.cuda.max_memory_allocated(device) / 2**30
        print(f'  peak memory {result["peak_mem_gb"]:.2f} GB')
    if json_path:
        with open(json_path, 'a') as f:
            f.write(json.dumps(result) + '\n')


if __name__ == '__main__':
    main()
