"""Generate images with a trained network pickle.

Examples:
    python generate.py --outdir=out --seeds=0-3,7 --network=network-snapshot-000100.pkl
    python generate.py --outdir=out --seeds=0-9 --class=3 --trunc=0.7 --network=cifar.pkl
    python generate.py --outdir=out --projected-w=projected_w.npz --network=ffhq.pkl
"""

import os
import re

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
import legacy


def parse_range(text):
    """'0-3,7' -> [0, 1, 2, 3, 7]. Seeds must lie in [0, 2**32) for numpy's RandomState."""
    values = []
    for part in text.split(','):
        part = part.strip()
        match = re.fullmatch(r'(\d+)\s*-\s*(\d+)', part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f'range {part!r} runs backwards')
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            values.append(int(part))
        else:
            raise ValueError(f'{part!r} is neither a number nor a range like 0-3')
    for value in values:
        if value >= 2 ** 32:
            raise ValueError(f'seed {value} is too large (must be below 2**32)')
    return values


def _seeds_option(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_range(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param)


def _to_pil(img):
    """[1, C, H, W] in about [-1, 1] -> a PIL image."""
    img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()
    if img.shape[2] == 1:
        return PIL.Image.fromarray(img[:, :, 0], 'L')
    if img.shape[2] == 3:
        return PIL.Image.fromarray(img, 'RGB')
    raise click.ClickException(f'cannot save images with {img.shape[2]} channels as PNG')


def make_label(G, class_idx, device):
    """The [1, c_dim] one-hot label for `--class`, with clear errors when it does not fit G."""
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None:
            raise click.UsageError(f'this network is conditional ({G.c_dim} classes): give --class=0..{G.c_dim - 1}')
        if not 0 <= class_idx < G.c_dim:
            raise click.BadParameter(f'{class_idx} is not in 0..{G.c_dim - 1}', param_hint="'--class'")
        label[:, class_idx] = 1
    elif class_idx is not None:
        raise click.UsageError('--class was given, but this network is unconditional (c_dim=0)')
    return label


def load_generator(network, device):
    """Open a pickle (path or URL) and return its G_ema on `device`, with clear errors."""
    if not dnnlib.util.is_url(network, allow_file_urls=True) and not os.path.isfile(network):
        raise click.BadParameter(f'file not found: {network}', param_hint="'--network'")
    print(f'Loading networks from "{network}"...')
    try:
        with dnnlib.util.open_url(network) as f:
            data = legacy.load_network_pkl(f)
    except (OSError, EOFError) as err:
        raise click.ClickException(f'cannot read {network}: {err}')
    except Exception as err:  # unpickling errors of any kind: report, no traceback
        raise click.ClickException(f'cannot load {network}: {err}')
    G = data['G_ema'] if data['G_ema'] is not None else data['G']
    if G is None:
        raise click.ClickException(f'{network} contains no generator')
    return G.eval().requires_grad_(False).to(device)


@click.command()
@click.option('--network', 'network_pkl', help='Network pickle filename or URL', required=True, metavar='PATH')
@click.option('--seeds', callback=_seeds_option, help='Random seeds, e.g. 0-3,7')
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@click.option('--class', 'class_idx', type=int, help='Class label (needed by conditional networks)')
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const',
              show_default=True)
@click.option('--projected-w', help='Projection result file (npz with w: [N, num_ws, w_dim])', metavar='FILE')
@click.option('--outdir', help='Where to save the output images', type=str, required=True, metavar='DIR')
def generate_images(network_pkl, seeds, truncation_psi, class_idx, noise_mode, projected_w, outdir):
    """Generate images using a pretrained network pickle.

    Writes seed{SEED:04d}.png per seed, or proj{IDX:02d}.png per projected w.
    """
    if seeds is None and projected_w is None:
        raise click.UsageError('give --seeds (e.g. --seeds=0-3) or --projected-w')
    if not dnnlib.util.is_url(network_pkl, allow_file_urls=True) and not os.path.isfile(network_pkl):
        raise click.BadParameter(f'file not found: {network_pkl}', param_hint="'--network'")
    if projected_w is not None and not os.path.isfile(projected_w):
        raise click.BadParameter(f'file not found: {projected_w}', param_hint="'--projected-w'")

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    print(f'Using device: {device}' + ('' if device.type == 'cuda' else ' (no CUDA device found; this is slower)'))
    G = load_generator(network_pkl, device)
    os.makedirs(outdir, exist_ok=True)

    # Projected ws: one image per w; seeds and class do not apply.
    if projected_w is not None:
        if seeds is not None or class_idx is not None:
            print('warning: --seeds and --class are ignored with --projected-w')
        try:
            ws = np.load(projected_w)['w']
        except Exception as err:
            raise click.ClickException(f'cannot read w from {projected_w}: {err}')
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
            raise click.ClickException(f'{projected_w}: w has shape {tuple(ws.shape)}, '
                                       f'this network needs [N, {G.num_ws}, {G.w_dim}]')
        ws = torch.tensor(ws, dtype=torch.float32, device=device)
        with torch.no_grad():
            for idx, w in enumerate(ws):
                print(f'Generating image for projected w {idx} ({idx + 1}/{len(ws)}) ...')
                img = G.synthesis(w.unsqueeze(0), noise_mode=noise_mode)
                _to_pil(img).save(os.path.join(outdir, f'proj{idx:02d}.png'))
        return

    label = make_label(G, class_idx, device)

    with torch.no_grad():
        for idx, seed in enumerate(seeds):
            print(f'Generating image for seed {seed} ({idx + 1}/{len(seeds)}) ...')
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(device)
            img = G(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode)
            _to_pil(img).save(os.path.join(outdir, f'seed{seed:04d}.png'))


if __name__ == '__main__':
    generate_images()
