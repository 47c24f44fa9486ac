"""Training data: an image folder or zip of same-size square images plus labels.

`ImageFolderDataset(path)` reads a folder or a `.zip` of png/jpg images, all
of one square power-of-two size, with an optional `dataset.json` at the top:

    {"labels": [["00000/img00000000.png", 3], ...], "class_names": ["cat", ...]}

Integer labels become one-hot vectors, float vectors are used as they are,
and `class_names` (our extension) names the classes for text prompts. Items
are `(uint8 CHW image, float32 label)`; `xflip=True` appends a mirrored copy
of every image and `max_size` keeps a seeded random subset.

Everything is checked when the data set is built, so a bad file fails at once
with its name and the fix, not hours into a run. `DatasetWriter` writes this
layout atomically; `dataset_tool.py` and `training.shapes` use it.
"""
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from typing import Dict, List, Optional, Sequence

import numpy as np
import PIL.Image
import torch

import dnnlib

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
METADATA_NAME = "dataset.json"
_GRAY_MODES = frozenset(["1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"])
_TOOL_FIX = ("convert it with dataset_tool.py, e.g. `python dataset_tool.py --source={src} --dest={dst} "
             "--resolution=64 --transform=center-crop`, which crops and resizes every image to one square "
             "power-of-two size")


class DatasetError(ValueError):
    """A data set that cannot be used as it is; the message names the file and the fix."""


# Small helpers shared with dataset_tool.py


def is_image_file(fname: str) -> bool:
    return os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def channels_of_mode(mode: str) -> int:
    """1 for grayscale PIL modes, 3 for everything else (alpha is dropped)."""
    return 1 if mode in _GRAY_MODES else 3


def pil_to_array(img: PIL.Image.Image, channels: int) -> np.ndarray:
    """A PIL image as uint8 HW (channels=1) or HWC (channels=3)."""
    if channels == 1:
        if img.mode.startswith("I;16"):
            return (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)
        if img.mode != "L":
            img = img.convert("L")
    elif img.mode != "RGB":
        if img.mode.startswith("I;16"):
            img = PIL.Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


def image_header(f):
    """`(width, height, PIL mode)` of an open image file without decoding its pixels.

    PNG headers are parsed directly (several times faster than PIL on large
    sets); other formats go through PIL, which also reads only the header.
    """
    head = f.read(26)
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        width = int.from_bytes(head[16:20], "big")
        height = int.from_bytes(head[20:24], "big")
        mode = _PNG_COLOUR_MODES.get(head[25])
        if mode is not None and width > 0 and height > 0:
            if mode == "L" and head[24] == 16:
                mode = "I;16"
            return width, height, mode
    f.seek(0)
    with PIL.Image.open(f) as img:
        return img.size[0], img.size[1], img.mode


def encode_png(img: np.ndarray) -> bytes:
    """uint8 HW, HW1 or HWC (3 channels) array -> PNG bytes."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError("expected a uint8 image, got {}".format(img.dtype))
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError("expected an HW or HWC (3-channel) image, got shape {}".format(img.shape))
    buf = io.BytesIO()
    PIL.Image.fromarray(img, "L" if img.ndim == 2 else "RGB").save(buf, format="png")
    return buf.getvalue()


def archive_name(idx: int) -> str:
    """Upstream's output layout: 1000 images per folder, `00000/img00000000.png`."""
    s = "{:08d}".format(int(idx))
    return "{}/img{}.png".format(s[:5], s)


def labels_from_metadata(meta, meta_path: str):
    """`(dict fname -> label or None, class_names or None)` from a parsed dataset.json, checked."""
    if not isinstance(meta, dict):
        raise DatasetError("{}: expected a JSON object like {{\"labels\": [[\"path.png\", 0], ...]}}; "
                           "fix or delete the file".format(meta_path))
    raw = meta.get("labels")
    labels = None
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(e, (list, tuple)) and len(e) == 2 and
                                                isinstance(e[0], str) for e in raw):
            raise DatasetError("{}: \"labels\" must be a list of [\"path/in/archive.png\", label] pairs; "
                               "fix the file or set \"labels\": null".format(meta_path))
        labels = {fname.replace("\\", "/"): label for fname, label in raw}
    names = meta.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DatasetError("{}: \"class_names\" must be a list of strings; fix it or remove the key"
                               .format(meta_path))
        names = list(names)
    return labels, names


MAX_CLASSES = 100000   # far above any labelled set in use (ImageNet-21k: 21,841); above it, a label is a typo


def _label_problem(label):
    """('class', int) or ('vector', [floats]) for a good label, ('bad', why) for any other."""
    if label is None:
        return "bad", "null; give every image a label, or set \"labels\": null for an unlabelled set"
    if isinstance(label, (bool, np.bool_)):
        return "bad", "{} (a boolean); labels are class indices 0, 1, ... or lists of numbers".format(label)
    if isinstance(label, (int, np.integer)):
        return "class", int(label)
    if isinstance(label, (float, np.floating)):
        if math.isfinite(label) and float(label).is_integer():
            return "class", int(label)   # upstream casts scalar labels to int64
        return "bad", "{}, not a class index; a continuous label is a list, e.g. [{}]".format(label, label)
    if isinstance(label, (list, tuple)) and label:
        if all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))
               for x in label):
            if all(math.isfinite(x) for x in label):
                return "vector", [float(x) for x in label]
            return "bad", "{}, which holds a non-finite number".format(label)
    if isinstance(label, str):
        return "bad", "{!r} (a string); labels are class indices 0, 1, ... (put names in \"class_names\")" \
            .format(label)
    return "bad", "{!r}; labels are class indices 0, 1, ... or non-empty lists of numbers".format(label)


def check_labels(values: Sequence, fnames: Sequence[str], where: str, class_names=None) -> np.ndarray:
    """Raw dataset.json labels (one per image, in `fnames` order), checked: int64 [N] class indices or
    float32 [N, D] vectors. The first bad label is named with its image and what to do."""
    assert len(values) == len(fnames), (len(values), len(fnames))
    kind, first, out = None, None, []
    for fname, label in zip(fnames, values):
        this, value = _label_problem(label)
        if this == "bad":
            raise DatasetError("{}: the label of {!r} is {}".format(where, fname, value))
        if kind is None:
            kind, first = this, (fname, value)
        elif this != kind or (kind == "vector" and len(value) != len(first[1])):
            raise DatasetError("{}: the label of {!r} is {!r} but that of {!r} is {!r}; use one kind for all "
                               "images: class indices, or lists of one length".format(where, fname, label,
                                                                                   first[0], first[1]))
        if this == "class" and value < 0:
            raise DatasetError("{}: the label of {!r} is {}; class indices start at 0".format(where, fname, value))
        if this == "class" and class_names is not None and value >= len(class_names):
            raise DatasetError("{}: label {} (of {!r}) has no entry in class_names ({} names); add the missing "
                               "names".format(where, value, fname, len(class_names)))
        if this == "class" and value >= max(MAX_CLASSES, len(class_names or ())):
            raise DatasetError("{}: the label of {!r} is {}, which would make a {}-class conditional model; "
                               "number the classes 0, 1, 2, ... (at most {})".format(where, fname, value, value + 1,
                                                                                   MAX_CLASSES))
        out.append(value)
    if kind == "vector":
        return np.asarray(out, dtype=np.float32)
    return np.asarray(out, dtype=np.int64)


# Base class


class Dataset(torch.utils.data.Dataset):
    """Index bookkeeping shared by all data sets: subset, mirroring, labels.

    Subclasses provide `_load_raw_image(raw_idx)` (uint8 CHW) and
    `_load_raw_labels()` (None, int64 [N] or float32 [N, ...]).
    """

    def __init__(self, name: str, raw_shape: Sequence[int], max_size: Optional[int] = None, use_labels: bool = False,
                 xflip: bool = False, random_seed: int = 0):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = bool(use_labels)
        self._raw_labels = None
        self._label_shape = None
        self._class_names = None

        num_raw = self._raw_shape[0]
        raw_idx = np.arange(num_raw, dtype=np.int64)
        if max_size is not None:
            if max_size < 0:
                raise ValueError("max_size must be >= 0 or None, got {}".format(max_size))
            if num_raw > max_size:
                picked = np.random.RandomState(random_seed).permutation(num_raw)[:max_size]
                raw_idx = np.sort(picked)
        flags = np.zeros(raw_idx.size, dtype=np.uint8)
        if xflip:
            raw_idx = np.concatenate([raw_idx, raw_idx])
            flags = np.concatenate([flags, np.ones_like(flags)])
        self._raw_idx = raw_idx
        self._xflip = flags

    # Subclass hooks ----------------------------------------------------------

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        raise NotImplementedError

    def _load_raw_labels(self):
        raise NotImplementedError

    def close(self) -> None:
        pass

    # Labels ---------------------------------------------------------------------

    def _get_raw_labels(self) -> np.ndarray:
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            labels = np.asarray(labels)
            if labels.shape[0] != self._raw_shape[0]:
                raise DatasetError("{}: {} labels for {} images".format(self._name, labels.shape[0],
                                                                          self._raw_shape[0]))
            if labels.dtype == np.int64:
                if labels.ndim != 1 or (labels.size and labels.min() < 0):
                    raise DatasetError("{}: integer labels must be one non-negative class index per image"
                                       .format(self._name))
            elif labels.dtype != np.float32:
                raise DatasetError("{}: labels must be int64 class indices or float32 vectors, got {}"
                                   .format(self._name, labels.dtype))
            self._raw_labels = labels
        return self._raw_labels

    # Pickling and lifetime ---------------------------------------------------

    def __getstate__(self):
        return dict(self.__dict__)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # Items -------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def __getitem__(self, idx):
        image = self._load_raw_image(int(self._raw_idx[idx]))
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and list(image.shape) == self.image_shape):
            raise DatasetError("{}: raw image {} has shape {} dtype {}, expected uint8 {}".format(
                self._name, int(self._raw_idx[idx]), getattr(image, "shape", None), getattr(image, "dtype", None),
                self.image_shape))
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx) -> np.ndarray:
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx):
        return dnnlib.EasyDict(raw_idx=int(self._raw_idx[idx]), xflip=(int(self._xflip[idx]) != 0),
                               raw_label=self._get_raw_labels()[self._raw_idx[idx]].copy())

    # Properties --------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> List[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        assert len(self.image_shape) == 3  # CHW
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        assert len(self.image_shape) == 3  # CHW
        assert self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self) -> List[int]:
        if self._label_shape is None:
            raw = self._get_raw_labels()
            if raw.dtype == np.int64:
                self._label_shape = [int(raw.max()) + 1 if raw.size else 0]
            else:
                self._label_shape = list(raw.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self._get_raw_labels().dtype == np.int64

    @property
    def label_std(self) -> float:
        raw = self._get_raw_labels()
        if raw.dtype == np.int64 and raw.size:
            onehot = np.zeros([raw.shape[0], self.label_dim], dtype=np.float32)
            onehot[np.arange(raw.shape[0]), raw] = 1
            raw = onehot
        return float(raw.std(axis=0).mean()) if raw.size else 0.0

    @property
    def class_names(self) -> Optional[List[str]]:
        """Class names for text prompts (from dataset.json's `class_names`), or None."""
        return None if self._class_names is None else list(self._class_names)


# Folder or zip of images


class ImageFolderDataset(Dataset):
    """A folder (searched recursively) or a `.zip` of images, plus an optional `dataset.json`.

    The zip is opened lazily and once per process, and the object pickles
    without it, so DataLoader workers (fork or spawn) each open their own.
    """

    def __init__(self, path: str, resolution: Optional[int] = None, **super_kwargs):
        self._path = str(path)
        self._zipfile = None
        self._zipfile_pid = None

        if os.path.isdir(self._path):
            self._type = "dir"
            self._all_fnames = sorted(
                os.path.relpath(os.path.join(root, fname), start=self._path).replace(os.sep, "/")
                for root, _dirs, files in os.walk(self._path) for fname in files)
        elif self._file_ext(self._path) == ".zip":
            if not os.path.isfile(self._path):
                raise DatasetError("{}: no such zip file; check the --data path".format(self._path))
            self._type = "zip"
            try:
                self._all_fnames = sorted(n for n in self._get_zipfile().namelist() if not n.endswith("/"))
            except zipfile.BadZipFile as err:
                raise DatasetError("{}: not a readable zip archive ({}); re-create it with dataset_tool.py"
                                   .format(self._path, err)) from None
        elif os.path.exists(self._path):
            raise DatasetError("{}: expected a folder or a .zip of images; to convert other sources "
                               "(CIFAR-10, MNIST, LMDB) run dataset_tool.py --source={} --dest=<out>.zip"
                               .format(self._path, self._path))
        else:
            raise DatasetError("{}: no such folder or zip file; check the --data path".format(self._path))

        self._image_fnames = [f for f in self._all_fnames if is_image_file(f)]
        if not self._image_fnames:
            raise DatasetError("{}: no images found (looked for {} files); point --data at a folder or zip "
                               "holding images, or build one with dataset_tool.py"
                               .format(self._path, "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)))

        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        size, self._channels = self._scan_images()
        raw_shape = [len(self._image_fnames), self._channels, size, size]
        if resolution is not None and int(resolution) != size:
            raise DatasetError("{}: images are {}x{} but resolution={} was asked; pass --resolution={} "
                               "(or omit it), or {}".format(self._path, size, size, resolution, size,
                                                            self._fix_text(int(resolution))))
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)
        self._class_names = self._read_metadata(check_labels=self._use_labels)[1]

    # File access ---------------------------------------------------------------

    @staticmethod
    def _file_ext(fname: str) -> str:
        return os.path.splitext(fname)[1].lower()

    def _get_zipfile(self) -> zipfile.ZipFile:
        assert self._type == "zip"
        if self._zipfile is None or self._zipfile_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self._path)
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname: str):
        if self._type == "dir":
            return open(os.path.join(self._path, fname), "rb")
        return self._get_zipfile().open(fname, "r")

    def _where(self, fname: str) -> str:
        return os.path.join(self._path, fname) if self._type == "dir" else "{} (in {})".format(fname, self._path)

    def _fix_text(self, res: int = 64) -> str:
        base = os.path.splitext(os.path.normpath(self._path))[0]
        return _TOOL_FIX.replace("--resolution=64", "--resolution={}".format(res)).format(
            src=self._path, dst=base + "-{}.zip".format(res))

    def close(self) -> None:
        try:
            if self._zipfile is not None:
                self._zipfile.close()
        finally:
            self._zipfile = None
            self._zipfile_pid = None

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_zipfile"] = None
        state["_zipfile_pid"] = None
        return state

    # Up-front checks -----------------------------------------------------------

    def _scan_images(self):
        """Read every image header: same square power-of-two size; returns (size, channels)."""
        first = None
        any_colour = False
        for fname in self._image_fnames:
            try:
                with self._open_file(fname) as f:
                    w, h, mode = image_header(f)
            except Exception as err:
                raise DatasetError("{}: not a readable image ({}: {}); delete or re-export this file, or move "
                                   "it out of the data set".format(self._where(fname), type(err).__name__, err)
                                   ) from None
            any_colour = any_colour or channels_of_mode(mode) == 3
            if first is None:
                first = (fname, w, h)
                if w != h:
                    raise DatasetError("{}: image is {}x{} but images must be square; {}".format(
                        self._where(fname), w, h, self._fix_text(_suggest_res(w, h))))
                if not is_power_of_two(w):
                    raise DatasetError("{}: image is {}x{} but the size must be a power of two; {}".format(
                        self._where(fname), w, h, self._fix_text(_suggest_res(w, h))))
            elif (w, h) != first[1:]:
                raise DatasetError("{}: image is {}x{} but {} is {}x{}; all images must share one size; {}".format(
                    self._where(fname), w, h, first[0], first[1], first[2], self._fix_text(first[1])))
        return first[1], (3 if any_colour else 1)

    def _read_metadata(self, check_labels: bool):
        """`(labels dict or None, class_names or None)` from dataset.json, checked against the images."""
        if METADATA_NAME not in self._all_fnames:
            return None, None
        where = self._where(METADATA_NAME)
        try:
            with self._open_file(METADATA_NAME) as f:
                meta = json.load(f)
        except (OSError, ValueError) as err:
            if not check_labels:
                return None, None
            raise DatasetError("{}: not valid JSON ({}); fix or delete it".format(where, err)) from None
        try:
            labels, names = labels_from_metadata(meta, where)
        except DatasetError:
            if not check_labels:
                return None, None
            raise
        if check_labels and labels is not None:
            have = set(self._image_fnames)
            missing = [f for f in labels if f not in have]
            if missing:
                raise DatasetError("{}: names {} file(s) missing from the data set, e.g. {!r}; restore them or "
                                   "remove their entries (or rebuild the set with dataset_tool.py)"
                                   .format(where, len(missing), missing[0]))
            unlabelled = [f for f in self._image_fnames if f not in labels]
            if unlabelled:
                raise DatasetError("{}: image {!r} has no label; add an entry for it, set \"labels\": null, "
                                   "or train without --cond".format(where, unlabelled[0]))
        return labels, names

    # Loading -------------------------------------------------------------------

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                with PIL.Image.open(f) as img:
                    arr = pil_to_array(img, self._channels)
        except Exception as err:
            raise DatasetError("{}: cannot decode image ({}: {}); delete or re-export this file".format(
                self._where(fname), type(err).__name__, err)) from None
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]  # HW => HWC
        return np.ascontiguousarray(arr.transpose(2, 0, 1))  # HWC => CHW

    def _load_raw_labels(self):
        labels, _names = self._read_metadata(check_labels=True)
        if labels is None:
            return None
        where = self._where(METADATA_NAME)
        names = self._class_names if self._class_names is not None else _names
        return check_labels([labels[f] for f in self._image_fnames], self._image_fnames, where, names)

    def check_members(self, max_bytes: int = 2 ** 30) -> None:
        """Read every image of a zip of up to `max_bytes` (uncompressed) through its checksum, so that a
        corrupt member is named now rather than by a DataLoader worker mid-run. Larger zips are left
        to the per-image errors (reading them all would take minutes)."""
        if self._type != "zip":
            return
        infos = [self._get_zipfile().getinfo(f) for f in self._image_fnames]
        if sum(info.file_size for info in infos) > max_bytes:
            return
        for info in infos:
            try:
                with self._get_zipfile().open(info) as f:
                    while f.read(1 << 20):
                        pass
            except Exception as err:
                raise DatasetError("{}: corrupt zip member ({}: {}); re-create the zip, or delete this image from "
                                   "it".format(self._where(info.filename), type(err).__name__, err)) from None


def _suggest_res(w: int, h: int) -> int:
    """Largest power of two not above the shorter side (at least 4)."""
    s = max(4, min(w, h))
    return 1 << (s.bit_length() - 1)


# Writer


class DatasetWriter:
    """Write images + dataset.json to a folder or `.zip`, atomically.

    Everything goes to a temporary sibling of `dest` which is renamed into
    place by `finish()`; leaving the `with` block without `finish()` (an
    error, Ctrl-C) deletes it, so `dest` is either complete or absent. An
    existing non-empty `dest` is refused.
    """

    def __init__(self, dest: str):
        self.dest = self.check_dest(dest)
        self.is_zip = self.dest.lower().endswith(".zip")
        parent = os.path.dirname(os.path.abspath(self.dest))
        os.makedirs(parent, exist_ok=True)
        prefix = "." + os.path.basename(self.dest) + ".tmp-"
        self._labels: List = []
        self._names: Dict[str, int] = {}
        if self.is_zip:
            fd, self._tmp = tempfile.mkstemp(prefix=prefix, suffix=".zip", dir=parent)
            os.close(fd)
            self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED)
        else:
            self._tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
            self._zip = None
        self._done = False

    @staticmethod
    def check_dest(dest: str) -> str:
        """Refuse a destination that holds something; returns the normalised path."""
        dest = os.path.normpath(str(dest))
        if os.path.isdir(dest):
            if dest.lower().endswith(".zip") or os.listdir(dest):
                raise DatasetError("{}: destination exists and is not empty; choose a new --dest or delete it "
                                   "first".format(dest))
        elif os.path.lexists(dest):
            raise DatasetError("{}: destination file exists; choose a new --dest or delete it first".format(dest))
        return dest

    def _write(self, name: str, data: bytes) -> None:
        if self._zip is not None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed time: same input, same bytes
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            self._zip.writestr(info, data)
        else:
            path = os.path.join(self._tmp, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def add_image(self, idx: int, png_bytes: bytes, label=None) -> str:
        """Store one encoded image as `archive_name(idx)`; returns that name."""
        name = archive_name(idx)
        if name in self._names:
            raise ValueError("image index {} written twice".format(idx))
        self._names[name] = len(self._labels)
        self._write(name, png_bytes)
        self._labels.append([name, label])
        return name

    @property
    def num_images(self) -> int:
        return len(self._labels)

    def finish(self, class_names: Optional[Sequence[str]] = None, extra: Optional[dict] = None) -> str:
        """Write dataset.json and move the result into place; returns `dest`."""
        labelled = bool(self._labels) and all(label is not None for _name, label in self._labels)
        if not labelled and any(label is not None for _name, label in self._labels):
            raise DatasetError("{}: some images have labels and some do not; label all of them or none"
                               .format(self.dest))
        meta = {"labels": [list(e) for e in self._labels] if labelled else None}
        if class_names is not None:
            meta["class_names"] = [str(n) for n in class_names]
        if extra:
            meta.update(extra)
        self._write(METADATA_NAME, json.dumps(meta).encode("utf-8"))
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        umask = os.umask(0)
        os.umask(umask)
        if self.is_zip:
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp/mkdtemp create private files; give the usual modes
        else:
            for root, dirs, files in os.walk(self._tmp):
                for d in dirs:
                    os.chmod(os.path.join(root, d), 0o777 & ~umask)
                for f in files:
                    os.chmod(os.path.join(root, f), 0o666 & ~umask)
            os.chmod(self._tmp, 0o777 & ~umask)
        if os.path.isdir(self.dest) and not self.is_zip:
            os.rmdir(self.dest)  # empty (checked in __init__); rmdir fails if something appeared meanwhile
        os.replace(self._tmp, self.dest)
        self._done = True
        return self.dest

    def abort(self) -> None:
        if self._done:
            return
        if self._zip is not None:
            try:
                self._zip.close()
            except Exception:
                pass
            self._zip = None
        if os.path.isdir(self._tmp):
            shutil.rmtree(self._tmp, ignore_errors=True)
        elif os.path.exists(self._tmp):
            os.remove(self._tmp)
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.abort()  # no-op after finish()
        return False
