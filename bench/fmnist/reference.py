"""Reference points for the Fashion-MNIST comparison's FID/KID: what a perfect generator and a
pure memoriser would score, in the same feature space and against the same 10k test images.

    python -m bench.fmnist.reference --outdir=runs/fmnist-cpu     (from the repository root)

- "ideal": 5,000 training-split images outside the few-shot set (seeded, class-balanced),
  exported at the comparison's resolution by the same dataset tool: a generator of the true
  distribution scores about this.
- "memorise": the 100 few-shot training images, drawn 5,000 times with replacement: a generator
  that only replays its training set scores about this. Few-shot GANs are judged by how far
  below it they get.
- "untrained": see the tick-0 snapshots of a run (compare.py without --skip-start).

Writes `<outdir>/data/reference.json` and prints a small table.
"""
import argparse
import io
import json
import os
import zipfile

import numpy as np
import PIL.Image

from bench.fmnist import data as fmnist_data
from bench.fmnist import evaluator as fmnist_evaluator
import dataset_tool  # noqa: E402  (on sys.path through bench.fmnist.data)


def read_zip(path: str) -> np.ndarray:
    """uint8 [N, 1, H, W] of a grayscale harness dataset zip, in file order."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith('.png'))
        images = [np.asarray(PIL.Image.open(io.BytesIO(z.read(n)))) for n in names]
    arr = np.stack(images)
    assert arr.ndim == 3, arr.shape
    return arr[:, None]


def references(outdir: str, num: int = 5000, seed: int = 0, log=print) -> dict:
    with open(os.path.join(outdir, 'data', 'prepare.json'), encoding='utf-8') as f:
        prep = json.load(f)
    det = fmnist_evaluator.load(prep['evaluator'])
    test = fmnist_evaluator.run_batched(det, read_zip(prep['fmnist_test']), return_features=True).double().numpy()
    few = read_zip(prep['fmnist_train'])
    rng = np.random.RandomState(seed)
    replay = few[rng.randint(0, few.shape[0], size=num)]
    ideal_zip = os.path.join(outdir, 'data', 'fmnist-ideal{}-{}.zip'.format(num, prep['resolution']))
    if not os.path.isfile(ideal_zip):
        # Seed 1 of the class-balanced picker: a different draw from the few-shot set's seed 0.
        dataset_tool.convert_dataset(source=fmnist_data.fmnist_dir(), dest=ideal_zip, split='train',
                                     subset_per_class=num // 10, seed=prep['seed'] + 1,
                                     resolution=prep['resolution'], log=log)
    ideal = read_zip(ideal_zip)
    out = {}
    for name, images in (('ideal', ideal), ('memorise', replay)):
        feats = fmnist_evaluator.run_batched(det, images, return_features=True).double().numpy()
        out[name] = fmnist_evaluator.feature_distances(feats, test, seed=seed)
        log('{:9s} FID {:8.2f}   KID {:.4f}   ({} images)'.format(name, out[name]['fid'], out[name]['kid'],
                                                                   images.shape[0]))
    with open(os.path.join(outdir, 'data', 'reference.json'), 'w', encoding='utf-8') as f:
        json.dump(dict(out, num=num, seed=seed, evaluator=prep['evaluator']), f, indent=2)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--outdir', required=True, help='a compare.py --budget=cpu|gpu output folder')
    parser.add_argument('--num', type=int, default=5000, help='images per reference set (as the metric generates)')
    args = parser.parse_args(argv)
    references(os.path.expanduser(args.outdir), num=args.num)


if __name__ == '__main__':
    main()
