"""Convert image collections into the training layout that ImageFolderDataset reads.

Output (a folder, or a `.zip` when --dest ends in .zip):

    00000/img00000000.png ... 00000/img00000999.png, 00001/img00001000.png, ...
    dataset.json   {"labels": [["00000/img00000000.png", 6], ...] or null, "class_names": [...]}

Sources:
  * a folder of images (searched recursively) or a zip of images; labels and
    class names come from a dataset.json at its top when there is one;
  * CIFAR-10's or CIFAR-100's python archive (cifar-10-python.tar.gz, cifar-100-python.tar.gz or the
    extracted folder; CIFAR-100 with its 100 fine labels), class names from the archive's meta file;
    --subset-fraction=0.1 (0.2) takes the seeded class-balanced 10 % (20 %) of the data-limited runs;
  * MNIST-format IDX files: a folder holding train-images-idx3-ubyte[.gz] and
    train-labels-idx1-ubyte[.gz] (t10k-* for --split=test); Fashion-MNIST is
    recognised and gets its class names, digits get '0'..'9'; 28x28 images
    are padded to 32x32;
  * an LMDB (folder holding data.mdb), when the `lmdb` package is installed;
  * `builtin:shapes` (or `builtin:shapes-32`): our procedurally drawn few-shot set.

Examples:

    python dataset_tool.py --source=/usr/share/datasets/fashion-mnist --dest=~/data/fmnist-100.zip \\
        --subset-per-class=10 --seed=0
    python dataset_tool.py --source=~/photos --dest=~/data/photos-256.zip --resolution=256 --transform=center-crop
    python dataset_tool.py --source=builtin:shapes --dest=~/data/shapes-32.zip --resolution=32

The result is written next to --dest under a temporary name and renamed at
the end, so a failed conversion leaves nothing behind; a non-empty --dest is
never overwritten.

Nothing changes silently: EXIF orientation is applied (photos come out upright
as viewers show them); transparent pixels are composited on --background
(white unless told otherwise); a non-square image is never stretched unless
--transform=stretch says so (--transform=center-crop keeps its aspect ratio);
without --resolution the size comes from the whole set (the largest power of
two not above most images' shorter side) and the reason is printed; files that
are not images (.DS_Store, notes.txt, macOS `._*` companions) are skipped. The
run ends with a summary: images written, files skipped per reason, images
upscaled, stretched, rotated and composited.
"""
import gzip
import io
import json
import os
import pickle
import tarfile
import time
import zipfile
from typing import Callable, List, Optional, Tuple

import click
import numpy as np
import PIL.Image
import PIL.ImageColor
import PIL.ImageOps

import dnnlib
from training import shapes as shapes_lib
from training.dataset import (METADATA_NAME, DatasetError, DatasetWriter, channels_of_mode, check_labels,
                              encode_png, image_header, is_image_file, is_power_of_two, labels_from_metadata,
                              pil_to_array)

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
MNIST_CLASSES = [str(i) for i in range(10)]
# The first labels of each official IDX file tell MNIST and Fashion-MNIST apart when the path does not.
_FASHION_LABEL_HEADS = {"train": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9],
                        "test": [9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1]}
_RESAMPLE = {"box": PIL.Image.BOX, "lanczos": PIL.Image.LANCZOS}
_EXIF_ORIENTATION = 0x0112
_EXIF_FORMATS = (".jpg", ".jpeg", ".tif", ".tiff", ".webp")   # where cameras write an orientation tag
_SYSTEM_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")


def skip_reason(name: str) -> Optional[str]:
    """Why a file of a folder/zip source is not converted, or None for an image to convert."""
    base = name.rsplit("/", 1)[-1]
    if name == METADATA_NAME:
        return None
    if base in _SYSTEM_FILES or base.startswith("._") or name.startswith("__MACOSX/"):
        return "system file (macOS/Windows folder metadata)"
    if not is_image_file(name):
        return "not an image (by its extension)"
    return None


# Sources: each gives display names, labels, class names and a loader per item.


class Source:
    """A list of items, each loadable as a uint8 HW or HWC array (or PIL image)."""

    def __init__(self, description: str, names: List[str], labels: Optional[list], class_names: Optional[List[str]]):
        self.description = description
        self.names = names
        self.labels = labels
        self.class_names = class_names
        self.skipped = getattr(self, "skipped", {})   # reason -> names of files left out

    def __len__(self) -> int:
        return len(self.names)

    def header(self, i: int) -> Tuple[int, int, str]:
        """(width, height, PIL mode) without decoding all pixels where possible."""
        raise NotImplementedError

    def load(self, i: int):
        raise NotImplementedError

    def where(self, i: int) -> str:
        return self.names[i]

    def close(self) -> None:
        pass


class ArraySource(Source):
    """Images already in memory: uint8 [N, H, W] or [N, H, W, C]."""

    def __init__(self, description: str, images: np.ndarray, labels, class_names, names: Optional[List[str]] = None):
        images = np.asarray(images)
        assert images.dtype == np.uint8 and images.ndim in (3, 4), (images.dtype, images.shape)
        if names is None:
            names = ["{}[{}]".format(description, i) for i in range(images.shape[0])]
        super().__init__(description, names, None if labels is None else [int(x) for x in labels], class_names)
        self.images = images
        self._mode = "L" if images.ndim == 3 or images.shape[3] == 1 else "RGB"

    def header(self, i):
        return int(self.images.shape[2]), int(self.images.shape[1]), self._mode

    def load(self, i):
        return self.images[i]


class FileSource(Source):
    """A folder (recursive) or zip of images, labels from its dataset.json."""

    def __init__(self, path: str):
        self.path = path
        self._zip = None
        if os.path.isdir(path):
            self.kind = "dir"
            all_names = sorted(os.path.relpath(os.path.join(root, f), start=path).replace(os.sep, "/")
                               for root, _dirs, files in os.walk(path) for f in files)
        else:
            self.kind = "zip"
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise DatasetError("{}: not a readable zip archive ({}); re-create the archive".format(path, err)
                                   ) from None
            all_names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        self.skipped = {}
        for name in all_names:
            if name != METADATA_NAME and skip_reason(name) is not None:
                self.skipped.setdefault(skip_reason(name), []).append(name)
        names = [n for n in all_names if is_image_file(n) and skip_reason(n) is None]
        if not names:
            raise DatasetError("{}: no images found (png/jpg/...); point --source at a folder or zip of images, "
                               "a CIFAR-10 archive, an MNIST IDX folder or builtin:shapes".format(path))
        labels, class_names = None, None
        if METADATA_NAME in all_names:
            meta_where = self._where_name(METADATA_NAME)
            try:
                with self._open(METADATA_NAME) as f:
                    meta = json.load(f)
            except (OSError, ValueError) as err:
                raise DatasetError("{}: not valid JSON ({}); fix or delete it".format(meta_where, err)) from None
            label_map, class_names = labels_from_metadata(meta, meta_where)
            if label_map is not None:
                have = set(names)
                missing = [f for f in label_map if f not in have]
                if missing:
                    raise DatasetError("{}: names {} file(s) missing from the source, e.g. {!r}; restore them or "
                                       "remove their entries".format(meta_where, len(missing), missing[0]))
                unlabelled = [f for f in names if f not in label_map]
                if unlabelled:
                    raise DatasetError("{}: image {!r} has no label; add an entry for it or set \"labels\": null"
                                       .format(meta_where, unlabelled[0]))
                raw = [label_map[f] for f in names]
                checked = check_labels(raw, names, meta_where, class_names)   # before anything is written
                labels = checked.tolist() if checked.dtype == np.int64 else raw
        super().__init__(path, names, labels, class_names)

    def _open(self, name: str):
        if self.kind == "dir":
            return open(os.path.join(self.path, name), "rb")
        return self._zip.open(name, "r")

    def _where_name(self, name: str) -> str:
        return os.path.join(self.path, name) if self.kind == "dir" else "{} (in {})".format(name, self.path)

    def where(self, i):
        return self._where_name(self.names[i])

    def header(self, i):
        """(width, height, mode) as the image will be converted: EXIF rotations of 90 degrees swap the sides."""
        with self._open(self.names[i]) as f:
            w, h, mode = image_header(f)
            if self.names[i].lower().endswith(_EXIF_FORMATS):
                f.seek(0)
                with PIL.Image.open(f) as img:
                    if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                        w, h = h, w
        return w, h, mode

    def load(self, i):
        with self._open(self.names[i]) as f:
            with PIL.Image.open(f) as img:
                img.load()
                return img.copy()

    def close(self):
        if self._zip is not None:
            self._zip.close()
            self._zip = None


class LmdbSource(Source):
    """An LMDB of encoded images (e.g. LSUN); needs the `lmdb` package."""

    def __init__(self, path: str):
        try:
            import lmdb  # noqa: F401  (optional dependency)
        except ImportError:
            raise DatasetError("{}: looks like an LMDB database, which needs the optional `lmdb` package; install "
                               "it with `pip install lmdb`, or export the images to a folder and use that as "
                               "--source".format(path)) from None
        self._env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=1,
                              subdir=os.path.isdir(path))
        with self._env.begin(write=False) as txn:
            keys = [bytes(k) for k, _v in txn.cursor()]
        self._keys = keys
        if not keys:
            raise DatasetError("{}: the LMDB database is empty; check --source".format(path))
        super().__init__(path, [k.decode("utf-8", "replace") for k in keys], None, None)

    def where(self, i):
        return "key {!r} (in {})".format(self.names[i], self.description)

    def load(self, i):
        with self._env.begin(write=False) as txn:
            data = txn.get(self._keys[i])
        img = PIL.Image.open(io.BytesIO(data))
        img.load()
        return img

    def header(self, i):
        img = self.load(i)
        w, h = img.size
        if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            w, h = h, w
        return w, h, img.mode

    def close(self):
        self._env.close()


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10 batches are pickles; allow only the numpy pieces they are made of."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError("unexpected object {}.{} in a CIFAR-10 batch".format(module, name))


def _load_cifar_pickle(fileobj, where: str) -> dict:
    try:
        data = _CifarUnpickler(fileobj, encoding="latin1").load()
    except Exception as err:
        raise DatasetError("{}: not a CIFAR-10 python batch ({}); re-download cifar-10-python.tar.gz".format(
            where, err)) from None
    if not isinstance(data, dict):
        raise DatasetError("{}: not a CIFAR-10 python batch; re-download cifar-10-python.tar.gz".format(where))
    return data


# The two python archives: (folder inside the archive, members per split, label key, class-name key, meta file).
_CIFAR_LAYOUTS = {
    "CIFAR-10": ("cifar-10-batches-py", {"train": ["data_batch_{}".format(i) for i in range(1, 6)],
                                         "test": ["test_batch"]}, "labels", "label_names", "batches.meta"),
    "CIFAR-100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels", "fine_label_names",
                  "meta"),
}


def _cifar_kind(names, where: str) -> str:
    """'CIFAR-10' or 'CIFAR-100', told by the meta file among `names` (batches.meta / meta)."""
    for kind, layout in _CIFAR_LAYOUTS.items():
        if layout[4] in names:
            return kind
    raise DatasetError("{}: neither CIFAR-10 (batches.meta) nor CIFAR-100 (meta) python data; download "
                       "cifar-10-python.tar.gz or cifar-100-python.tar.gz".format(where))


def _read_cifar_members(path: str, split: str):
    """(kind, {member: (where, bytes)}) of the split's batches and the meta file, from the
    extracted folder (or its parent) or the .tar.gz."""
    if os.path.isdir(path):
        folders = [path] + [os.path.join(path, layout[0]) for layout in _CIFAR_LAYOUTS.values()]
        folder = next((f for f in folders if os.path.isdir(f) and any(
            os.path.isfile(os.path.join(f, layout[4])) for layout in _CIFAR_LAYOUTS.values())), path)
        kind = _cifar_kind(os.listdir(folder), folder)
        _inner, splits, _lk, _nk, meta = _CIFAR_LAYOUTS[kind]
        blobs = {}
        for name in splits[split] + [meta]:
            fname = os.path.join(folder, name)
            if not os.path.isfile(fname):
                raise DatasetError("{}: missing from the {} folder; re-extract {}-python.tar.gz".format(
                    fname, kind, kind.lower()))
            with open(fname, "rb") as f:
                blobs[name] = (fname, f.read())
        return kind, blobs
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            kind = _cifar_kind(members, path)
            _inner, splits, _lk, _nk, meta = _CIFAR_LAYOUTS[kind]
            blobs = {}
            for name in splits[split] + [meta]:
                if name not in members:
                    raise DatasetError("{}: {} is missing from the archive; expected {}'s python version "
                                       "({}-python.tar.gz)".format(path, name, kind, kind.lower()))
                blobs[name] = ("{} (in {})".format(members[name].name, path), tar.extractfile(members[name]).read())
            return kind, blobs
    except tarfile.TarError as err:
        raise DatasetError("{}: not a readable tar archive ({}); re-download cifar-10-python.tar.gz or "
                           "cifar-100-python.tar.gz".format(path, err)) from None


def open_cifar(path: str, split: str) -> ArraySource:
    """CIFAR-10 or CIFAR-100 (its fine labels and 100 class names) python version, as the .tar.gz
    or the extracted folder; the meta file tells which."""
    kind, blobs = _read_cifar_members(path, split)
    _inner, splits, label_key, names_key, meta_name = _CIFAR_LAYOUTS[kind]
    batch_names = splits[split]
    images, labels = [], []
    for name in batch_names:
        where, blob = blobs[name]
        data = _load_cifar_pickle(io.BytesIO(blob), where)
        try:
            arr = np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            lab = np.asarray(data[label_key], dtype=np.int64)
        except (KeyError, ValueError) as err:
            raise DatasetError("{}: unexpected {} batch contents ({}); re-download the archive".format(
                where, kind, err)) from None
        if lab.shape[0] != arr.shape[0]:
            raise DatasetError("{}: {} labels for {} images; re-download the archive".format(
                where, lab.shape[0], arr.shape[0]))
        images.append(arr)
        labels.append(lab)
    meta_where, meta_blob = blobs[meta_name]
    meta = _load_cifar_pickle(io.BytesIO(meta_blob), meta_where)
    class_names = [str(n) for n in meta.get(names_key, [])] or None
    return ArraySource("{} {} ({})".format(kind, split, path), np.concatenate(images), np.concatenate(labels),
                       class_names)


_CIFAR_FOLDER_MARKERS = [(meta,) for _i, _s, _l, _n, meta in _CIFAR_LAYOUTS.values()] + \
    [(inner, meta) for inner, _s, _l, _n, meta in _CIFAR_LAYOUTS.values()]


def _read_idx(fname: str) -> np.ndarray:
    opener = gzip.open if fname.endswith(".gz") else open
    try:
        with opener(fname, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DatasetError("{}: cannot read ({}); re-download the file".format(fname, err)) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError("{}: not an unsigned-byte IDX file (bad magic number); re-download the file".format(fname))
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(data) - offset != count:
        raise DatasetError("{}: truncated or padded IDX file ({} bytes of data for shape {}); re-download it".format(
            fname, len(data) - offset, dims))
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(folder: str, prefix: str, kind: str) -> Optional[str]:
    """`train-images-idx3-ubyte[.gz]` (also the `train-images.idx3-ubyte` spelling) in `folder`."""
    rank = "idx3" if kind == "images" else "idx1"
    for stem in ("{}-{}-{}-ubyte".format(prefix, kind, rank), "{}-{}.{}-ubyte".format(prefix, kind, rank)):
        for ext in ("", ".gz"):
            fname = os.path.join(folder, stem + ext)
            if os.path.isfile(fname):
                return fname
    return None


def is_idx_folder(path: str) -> bool:
    return any(_find_idx(path, p, "images") for p in ("train", "t10k"))


def open_idx(path: str, split: str) -> ArraySource:
    prefix = "train" if split == "train" else "t10k"
    img_f = _find_idx(path, prefix, "images")
    lab_f = _find_idx(path, prefix, "labels")
    if img_f is None or lab_f is None:
        raise DatasetError("{}: expected {p}-images-idx3-ubyte[.gz] and {p}-labels-idx1-ubyte[.gz] for --split={s}; "
                           "add the missing file or choose the other --split".format(path, p=prefix, s=split))
    images = _read_idx(img_f)
    labels = _read_idx(lab_f).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError("{}: images {} and labels {} do not match (expected [N, H, W] and [N]); check that both "
                           "files come from the same set".format(img_f, list(images.shape), list(labels.shape)))
    if images.shape[1:] == (28, 28):
        images = np.pad(images, [(0, 0), (2, 2), (2, 2)], mode="constant", constant_values=0)  # 28 -> 32, like upstream
    head = [int(x) for x in labels[:16]]
    fashion = "fashion" in os.path.abspath(path).lower() or head == _FASHION_LABEL_HEADS[split]
    if fashion:
        class_names = list(FASHION_MNIST_CLASSES)
        what = "Fashion-MNIST"
    else:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 10)]
        what = "MNIST"
    return ArraySource("{} {} ({})".format(what, split, img_f), images, labels, class_names)


def open_source(source: str, split: str = "train", resolution_hint: Optional[int] = None) -> Source:
    """Pick the reader for `source` (see the module doc)."""
    if shapes_lib.is_builtin(source):
        try:
            images, labels, names = shapes_lib.make_builtin(source, resolution=resolution_hint)
        except ValueError as err:
            raise DatasetError("--source={}: {}".format(source, err)) from None
        return ArraySource(source, images, labels, names)
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "data.mdb")):
            return LmdbSource(path)
        if any(os.path.isfile(os.path.join(path, *parts)) for parts in _CIFAR_FOLDER_MARKERS):
            return open_cifar(path, split)
        if is_idx_folder(path):
            return open_idx(path, split)
        return FileSource(path)
    if os.path.isfile(path):
        low = path.lower()
        if low.endswith(".zip"):
            return FileSource(path)
        if low.endswith((".tar.gz", ".tgz", ".tar")):
            return open_cifar(path, split)
        if low.endswith((".mdb", ".lmdb")):
            return LmdbSource(path)
        raise DatasetError("{}: unsupported source file; use a folder or zip of images, cifar-10-python.tar.gz, an "
                           "MNIST IDX folder, an LMDB folder or builtin:shapes".format(path))
    raise DatasetError("{}: no such file or folder; check --source".format(source))


# Selection, geometry and the conversion itself


def per_class_of_fraction(labels: Optional[list], fraction: float, subset_per_class: Optional[int] = None) -> int:
    """Images per class for a class-balanced `fraction` of a labelled set: round(fraction x N / classes)."""
    if subset_per_class is not None:
        raise DatasetError("give --subset-fraction or --subset-per-class, not both")
    if not 0 < fraction <= 1:
        raise DatasetError("--subset-fraction must be in (0, 1], e.g. 0.1 for 10 %, got {}".format(fraction))
    if not labels:
        raise DatasetError("--subset-fraction needs class labels, and this source has none; use --max-images")
    num_classes = len(set(int(x) for x in labels))
    return max(1, int(round(fraction * len(labels) / num_classes)))


def select_indices(num: int, labels: Optional[list], subset_per_class: Optional[int], seed: int,
                   max_images: Optional[int], log: Callable[[str], None] = print) -> List[int]:
    """Seeded class-balanced subset (sorted) if asked, then the first `max_images`."""
    indices = list(range(num))
    if subset_per_class is not None:
        if subset_per_class < 1:
            raise DatasetError("--subset-per-class must be at least 1, got {}".format(subset_per_class))
        if labels is None or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in labels):
            raise DatasetError("--subset-per-class needs integer class labels, and this source has none (add a "
                               "dataset.json with labels, or use --max-images instead)")
        lab = np.asarray(labels, dtype=np.int64)
        rng = np.random.RandomState(seed)
        picked = []
        for c in np.unique(lab):
            members = np.flatnonzero(lab == c)
            if members.size < subset_per_class:
                log("warning: class {} has only {} images, fewer than --subset-per-class={}; taking all of them"
                    .format(int(c), members.size, subset_per_class))
                picked.append(members)
            else:
                picked.append(rng.choice(members, size=subset_per_class, replace=False))
        indices = sorted(int(i) for i in np.concatenate(picked))
    if max_images is not None:
        if max_images < 1:
            raise DatasetError("--max-images must be at least 1, got {}".format(max_images))
        indices = indices[:max_images]
    return indices


def _resolve_size(width, height, resolution) -> Optional[Tuple[int, int]]:
    if resolution is not None:
        if (width is not None and width != resolution) or (height is not None and height != resolution):
            raise DatasetError("--resolution={} contradicts --width/--height; give one or the other".format(resolution))
        return resolution, resolution
    if width is None and height is None:
        return None
    if width is None or height is None:
        raise DatasetError("give both --width and --height (or --resolution for a square size)")
    return width, height


def parse_background(text: str) -> Tuple[int, int, int]:
    """--background: a colour name or #rrggbb, as an RGB tuple."""
    try:
        rgb = PIL.ImageColor.getrgb(text)
    except ValueError:
        raise DatasetError("--background={}: not a colour; give a name (white, black, gray) or #rrggbb".format(
            text)) from None
    return tuple(int(v) for v in rgb[:3])


def upright_opaque(img, background: Tuple[int, int, int]):
    """EXIF orientation applied and transparency composited on `background`: the picture as a viewer
    shows it. Returns (image, notes) with notes among {'rotated', 'composited'}; arrays pass as they are."""
    notes = set()
    if not isinstance(img, PIL.Image.Image):
        return img, notes
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = PIL.ImageOps.exif_transpose(img)
        notes.add("rotated")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.add("composited")
        gray = channels_of_mode(img.mode) == 1 and len(set(background)) == 1
        flat = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, tuple(background) + (255,)), rgba)
        img = flat.convert("L" if gray else "RGB")
    return img, notes


def auto_resolution(shorter_sides: List[int]) -> Tuple[int, str]:
    """The largest power of two not above the shorter side of most images (their lower median), and why."""
    ordered = sorted(int(s) for s in shorter_sides)
    median = ordered[(len(ordered) - 1) // 2]
    res = 1 << (max(4, median).bit_length() - 1)
    smaller = sum(1 for s in ordered if s < res)
    why = ("the largest power of two not above the shorter side of most images (median {} px over {} images); {} "
           "of them are smaller and will be upscaled".format(median, len(ordered), smaller))
    return res, why


def read_headers(src: Source, indices: List[int]) -> list:
    """(width, height, mode) of every selected image, upright; an unreadable one stops the conversion."""
    headers = []
    for i in indices:
        try:
            headers.append(src.header(i))
        except Exception as err:
            raise DatasetError("{}: not a readable image ({}: {}); delete it or move it out of the source"
                               .format(src.where(i), type(err).__name__, err)) from None
    return headers


def check_geometry(src: Source, indices: List[int], headers: list, transform: Optional[str],
                   size: Optional[Tuple[int, int]], log: Callable[[str], None]) -> Optional[Tuple[int, int]]:
    """The output size: given, kept (one square power-of-two size throughout), or chosen from the whole
    set. Refuses to stretch a non-square image unless --transform=stretch says so."""
    if transform is None:
        odd = [(i, w, h) for i, (w, h, _m) in zip(indices, headers) if w != h]
        if odd:
            i, w, h = odd[0]
            raise DatasetError("{}: image is {}x{}, not square ({} of {} images are not); resizing it would stretch "
                               "it: rerun with --transform=center-crop to keep the aspect ratio (or "
                               "--transform=stretch to squash it), and --resolution=N to choose the size".format(
                                   src.where(i), w, h, len(odd), len(indices)))
    if size is not None:
        return size
    sides = {(w, h) for w, h, _m in headers}
    if len(sides) == 1:
        w, h = next(iter(sides))
        if w == h and is_power_of_two(w):
            return None
    res, why = auto_resolution([min(w, h) for w, h, _m in headers])
    log("No --resolution: using {r}x{r}, {why}. Pass --resolution=N to choose.".format(r=res, why=why))
    return res, res


def resize_counts(headers: list, size: Optional[Tuple[int, int]], transform: Optional[str]) -> dict:
    """How many images get upscaled (smaller than the output in some direction) and stretched."""
    if size is None:
        return dict(upscaled=0, stretched=0)
    return dict(upscaled=sum(1 for w, h, _m in headers if min(w / size[0], h / size[1]) < 1),
                stretched=sum(1 for w, h, _m in headers if transform == "stretch" and w != h))


def _pil(img, channels: int) -> PIL.Image.Image:
    if isinstance(img, np.ndarray):
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        img = PIL.Image.fromarray(img, "L" if img.ndim == 2 else "RGB")
    return PIL.Image.fromarray(pil_to_array(img, channels), "L" if channels == 1 else "RGB")


def apply_transform(img: PIL.Image.Image, transform: Optional[str], size: Optional[Tuple[int, int]],
                    resample) -> PIL.Image.Image:
    """Crop/resize one image; the result is square unless asked otherwise (checked by the caller)."""
    w, h = img.size
    if transform == "center-crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
        if size is not None and img.size != size:
            img = img.resize(size, resample)
        return img
    if transform == "center-crop-wide":
        tw, th = size
        # The largest centred region with the target's aspect ratio, scaled to tw x th, on a black square canvas.
        if w * th >= h * tw:
            cw, ch = int(round(h * tw / th)), h
        else:
            cw, ch = w, int(round(w * th / tw))
        left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
        if img.size != (tw, th):
            img = img.resize((tw, th), resample)
        canvas = PIL.Image.new(img.mode, (tw, tw))
        canvas.paste(img, (0, (tw - th) // 2))
        return canvas
    if size is not None and img.size != size:
        img = img.resize(size, resample)
    return img


class _Progress:
    def __init__(self, total: int, log: Callable[[str], None], every: Optional[int] = None):
        self.total = total
        self.log = log
        self.every = every or min(1000, max(100, total // 10))
        self.start = time.time()

    def update(self, done: int) -> None:
        if done % self.every and done != self.total:
            return
        elapsed = time.time() - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        self.log("{:>{w}}/{} images ({:5.1f}%), {} elapsed, ETA {}".format(
            done, self.total, 100.0 * done / max(self.total, 1), dnnlib.util.format_time(elapsed),
            dnnlib.util.format_time(eta), w=len(str(self.total))))


def convert_dataset(source: str, dest: str, max_images: Optional[int] = None, resize_filter: str = "lanczos",
                    transform: Optional[str] = None, width: Optional[int] = None, height: Optional[int] = None,
                    resolution: Optional[int] = None, split: str = "train", subset_per_class: Optional[int] = None,
                    seed: int = 0, log: Callable[[str], None] = print, progress_every: Optional[int] = None,
                    background: str = "white", subset_fraction: Optional[float] = None) -> dict:
    """Convert `source` into `dest`; raises DatasetError with the file and the fix. Returns a summary dict."""
    fill = parse_background(background)
    if not dest:
        raise DatasetError("--dest is required (a folder, or a file ending in .zip)")
    dest = os.path.expanduser(dest)
    DatasetWriter.check_dest(dest)
    size = _resolve_size(width, height, resolution)
    if transform == "center-crop-wide":
        if size is None:
            raise DatasetError("--transform=center-crop-wide needs --width and --height (e.g. --width=512 "
                               "--height=384); the result is a width x width square with black bars")
        if size[1] > size[0]:
            raise DatasetError("--transform=center-crop-wide needs --height <= --width, got {}x{}".format(*size))
        out_res = size[0]
    elif size is not None:
        if size[0] != size[1]:
            raise DatasetError("--width={} --height={}: training images must be square; use equal sizes, or "
                               "--transform=center-crop-wide for a letterboxed wide crop".format(*size))
        out_res = size[0]
    else:
        out_res = None
    if out_res is not None and not is_power_of_two(out_res):
        raise DatasetError("size {} is not a power of two; use e.g. --resolution={}".format(
            out_res, 1 << max(2, out_res.bit_length() - 1)))
    resample = _RESAMPLE[resize_filter]

    src = open_source(source, split=split, resolution_hint=out_res if transform is None else None)
    try:
        if subset_fraction is not None:
            subset_per_class = per_class_of_fraction(src.labels, subset_fraction, subset_per_class)
        indices = select_indices(len(src), src.labels, subset_per_class, seed, max_images, log=log)
        if not indices:
            raise DatasetError("{}: nothing to convert".format(src.description))

        # Up-front pass over the headers: unreadable files, channels, and the geometry of the whole set.
        headers = read_headers(src, indices)
        channels = 3 if any(channels_of_mode(mode) == 3 for _w, _h, mode in headers) else 1
        size = check_geometry(src, indices, headers, transform, size, log)
        counts = dict(resize_counts(headers, size, transform), rotated=0, composited=0)

        log("Converting {} images from {} to {}".format(len(indices), src.description, dest))
        progress = _Progress(len(indices), log, progress_every)
        labels_out = src.labels
        out_shape = None
        with DatasetWriter(dest) as writer:
            for n, i in enumerate(indices):
                try:
                    img, notes = upright_opaque(src.load(i), fill)
                    img = _pil(img, channels)
                    for note in notes:
                        counts[note] += 1
                except DatasetError:
                    raise
                except Exception as err:
                    raise DatasetError("{}: cannot decode image ({}: {}); delete it or re-export it".format(
                        src.where(i), type(err).__name__, err)) from None
                img = apply_transform(img, transform, size, resample)
                arr = np.asarray(img, dtype=np.uint8)
                if out_shape is None:
                    out_shape = arr.shape
                assert arr.shape == out_shape and arr.shape[0] == arr.shape[1], (arr.shape, out_shape)
                label = None if labels_out is None else labels_out[i]
                if isinstance(label, np.generic):
                    label = label.item()
                writer.add_image(n, encode_png(arr), label=label)
                progress.update(n + 1)
            writer.finish(class_names=src.class_names)
    finally:
        src.close()
    summary = dict(dest=dest, num_images=len(indices), resolution=int(out_shape[0]), channels=channels,
                   labels=labels_out is not None, class_names=src.class_names, skipped=dict(src.skipped),
                   background=background, **counts)
    log("Wrote {num_images} images ({resolution}x{resolution}, {channels} channel(s)) to {dest}".format(**summary))
    for line in summary_lines(summary):
        log(line)
    return summary


def summary_lines(summary: dict) -> List[str]:
    """What the conversion did to the data beyond copying it, one line per kind."""
    lines = []
    for reason, names in sorted(summary["skipped"].items()):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        lines.append("  skipped {} file(s): {}: {}".format(len(names), reason, shown))
    res = summary["resolution"]
    lines.append("  upscaled: {} (smaller than {}x{} before resizing)".format(summary["upscaled"], res, res))
    lines.append("  stretched: {} (non-square, --transform=stretch)".format(summary["stretched"]))
    lines.append("  rotated by their EXIF orientation: {}".format(summary["rotated"]))
    lines.append("  transparency composited on {}: {}".format(summary["background"], summary["composited"]))
    return lines


# Command line


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--source", help="Folder/zip of images, CIFAR-10 archive, MNIST IDX folder, LMDB, or builtin:shapes",
              required=True, metavar="PATH")
@click.option("--dest", help="Output folder, or a file ending in .zip", required=True, metavar="PATH")
@click.option("--max-images", help="Keep at most this many images", type=int, default=None)
@click.option("--resize-filter", help="Filter for resizing", type=click.Choice(["box", "lanczos"]), default="lanczos",
              show_default=True)
@click.option("--transform", help="How non-square images become square: center-crop (keeps the aspect ratio), "
              "center-crop-wide (letterboxed), or stretch [default: refuse non-square images]",
              type=click.Choice(["center-crop", "center-crop-wide", "stretch"]))
@click.option("--background", help="Colour under transparent pixels (name or #rrggbb)", default="white",
              show_default=True, metavar="COLOUR")
@click.option("--width", help="Output width", type=int)
@click.option("--height", help="Output height", type=int)
@click.option("--resolution", help="Output width and height (shorthand) [default: kept when all images share one "
              "square power-of-two size, else the largest power of two not above most images' shorter side]",
              type=int)
@click.option("--split", help="Which split of IDX/CIFAR sources", type=click.Choice(["train", "test"]),
              default="train", show_default=True)
@click.option("--subset-per-class", help="Seeded class-balanced subset: N images of every class", type=int)
@click.option("--subset-fraction", help="Seeded class-balanced subset: this fraction of the images, as the same "
              "number from every class (0.1 of CIFAR-10: 500 per class)", type=float)
@click.option("--seed", help="Seed for --subset-per-class/--subset-fraction", type=int, default=0, show_default=True)
def main(source, dest, max_images, resize_filter, transform, background, width, height, resolution, split,
         subset_per_class, subset_fraction, seed):
    """Convert an image collection into a training data set (folder or zip) with labels and class names.

    \b
    Examples:
      python dataset_tool.py --source=/usr/share/datasets/fashion-mnist --dest=fmnist-100.zip --subset-per-class=10
      python dataset_tool.py --source=~/photos --dest=photos-256.zip --resolution=256 --transform=center-crop
      python dataset_tool.py --source=builtin:shapes --dest=shapes-32.zip --resolution=32
      python dataset_tool.py --source=cifar-100-python.tar.gz --dest=cifar100-10pc.zip --subset-fraction=0.1
    """
    try:
        convert_dataset(source=source, dest=dest, max_images=max_images, resize_filter=resize_filter,
                        transform=transform, width=width, height=height, resolution=resolution, split=split,
                        subset_per_class=subset_per_class, seed=seed, log=click.echo, background=background,
                        subset_fraction=subset_fraction)
    except DatasetError as err:
        raise click.ClickException(str(err)) from None


if __name__ == "__main__":
    main()
