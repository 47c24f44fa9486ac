"""`builtin:shapes`: a small, labelled, procedurally drawn few-shot data set.

Every image is one flat-coloured shape (circle, square, triangle, cross or
ring) on a soft two-tone vertical gradient, with its colour, position, size
and background drawn from a fixed seed. The set is tiny (100 images by
default), smooth and low in detail, so a small GAN learns it in a few kimg at
32x32, and it needs no download.

The drawing only uses additions, multiplications and comparisons on float64
plus integer counts (anti-aliasing by 4x4 supersampling), and the random
numbers come from numpy's legacy `RandomState`, whose streams are frozen, so
the same arguments give the same bytes on every run and every machine.

    images, labels, class_names = make_shapes(num_images=100, resolution=64)
    path = materialize_builtin('builtin:shapes', 'cache/datasets')   # folder for ImageFolderDataset
"""
import json
import os
import re
from typing import List, Optional, Tuple

import numpy as np

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring")
BUILTIN_PREFIX = "builtin:"
DEFAULT_NUM_IMAGES = 100
DEFAULT_RESOLUTION = 64
DEFAULT_SEED = 0
_SUPERSAMPLE = 4

# Saturated, mid-dark shape colours that stand out on the pastel backgrounds.
_PALETTE = np.array([
    [0.80, 0.15, 0.15],  # red
    [0.10, 0.55, 0.20],  # green
    [0.15, 0.25, 0.80],  # blue
    [0.90, 0.50, 0.05],  # orange
    [0.50, 0.15, 0.65],  # purple
    [0.05, 0.50, 0.55],  # teal
], dtype=np.float64)


# Drawing


def _coverage(kind: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean inside-mask of one shape on the supersampled grid (coordinates in [0, 1))."""
    dx = xs - cx
    dy = ys - cy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        h = 0.82 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if kind == "triangle":
        top = cy - r
        bottom = cy + 0.8 * r
        t = (ys - top) / (bottom - top)  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= r * t)
    if kind == "cross":
        w = 0.32 * r
        return ((np.abs(dx) <= r) & (np.abs(dy) <= w)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    if kind == "ring":
        d2 = dx * dx + dy * dy
        inner = 0.55 * r
        return (d2 <= r * r) & (d2 >= inner * inner)
    raise ValueError("unknown shape kind {!r}; expected one of {}".format(kind, ", ".join(SHAPE_CLASSES)))


def make_shapes(num_images: int = DEFAULT_NUM_IMAGES, resolution: int = DEFAULT_RESOLUTION,
                seed: int = DEFAULT_SEED) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Draw the set. Returns `(images uint8 [N, res, res, 3], labels int64 [N], class_names)`.

    Classes are balanced and interleaved (image i has class i % 5). The
    geometry is defined in normalised coordinates, so other resolutions show
    the same scenes at another pixel size.
    """
    num_images = int(num_images)
    resolution = int(resolution)
    if num_images < 1:
        raise ValueError("num_images must be at least 1, got {}".format(num_images))
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError("resolution must be a power of two >= 4, got {}".format(resolution))

    rng = np.random.RandomState(int(seed))
    n_sub = resolution * _SUPERSAMPLE
    centres = (np.arange(n_sub, dtype=np.float64) + 0.5) / n_sub
    xs = centres[np.newaxis, :]
    ys = centres[:, np.newaxis]
    row_t = ((np.arange(resolution, dtype=np.float64) + 0.5) / resolution)[:, np.newaxis, np.newaxis]

    images = np.empty([num_images, resolution, resolution, 3], dtype=np.uint8)
    labels = np.arange(num_images, dtype=np.int64) % len(SHAPE_CLASSES)
    for i in range(num_images):
        kind = SHAPE_CLASSES[labels[i]]
        # Every image consumes the same number of draws, so image i never depends on the options of others.
        bg_top = rng.uniform(0.70, 0.97, size=3)
        bg_bottom = bg_top * rng.uniform(0.75, 1.0, size=3)
        colour = _PALETTE[rng.randint(len(_PALETTE))] + rng.uniform(-0.06, 0.06, size=3)
        r = rng.uniform(0.17, 0.29)
        cx = rng.uniform(0.5 - (0.48 - r), 0.5 + (0.48 - r))
        cy = rng.uniform(0.5 - (0.48 - r), 0.5 + (0.48 - r))

        inside = _coverage(kind, xs, ys, cx, cy, r)
        counts = inside.reshape(resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE).sum(axis=(1, 3), dtype=np.int64)
        cov = (counts.astype(np.float64) / (_SUPERSAMPLE * _SUPERSAMPLE))[:, :, np.newaxis]
        background = bg_top + (bg_bottom - bg_top) * row_t  # [res, 1, 3], broadcast over columns
        pixels = background * (1.0 - cov) + np.clip(colour, 0.0, 1.0) * cov
        images[i] = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return images, labels, list(SHAPE_CLASSES)


# Names and materialisation


_BUILTIN_RE = re.compile(r"^(?:builtin:)?(?P<key>[a-z]+)(?:-(?P<res>\d+))?$")


def is_builtin(name) -> bool:
    """True for `builtin:...` data names (e.g. `builtin:shapes`, `builtin:shapes-32`)."""
    return isinstance(name, str) and name.startswith(BUILTIN_PREFIX)


def list_builtins() -> List[str]:
    return [BUILTIN_PREFIX + "shapes"]


def parse_builtin(name: str) -> Tuple[str, Optional[int]]:
    """`'builtin:shapes-32'` -> `('shapes', 32)`; `'builtin:shapes'` -> `('shapes', None)`."""
    m = _BUILTIN_RE.match(str(name).strip())
    if m is None or m.group("key") != "shapes":
        raise ValueError("unknown built-in data set {!r}; available: {} (optionally with a resolution suffix, "
                         "e.g. builtin:shapes-32)".format(name, ", ".join(list_builtins())))
    res = m.group("res")
    return m.group("key"), (int(res) if res is not None else None)


def make_builtin(name: str, resolution: Optional[int] = None, num_images: Optional[int] = None,
                 seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Arrays of a built-in set by name; an explicit `resolution` wins over a name suffix."""
    key, name_res = parse_builtin(name)
    assert key == "shapes"
    res = resolution if resolution is not None else (name_res if name_res is not None else DEFAULT_RESOLUTION)
    return make_shapes(num_images=DEFAULT_NUM_IMAGES if num_images is None else num_images, resolution=res,
                       seed=DEFAULT_SEED if seed is None else seed)


def materialize_builtin(name: str, dest_dir: str, resolution: Optional[int] = None, num_images: Optional[int] = None,
                        seed: Optional[int] = None) -> str:
    """Write a built-in set as an image folder under `dest_dir` and return that folder's path.

    The folder is `dest_dir/<key>-<res>-n<N>-s<seed>` (for example
    `shapes-64-n100-s0`), with the `00000/img00000000.png` layout and a
    `dataset.json` holding labels and class names, ready for
    `ImageFolderDataset`. An existing complete copy is reused; a new one is
    written to a temporary folder and renamed into place, so a crash never
    leaves a half-written set behind.
    """
    from training.dataset import DatasetWriter, encode_png  # local import: dataset imports nothing from here

    key, name_res = parse_builtin(name)
    res = resolution if resolution is not None else (name_res if name_res is not None else DEFAULT_RESOLUTION)
    n = DEFAULT_NUM_IMAGES if num_images is None else int(num_images)
    s = DEFAULT_SEED if seed is None else int(seed)
    spec = {"name": key, "resolution": int(res), "num_images": n, "seed": s}
    path = os.path.join(dest_dir, "{}-{}-n{}-s{}".format(key, res, n, s))
    if _holds_spec(path, spec):
        return path
    images, labels, class_names = make_builtin(name, resolution=res, num_images=n, seed=s)
    os.makedirs(dest_dir, exist_ok=True)
    try:
        with DatasetWriter(path) as writer:
            for idx, img in enumerate(images):
                writer.add_image(idx, encode_png(img), label=int(labels[idx]))
            writer.finish(class_names=class_names, extra={"builtin": spec})
    except (OSError, ValueError):
        if _holds_spec(path, spec):  # another process (e.g. another rank) finished the same set first
            return path
        if os.path.exists(path):
            raise FileExistsError("{} exists but does not hold builtin:{} as asked ({}); delete it to regenerate"
                                  .format(path, key, spec)) from None
        raise
    return path


def _holds_spec(path: str, spec: dict) -> bool:
    try:
        with open(os.path.join(path, "dataset.json"), "r", encoding="utf-8") as f:
            return json.load(f).get("builtin") == spec
    except (OSError, ValueError, AttributeError):
        return False
