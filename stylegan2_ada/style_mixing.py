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

Without --styles the split is chosen for the network loaded, and printed with
the reason: a `mixing_styles` list the generator (or its synthesis) declares;
for FastGAN (two styles) style 1, the input of its skip-layer excitations
(appearance), so each row keeps its layout; for a StyleGAN2 the coarse layers
0-6, or the coarser half of the styles where 0-6 would take all of them (a
mix that takes every style just repeats the column image).
"""

import os

import click
import numpy as np
import torch

import generate

_DEFAULT_STYLES = range(7)   # the coarse layers of a 1024x1024 StyleGAN2, cut to the network's num_ws


def map_seeds(G, seeds, label, truncation_psi):
    """{seed: w [num_ws, w_dim]}, all seeds mapped in one batch, pulled towards w_avg when psi != 1."""
    latents = np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])
    z = torch.from_numpy(latents).to(label.device).to(torch.float32)
    ws = G.mapping(z, label.expand(len(seeds), -1))
    if ws.ndim != 3 or ws.shape[1] != G.num_ws:
        raise click.ClickException(f'G.mapping returned shape {tuple(ws.shape)}; expected [N, {G.num_ws}, w_dim]')
    if truncation_psi != 1:
        centre = getattr(G.mapping, 'w_avg', None)
        if centre is None:
            raise click.UsageError('this network has no w_avg, so it cannot be truncated; use --trunc=1')
        ws = centre + (ws - centre) * truncation_psi
    return dict(zip(seeds, ws))


def _mixed(w_row, w_col, styles):
    """Row latent with the listed style layers taken from the column latent."""
    out = w_row.clone()
    out[styles] = w_col[styles]
    return out


def mix_images(G, w_dict, row_seeds, col_seeds, col_styles, noise_mode):
    """{(row, col): HWC uint8} for every pair, plus (seed, seed) for each parent unmixed."""
    parents = [((seed, seed), w_dict[seed]) for seed in dict.fromkeys(row_seeds + col_seeds)]
    children = [((row, col), _mixed(w_dict[row], w_dict[col], col_styles)) for row in row_seeds for col in col_seeds]
    images = {}
    for key, w in parents + children:   # one at a time, in this order: --noise-mode=random draws per image
        images[key] = generate.image_to_uint8(G.synthesis(w[None], noise_mode=noise_mode))[0]
    return images


def save_png(img, path):
    generate.save_png(img, path)


def make_grid(images, row_seeds, col_seeds):
    """One canvas: parents on the first row and column, mixes inside, the corner left black."""
    height, width, channels = next(iter(images.values())).shape
    cells = {(0, j): (col, col) for j, col in enumerate(col_seeds, start=1)}
    for i, row in enumerate(row_seeds, start=1):
        cells[i, 0] = (row, row)
        cells.update({(i, j): (row, col) for j, col in enumerate(col_seeds, start=1)})
    canvas = np.zeros([height * (len(row_seeds) + 1), width * (len(col_seeds) + 1), channels], dtype=np.uint8)
    for (i, j), key in cells.items():
        canvas[i * height:(i + 1) * height, j * width:(j + 1) * width] = images[key]
    return canvas


def default_styles(G):
    """(styles, why): the split --styles defaults to for this network; see the module docstring."""
    synthesis = getattr(G, 'synthesis', None)
    declared = getattr(G, 'mixing_styles', None) or getattr(synthesis, 'mixing_styles', None)
    if declared:
        return [int(i) for i in declared], 'the split this network declares (mixing_styles)'
    if G.num_ws == 2 and getattr(synthesis, 'sle_sizes', None):
        return [1], ("FastGAN: style 1 drives the skip-layer excitation inputs (appearance), style 0 the "
                     "layout, which stays the row's")
    coarse = [i for i in _DEFAULT_STYLES if i < G.num_ws]
    if len(coarse) < G.num_ws:
        return coarse, 'the coarse layers'
    half = list(range(max(1, G.num_ws // 2)))
    return half, (f'the coarser half: this network has {G.num_ws} styles, and taking all of them would only '
                  f'repeat the column image')


def _check_styles(col_styles, num_ws):
    outside = [str(i) for i in col_styles if i < 0 or i >= num_ws]
    if outside:
        raise click.BadParameter(f'{", ".join(outside)} out of range: this network has {num_ws} styles '
                                 f'(0-{num_ws - 1})', param_hint="'--styles'")
    return col_styles


@click.command()
@click.option('--network', 'network_pkl', required=True, metavar='PATH',
              help='Model file (.safetensors) or pickle (file or URL)')
@click.option('--rows', 'row_seeds', required=True, callback=generate.range_callback, metavar='LIST',
              help='Seeds of the base images, one per grid row')
@click.option('--cols', 'col_seeds', required=True, callback=generate.range_callback, metavar='LIST',
              help='Seeds whose styles are copied in, one per grid column')
@click.option('--styles', 'col_styles', callback=generate.range_callback, metavar='LIST',
              help="w layers taken from the column seed [default: chosen for the network and printed: "
              "FastGAN 1 (its SLE style), StyleGAN2 0-6 or the coarser half]")
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True,
              callback=generate.finite_callback,
              help='Truncation: 1 keeps w as mapped, smaller values pull it towards w_avg')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help='Per-pixel noise: the stored buffers, fresh noise, or none')
@click.option('--class', 'class_idx', type=int, metavar='INT', help='Class index for a conditional network')
@click.option('--outdir', type=str, required=True, metavar='DIR', help='Folder for the PNGs (created if needed)')
def generate_style_mix(network_pkl, row_seeds, col_seeds, col_styles, truncation_psi, noise_mode, class_idx, outdir):
    """Mix the styles of column seeds into row seeds and save the pairs and a grid."""
    device = generate.pick_device()
    G = generate.load_generator(network_pkl, device)
    if col_styles is None:
        col_styles, why = default_styles(G)
        print(f'No --styles: styles {",".join(map(str, col_styles))}, {why}')
    col_styles = _check_styles(col_styles, G.num_ws)
    if sorted(set(col_styles)) == list(range(G.num_ws)):
        print(f'Warning: --styles takes all {G.num_ws} styles from the columns, so every mix repeats its column image')
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
