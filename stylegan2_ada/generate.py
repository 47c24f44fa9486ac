"""Render PNGs from a network: one per seed, or one per projected w.

`--network` takes a weights-only model file (`.safetensors`, written beside
each snapshot or by `legacy.py --dest=x.safetensors`), which loads without
running code, or a pickle, which runs the code it embeds: use pickles only from
sources you trust. Given `x.pkl`, an `x.safetensors` beside it is read instead.

Examples:
    python generate.py --outdir=out --seeds=0-3,7 --network=network-snapshot-000100.pkl
    python generate.py --outdir=out --seeds=0-9 --class=3 --trunc=0.7 --network=cifar.pkl
    python generate.py --outdir=out --projected-w=projected_w.npz --network=ffhq.pkl

The helpers here (seed lists, labels, loading G, turning G's output into
PNGs) are shared by style_mixing.py and projector.py, so that the three tools
give the same pixels for the same latent.
"""

import math
import os
import re

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
import legacy

_SEED_LIMIT = 2 ** 32   # numpy's RandomState takes 32-bit seeds
_RANGE_ITEM = re.compile(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?')


def parse_range(text):
    """Expand a list such as '0-3,7' into [0, 1, 2, 3, 7] (both range ends included)."""
    numbers = []
    for item in text.split(','):
        found = _RANGE_ITEM.fullmatch(item)
        if found is None:
            raise ValueError(f'{item.strip()!r} is neither a number nor a range like 0-3')
        first = int(found.group(1))
        last = first if found.group(2) is None else int(found.group(2))
        if last < first:
            raise ValueError(f'range {item.strip()!r} runs backwards')
        if last >= _SEED_LIMIT:
            raise ValueError(f'seed {last} is too large (must be below 2**32)')
        numbers.extend(range(first, last + 1))
    return numbers


def range_callback(ctx, param, value):
    """click callback: a range option parsed by parse_range, bad input reported as a usage error."""
    if value is None:
        return None
    try:
        return parse_range(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param)


def finite_callback(ctx, param, value):
    """click callback: NaN and infinities make black images, not an answer; refuse them."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f'{value} is not a finite number', ctx=ctx, param=param)
    return value


def pick_device():
    """CUDA when there is one; says which, since the CPU is much slower."""
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    note = '' if device.type == 'cuda' else ' (no CUDA device found; this is slower)'
    print(f'Using device: {device}{note}')
    return device


def image_to_uint8(img):
    """G's NCHW output (about [-1, 1]) -> NHWC uint8 numpy, rounded the way every tool here rounds."""
    assert img.ndim == 4, img.shape
    return img.permute(0, 2, 3, 1).mul(127.5).add(128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def save_png(hwc, path):
    """Write one HWC uint8 image; PNG holds grey or RGB only."""
    channels = hwc.shape[2]
    if channels not in (1, 3):
        raise click.ClickException(f'cannot save images with {channels} channels as PNG')
    PIL.Image.fromarray(hwc[:, :, 0] if channels == 1 else hwc).save(path)


def make_label(G, class_idx, device):
    """The [1, c_dim] one-hot label for `--class`; a mismatch with G is a usage error, not a crash."""
    num_classes = G.c_dim
    if num_classes == 0:
        if class_idx is not None:
            raise click.UsageError('--class was given, but this network is unconditional (c_dim=0)')
        return torch.zeros([1, 0], device=device)
    if class_idx is None:
        raise click.UsageError(f'this network is conditional ({num_classes} classes): '
                               f'give --class=0..{num_classes - 1}')
    if class_idx < 0 or class_idx >= num_classes:
        raise click.BadParameter(f'{class_idx} is not in 0..{num_classes - 1}', param_hint="'--class'")
    return torch.nn.functional.one_hot(torch.tensor([class_idx]), num_classes).to(device=device,
                                                                                  dtype=torch.float32)


def require_file(path, option):
    """Missing inputs are usage errors naming the option (exit code 2)."""
    if not os.path.isfile(path):
        raise click.BadParameter(f'file not found: {path}', param_hint=f"'{option}'")


def load_generator(network, device):
    """G_ema (else G) of a pickle given by path or URL, frozen, on `device`; failures become one-line errors."""
    if not dnnlib.util.is_url(network, allow_file_urls=True):
        require_file(network, '--network')
    print(f'Loading networks from "{network}"...')
    try:
        nets = legacy.load_network(network)
    except (OSError, EOFError) as err:
        raise click.ClickException(f'cannot read {network}: {err}')
    except Exception as err:  # any unpickling failure: a message, not a traceback
        raise click.ClickException(f'cannot load {network}: {err}')
    G = next((nets[key] for key in ('G_ema', 'G') if nets[key] is not None), None)
    if G is None:
        raise click.ClickException(f'{network} contains no generator')
    if getattr(G, 'eval_bn', None) == 'batch':   # FastGAN trained with --ema-bn=batch (recorded in the network)
        print('Note: this generator normalises with the statistics of the batch it draws (--ema-bn=batch), '
              'and each image here is a batch of one')
    return G.eval().requires_grad_(False).to(device)


def _read_projected_ws(path, G, device):
    """The `w` array of a projector.py result, checked against G's [num_ws, w_dim]."""
    try:
        ws = np.load(path)['w']
    except Exception as err:
        raise click.ClickException(f'cannot read w from {path}: {err}')
    want = (G.num_ws, G.w_dim)
    if ws.ndim != 3 or tuple(ws.shape[1:]) != want:
        raise click.ClickException(f'{path}: w has shape {tuple(ws.shape)}, '
                                   f'this network needs [N, {want[0]}, {want[1]}]')
    return torch.tensor(ws, dtype=torch.float32, device=device)


def _seed_images(G, seeds, label, truncation_psi, noise_mode):
    """Yields (file name, image) per seed; z is float64 from numpy, as pickles of any era expect."""
    for count, seed in enumerate(seeds, start=1):
        print(f'Generating image for seed {seed} ({count}/{len(seeds)}) ...')
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(label.device)
        yield f'seed{seed:04d}.png', G(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode)


def _projected_images(G, ws, noise_mode):
    """Yields (file name, image) per projected w, straight through the synthesis network."""
    for index in range(len(ws)):
        print(f'Generating image for projected w {index} ({index + 1}/{len(ws)}) ...')
        yield f'proj{index:02d}.png', G.synthesis(ws[index:index + 1], noise_mode=noise_mode)


def _write_images(named_images, outdir):
    os.makedirs(outdir, exist_ok=True)
    with torch.no_grad():
        for name, img in named_images:
            save_png(image_to_uint8(img)[0], os.path.join(outdir, name))


@click.command()
@click.option('--network', 'network_pkl', required=True, metavar='PATH',
              help='Model file (.safetensors, no code runs) or pickle (file or URL)')
@click.option('--seeds', callback=range_callback, metavar='LIST', help='Seeds to render, e.g. 0-3,7')
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True, callback=finite_callback,
              help='Truncation: 1 keeps w as mapped, smaller values pull it towards w_avg')
@click.option('--class', 'class_idx', type=int, metavar='INT', help='Class index for a conditional network')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help='Per-pixel noise: the stored buffers, fresh noise, or none')
@click.option('--projected-w', metavar='FILE', help='projected_w.npz from projector.py (w: [N, num_ws, w_dim])')
@click.option('--outdir', type=str, required=True, metavar='DIR', help='Folder for the PNGs (created if needed)')
def generate_images(network_pkl, seeds, truncation_psi, class_idx, noise_mode, projected_w, outdir):
    """Render images with a network pickle.

    Writes seed{SEED:04d}.png per seed, or proj{IDX:02d}.png per projected w.
    """
    if projected_w is None and seeds is None:
        raise click.UsageError('give --seeds (e.g. --seeds=0-3) or --projected-w')
    if not dnnlib.util.is_url(network_pkl, allow_file_urls=True):
        require_file(network_pkl, '--network')
    if projected_w is not None:
        require_file(projected_w, '--projected-w')

    device = pick_device()
    G = load_generator(network_pkl, device)
    if projected_w is None:
        label = make_label(G, class_idx, device)
        _write_images(_seed_images(G, seeds, label, truncation_psi, noise_mode), outdir)
        return
    if seeds is not None or class_idx is not None:
        print('warning: --seeds and --class are ignored with --projected-w')
    ws = _read_projected_ws(projected_w, G, device)
    _write_images(_projected_images(G, ws, noise_mode), outdir)


if __name__ == '__main__':
    generate_images()
