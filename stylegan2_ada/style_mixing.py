"""Style mixing: coarse-to-fine layers of one latent replaced by another's.

Each row seed gives the base image; each column seed gives the styles copied
into the layers listed by --styles (w indices, 0 = coarsest). Writes
`{row}-{col}.png` for every pair (and `{seed}-{seed}.png` for the unmixed
images) plus `grid.png`: column sources along the top, row sources down the
left, mixes in between.

Examples:
    python style_mixing.py --outdir=out --rows=85,100,75,458,1500 --cols=55,821,1789,293 --network=ffhq.pkl
    python style_mixing.py --outdir=out --rows=0-3 --cols=10-12 --styles=0-3 --network=run/network-snapshot-000010.pkl

Any generator with `.mapping(z, c)`, `.synthesis(ws, noise_mode=...)`,
`z_dim`, `c_dim` and `num_ws` works (plug-in networks included);
truncation needs the mapping's `w_avg`.
"""

import os

import click
import numpy as np
import PIL.Image
import torch

import generate


def _range_option(ctx, param, value):
    if value is None:
        return None
    try:
        return generate.parse_range(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param)


def map_seeds(G, seeds, label, truncation_psi):
    """{seed: w [num_ws, w_dim]} for each seed, truncated towards w_avg when psi != 1."""
    z = torch.from_numpy(np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])).to(label.device)
    ws = G.mapping(z.to(torch.float32), label.expand(len(seeds), -1))
    if ws.ndim != 3 or ws.shape[1] != G.num_ws:
        raise click.ClickException(f'G.mapping returned shape {tuple(ws.shape)}; expected [N, {G.num_ws}, w_dim]')
    if truncation_psi != 1:
        w_avg = getattr(G.mapping, 'w_avg', None)
        if w_avg is None:
            raise click.UsageError('this network has no w_avg, so it cannot be truncated; use --trunc=1')
        ws = w_avg + (ws - w_avg) * truncation_psi
    return {seed: w for seed, w in zip(seeds, ws)}


def mix_images(G, w_dict, row_seeds, col_seeds, col_styles, noise_mode):
    """{(row, col): uint8 HWC image} for every pair and for each seed with itself."""
    images = {}

    def render(w):
        img = G.synthesis(w.unsqueeze(0), noise_mode=noise_mode)
        return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()

    for seed in dict.fromkeys(row_seeds + col_seeds):
        images[(seed, seed)] = render(w_dict[seed])
    for row in row_seeds:
        for col in col_seeds:
            w = w_dict[row].clone()
            w[col_styles] = w_dict[col][col_styles]
            images[(row, col)] = render(w)
    return images


def save_png(img, path):
    PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img, 'L' if img.shape[2] == 1 else 'RGB').save(path)


def make_grid(images, row_seeds, col_seeds):
    """Column sources along the top, row sources down the left, the mixes inside; the
    top-left cell stays black."""
    H, W, C = next(iter(images.values())).shape
    canvas = np.zeros([H * (len(row_seeds) + 1), W * (len(col_seeds) + 1), C], dtype=np.uint8)
    for i, row in enumerate([None] + row_seeds):
        for j, col in enumerate([None] + col_seeds):
            if row is None and col is None:
                continue
            key = (col, col) if row is None else (row, row) if col is None else (row, col)
            canvas[H * i:H * (i + 1), W * j:W * (j + 1)] = images[key]
    return canvas


@click.command()
@click.option('--network', 'network_pkl', help='Network pickle filename or URL', required=True, metavar='PATH')
@click.option('--rows', 'row_seeds', callback=_range_option, help='Random seeds for image rows', required=True)
@click.option('--cols', 'col_seeds', callback=_range_option, help='Random seeds for image columns', required=True)
@click.option('--styles', 'col_styles', callback=_range_option,
              help='Style layer range taken from the columns  [default: 0-6, limited to the network\'s num_ws]')
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const',
              show_default=True)
@click.option('--class', 'class_idx', type=int, help='Class label (needed by conditional networks)')
@click.option('--outdir', help='Where to save the output images', type=str, required=True, metavar='DIR')
def generate_style_mix(network_pkl, row_seeds, col_seeds, col_styles, truncation_psi, noise_mode, class_idx, outdir):
    """Generate images using pretrained network pickle, mixing styles of the column seeds into the row seeds."""
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    print(f'Using device: {device}')
    G = generate.load_generator(network_pkl, device)

    if col_styles is None:
        col_styles = [i for i in range(7) if i < G.num_ws]  # upstream's 0-6, within smaller networks
    bad = [i for i in col_styles if not 0 <= i < G.num_ws]
    if bad:
        raise click.BadParameter(f'{", ".join(map(str, bad))} out of range: this network has {G.num_ws} styles '
                                 f'(0-{G.num_ws - 1})', param_hint="'--styles'")

    label = generate.make_label(G, class_idx, device)

    os.makedirs(outdir, exist_ok=True)
    with torch.no_grad():
        print('Generating W vectors...')
        w_dict = map_seeds(G, list(dict.fromkeys(row_seeds + col_seeds)), label, truncation_psi)
        print(f'Generating {len(row_seeds) * len(col_seeds)} style-mixed images '
              f'(styles {",".join(map(str, col_styles))} from the columns)...')
        images = mix_images(G, w_dict, row_seeds, col_seeds, col_styles, noise_mode)

    print('Saving images...')
    for (row, col), img in images.items():
        save_png(img, os.path.join(outdir, f'{row}-{col}.png'))
    print('Saving image grid...')
    save_png(make_grid(images, row_seeds, col_seeds), os.path.join(outdir, 'grid.png'))
    print(f'Wrote {len(images)} images and grid.png to {outdir}')


if __name__ == '__main__':
    generate_style_mix()

