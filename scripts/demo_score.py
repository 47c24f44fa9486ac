"""Score a `builtin:shapes` generator: the share of its images that the shapes classifier
(stylegan2_ada/training/shapes_classifier.py) assigns to a shape class with p >= 0.9, the same
share for the real training images, and a grid of the first generated images.

    python scripts/demo_score.py --network=RUN/network-snapshot-000008.pkl --data=shapes-32.zip \
        --grid=RUN/final-grid.png --json=RUN/score.json
"""

import json
import os
import sys

import click
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, 'stylegan2_ada')
for _path in (HARNESS, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import dnnlib  # noqa: E402
from generate import load_generator  # noqa: E402
from training import shapes_classifier  # noqa: E402
from training.training_loop import save_image_grid  # noqa: E402


def generated_images(G, num, seed, batch=64):
    """`num` images of G for latents drawn from one seeded stream, as floats in [-1, 1] (NCHW)."""
    stream = torch.Generator().manual_seed(seed)
    z = torch.randn([num, G.z_dim], generator=stream)
    c = torch.zeros([num, G.c_dim])
    if G.c_dim:
        c[torch.arange(num), torch.arange(num) % G.c_dim] = 1   # classes in turn
    out = []
    with torch.no_grad():
        for zb, cb in zip(z.split(batch), c.split(batch)):
            out.append(G(zb, cb, noise_mode='const').clamp(-1, 1))
    return torch.cat(out)


def real_images(data):
    """The data set's images as uint8 NCHW."""
    dataset = dnnlib.util.construct_class_by_name(class_name='training.dataset.ImageFolderDataset', path=data)
    try:
        return torch.from_numpy(np.stack([dataset[i][0] for i in range(len(dataset))]))
    finally:
        dataset.close()


def _line(name, report):
    counts = ', '.join(f'{k} {v}' for k, v in report['counts'].items())
    return (f'{name}: {100 * report["confident_share"]:.1f} % of {report["num_images"]} images are a shape with '
            f'p >= {report["threshold"]:g} ({counts})')


@click.command()
@click.option('--network', required=True, help='Snapshot pickle of the generator')
@click.option('--data', help='The training data (zip or folder) whose share to report beside')
@click.option('--num', type=click.IntRange(min=1), default=256, show_default=True, help='Generated images scored')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the latents')
@click.option('--grid', 'grid_path', help='Write the first 64 generated images as an 8x8 grid here')
@click.option('--json', 'json_path', help='Write the figures here')
def main(network, data, num, seed, grid_path, json_path):
    """Share of generated (and real) images the shapes classifier is confident about."""
    with torch.no_grad():
        _score(network, data, num, seed, grid_path, json_path)


def _score(network, data, num, seed, grid_path, json_path):
    clf = shapes_classifier.load_classifier(verbose=True)
    G = load_generator(network, torch.device('cpu'))
    fakes = generated_images(G, num, seed)
    result = dict(network=os.path.abspath(network), generated=shapes_classifier.classify(clf, fakes))
    print(_line('generated', result['generated']))
    if data:
        result['real'] = shapes_classifier.classify(clf, real_images(data))
        print(_line('real (training set)', result['real']))
    if grid_path:
        cells = min(8, int(np.sqrt(num)))
        save_image_grid(fakes[:cells * cells].numpy(), grid_path, drange=[-1, 1], grid_size=(cells, cells))
        print(f'grid of {cells}x{cells} generated images: {grid_path}')
    if json_path:
        with open(json_path, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
