"""Fashion-MNIST for the CPU-scale reproduction: splits in memory and the few-shot training set.

Everything goes through the harness's dataset tool (`stylegan2_ada/dataset_tool.py`),
so the arrays here and the exported zip are the very images `train.py` sees:
28x28 padded with zeros to 32x32, grayscale uint8, class names from the tool.

    python bench/fmnist/data.py --dest=~/data/fmnist-100.zip [--per-class=10] [--seed=0]

writes the seeded, class-balanced 100-image set (10 per class) as a harness
dataset zip with labels and class names in dataset.json. The same seed gives
the same bytes.
"""
import os
import sys
from typing import List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(ROOT, "stylegan2_ada")
for _p in (ROOT, HARNESS):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import dataset_tool  # noqa: E402  (the harness's converter: IDX reader, subset selection, zip writer)

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "KDGAN_FMNIST_DIR"
CLASS_NAMES: List[str] = list(dataset_tool.FASHION_MNIST_CLASSES)
RESOLUTION = 32
PROMPT_TEMPLATE = "A photo of a {}"


def fmnist_dir(path: Optional[str] = None) -> str:
    """The folder holding the IDX files: `path`, else $KDGAN_FMNIST_DIR, else Debian's location."""
    return os.path.expanduser(path or os.environ.get(ENV_VAR) or DEFAULT_DIR)


def is_available(path: Optional[str] = None) -> bool:
    folder = fmnist_dir(path)
    return os.path.isdir(folder) and dataset_tool.is_idx_folder(folder)


def load_split(split: str = "train", path: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(images uint8 [N, 32, 32], labels int64 [N], class names) of the 'train' (60k) or 'test' (10k) split."""
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test', got {!r}".format(split))
    src = dataset_tool.open_idx(fmnist_dir(path), split)
    images = np.ascontiguousarray(src.images)
    labels = np.asarray(src.labels, dtype=np.int64)
    assert images.dtype == np.uint8 and images.shape[1:] == (RESOLUTION, RESOLUTION), images.shape
    assert labels.shape == (images.shape[0],)
    if src.class_names != CLASS_NAMES:
        raise ValueError("{}: these IDX files are not Fashion-MNIST (class names {})".format(
            fmnist_dir(path), src.class_names))
    return images, labels, list(src.class_names)


def prompts(class_names: Optional[List[str]] = None, template: str = PROMPT_TEMPLATE) -> List[str]:
    """KD-DLGAN's captions: one per class, "A photo of a {label}"."""
    return [template.format(name) for name in (class_names or CLASS_NAMES)]


def few_shot_indices(labels: np.ndarray, per_class: int = 10, seed: int = 0) -> List[int]:
    """Indices (sorted) of the seeded class-balanced subset, exactly as the dataset tool picks them."""
    return dataset_tool.select_indices(len(labels), [int(x) for x in labels], per_class, seed, None)


def export_few_shot(dest: str, per_class: int = 10, seed: int = 0, path: Optional[str] = None,
                    log=print) -> dict:
    """Write the few-shot training set (train split, `per_class` images of each class) as a harness dataset.

    `dest` ending in .zip gives a zip (identical bytes for the same seed);
    otherwise a folder. Returns the dataset tool's summary plus the chosen indices.
    """
    summary = dataset_tool.convert_dataset(source=fmnist_dir(path), dest=dest, split="train",
                                           subset_per_class=per_class, seed=seed, log=log)
    _images, labels, _names = load_split("train", path)
    summary["indices"] = few_shot_indices(labels, per_class, seed)
    return summary


def main(argv=None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description="Export the seeded class-balanced Fashion-MNIST few-shot set.")
    parser.add_argument("--dest", required=True, help="output .zip (or folder)")
    parser.add_argument("--per-class", type=int, default=10, help="images per class (default 10: 100 images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default=None, help="folder with the IDX files (default: $%s or %s)" % (
        ENV_VAR, DEFAULT_DIR))
    args = parser.parse_args(argv)
    try:
        export_few_shot(args.dest, per_class=args.per_class, seed=args.seed, path=args.source)
    except dataset_tool.DatasetError as err:
        sys.exit("error: {}".format(err))


if __name__ == "__main__":
    main()
