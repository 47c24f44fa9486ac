"""dataset_tool.py and builtin:shapes: sources, labels and class names, subsets, transforms, errors, atomicity."""
import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training import dataset as ds
from training import shapes

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def run_tool(*args):
    result = CliRunner().invoke(dataset_tool.main, [str(a) for a in args])
    return result


def ok(*args):
    result = run_tool(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def fails(*args, needles=()):
    result = run_tool(*args)
    assert result.exit_code != 0, result.output
    assert "Error:" in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    return result.output


def leftovers(folder):
    """Anything in `folder` apart from the inputs a test made (temporaries of a conversion included)."""
    return sorted(n for n in os.listdir(str(folder)) if n != "src")


def write_images(folder, named_arrays, labels=None, class_names=None):
    os.makedirs(str(folder), exist_ok=True)
    for name, arr in named_arrays.items():
        full = os.path.join(str(folder), *name.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        PIL.Image.fromarray(arr).save(full)
    if labels is not None or class_names is not None:
        meta = {"labels": None if labels is None else [[n, labels[n]] for n in named_arrays]}
        if class_names is not None:
            meta["class_names"] = class_names
        with open(os.path.join(str(folder), "dataset.json"), "w") as f:
            json.dump(meta, f)
    return str(folder)


def rand_img(h, w, channels=3, seed=0):
    shape = [h, w, channels] if channels == 3 else [h, w]
    return np.random.RandomState(seed).randint(0, 256, size=shape).astype(np.uint8)


# builtin:shapes


def test_shapes_deterministic_balanced_and_labelled():
    a_img, a_lab, names = shapes.make_shapes()
    b_img, b_lab, _ = shapes.make_shapes()
    assert a_img.shape == (100, 64, 64, 3) and a_img.dtype == np.uint8
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert names == ["circle", "square", "triangle", "cross", "ring"]
    assert np.bincount(a_lab).tolist() == [20] * 5
    assert len({hashlib.md5(x.tobytes()).hexdigest() for x in a_img}) == 100  # every image differs
    c_img, _, _ = shapes.make_shapes(seed=1)
    assert not np.array_equal(a_img, c_img)
    small, _, _ = shapes.make_shapes(num_images=10, resolution=32)
    assert small.shape == (10, 32, 32, 3)
    # The shape differs from its background: every image uses a broad range of values.
    spread = a_img.reshape(100, -1).max(axis=1).astype(int) - a_img.reshape(100, -1).min(axis=1)
    assert spread.min() > 60
    with pytest.raises(ValueError, match="power of two"):
        shapes.make_shapes(resolution=48)
    with pytest.raises(ValueError, match="builtin:shapes"):
        shapes.parse_builtin("builtin:nope")
    assert shapes.parse_builtin("builtin:shapes-32") == ("shapes", 32)


def test_shapes_tool_bytes_identical_and_round_trip(tmp_path):
    ok("--source", "builtin:shapes", "--dest", tmp_path / "a.zip", "--resolution", 32)
    ok("--source", "builtin:shapes", "--dest", tmp_path / "b.zip", "--resolution", 32)
    with open(str(tmp_path / "a.zip"), "rb") as fa, open(str(tmp_path / "b.zip"), "rb") as fb:
        assert fa.read() == fb.read()
    d = ds.ImageFolderDataset(str(tmp_path / "a.zip"), use_labels=True)
    assert len(d) == 100 and d.image_shape == [3, 32, 32] and d.label_dim == 5
    assert d.class_names == list(shapes.SHAPE_CLASSES)
    imgs, labels, _ = shapes.make_shapes(resolution=32)
    np.testing.assert_array_equal(d[7][0], imgs[7].transpose(2, 0, 1))  # drawn natively at 32, not resampled
    assert int(np.argmax(d.get_label(7))) == labels[7]


def test_materialize_builtin_is_deterministic_and_reused(tmp_path):
    p1 = shapes.materialize_builtin("builtin:shapes", str(tmp_path / "c1"), resolution=32)
    p2 = shapes.materialize_builtin("builtin:shapes-32", str(tmp_path / "c2"))
    assert os.path.basename(p1) == os.path.basename(p2) == "shapes-32-n100-s0"
    for root, _dirs, files in os.walk(p1):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), p1)
            with open(os.path.join(p1, rel), "rb") as fa, open(os.path.join(p2, rel), "rb") as fb:
                assert fa.read() == fb.read(), rel
    mtime = os.path.getmtime(os.path.join(p1, "dataset.json"))
    assert shapes.materialize_builtin("builtin:shapes", str(tmp_path / "c1"), resolution=32) == p1
    assert os.path.getmtime(os.path.join(p1, "dataset.json")) == mtime  # reused, not rewritten
    d = ds.ImageFolderDataset(p1, use_labels=True)
    assert len(d) == 100 and d.resolution == 32 and d.class_names[2] == "triangle"


# Image folders and zips


@pytest.mark.parametrize("dest_name", ["out", "out.zip"])
def test_folder_labels_class_names_and_max_images(tmp_path, dest_name):
    arrays = {"b/x{}.png".format(i): rand_img(16, 16, seed=i) for i in range(4)}
    arrays["a/first.png"] = rand_img(16, 16, seed=9)
    labels = {n: (i % 2) for i, n in enumerate(arrays)}
    src = write_images(tmp_path / "src", arrays, labels, ["left", "right"])
    dest = tmp_path / dest_name
    ok("--source", src, "--dest", dest, "--max-images", 3)
    d = ds.ImageFolderDataset(str(dest), use_labels=True)
    assert len(d) == 3 and d.class_names == ["left", "right"]
    order = sorted(arrays)[:3]  # sorted paths, first three
    for i, name in enumerate(order):
        np.testing.assert_array_equal(d[i][0], arrays[name].transpose(2, 0, 1))
        assert int(np.argmax(d.get_label(i))) == labels[name]
    assert leftovers(tmp_path) == [dest_name]
    # A zip source converts the same way, and mirroring through the data set still works.
    ok("--source", dest, "--dest", tmp_path / "again")
    again = ds.ImageFolderDataset(str(tmp_path / "again"), use_labels=True, xflip=True)
    assert len(again) == 6
    np.testing.assert_array_equal(again[4][0], d[1][0][:, :, ::-1])


def test_grayscale_folder_stays_one_channel(tmp_path):
    src = write_images(tmp_path / "src", {"g{}.png".format(i): rand_img(8, 8, channels=1, seed=i) for i in range(3)})
    ok("--source", src, "--dest", tmp_path / "out.zip")
    assert ds.ImageFolderDataset(str(tmp_path / "out.zip")).image_shape == [1, 8, 8]


def test_invalid_geometry_errors_name_file_and_fix_then_transform_converts(tmp_path):
    # Square images of mixed or odd sizes convert without --resolution (issue 16: the size is chosen from
    # the whole set, with the reason printed); only a non-square image needs a --transform choice.
    for name, arrays in {"mixed": {"a.png": rand_img(16, 16), "b.png": rand_img(32, 32)},
                         "nonpow2": {"odd.png": rand_img(20, 20)}}.items():
        out = ok("--source", write_images(tmp_path / "src" / name, arrays), "--dest", tmp_path / "src" / (name + "-auto"))
        assert "No --resolution: using 16x16" in out.output, out.output
    cases = {
        "nonsquare": ({"wide.png": rand_img(16, 24)}, ["wide.png", "24x16", "not square"]),
    }
    for name, (arrays, needles) in cases.items():
        src = write_images(tmp_path / "src" / name, arrays)
        fails("--source", src, "--dest", tmp_path / (name + ".zip"),
              needles=needles + ["--resolution", "--transform=center-crop"])
        assert leftovers(tmp_path) == [], name
        ok("--source", src, "--dest", tmp_path / "src" / "converted" / name, "--resolution", 16, "--transform",
           "center-crop", "--resize-filter", "box")
        d = ds.ImageFolderDataset(str(tmp_path / "src" / "converted" / name))
        assert d.resolution == 16 and len(d) == len(arrays), name


def test_center_crop_and_wide_crop_geometry(tmp_path):
    img = np.zeros([40, 80, 3], np.uint8)
    img[:, 20:60] = 255  # white centre square of a 2:1 image
    src = write_images(tmp_path / "src", {"w.png": img})
    ok("--source", src, "--dest", tmp_path / "cc", "--transform", "center-crop", "--width", 8, "--height", 8)
    cc = ds.ImageFolderDataset(str(tmp_path / "cc"))[0][0]
    assert cc.shape == (3, 8, 8) and cc.min() == 255  # the crop keeps only the white middle
    ok("--source", src, "--dest", tmp_path / "wide", "--transform", "center-crop-wide", "--width", 16,
       "--height", 8)
    wide = ds.ImageFolderDataset(str(tmp_path / "wide"))[0][0]
    assert wide.shape == (3, 16, 16)
    assert wide[:, :4].max() == 0 and wide[:, 12:].max() == 0  # black bars above and below
    assert wide[:, 4:12, 6:10].min() >= 250 and wide[:, 4:12, 0].max() < 64  # picture in the band
    fails("--source", src, "--dest", tmp_path / "x", "--transform", "center-crop-wide",
          needles=["--width", "--height"])
    fails("--source", src, "--dest", tmp_path / "y", "--resolution", 24, needles=["power of two", "--resolution=16"])


def test_corrupt_image_names_file_even_with_transform(tmp_path):
    src = write_images(tmp_path / "src", {"good.png": rand_img(16, 16)})
    with open(os.path.join(src, "bad.jpg"), "wb") as f:
        f.write(b"\xff\xd8 definitely not a jpeg")
    fails("--source", src, "--dest", tmp_path / "o.zip", needles=["bad.jpg", "not a readable image", "delete it"])
    fails("--source", src, "--dest", tmp_path / "o.zip", "--resolution", 8, "--transform", "center-crop",
          needles=["bad.jpg"])
    assert leftovers(tmp_path) == []


def test_failure_half_way_leaves_nothing(tmp_path):
    arrays = {"{:02d}.png".format(i): rand_img(16, 16, seed=i) for i in range(6)}
    src = write_images(tmp_path / "src", arrays)
    path = os.path.join(src, "05.png")  # truncate the last image: its header reads, its pixels do not
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:80])
    for dest in ("out", "out.zip"):
        fails("--source", src, "--dest", tmp_path / dest, needles=["05.png", "cannot decode"])
        assert leftovers(tmp_path) == [], dest  # neither dest nor a temporary beside it


def test_source_errors(tmp_path):
    os.makedirs(str(tmp_path / "src" / "empty"))
    fails("--source", tmp_path / "src" / "empty", "--dest", tmp_path / "o", needles=["empty", "no images found"])
    fails("--source", tmp_path / "src" / "missing", "--dest", tmp_path / "o", needles=["missing", "no such file"])
    src = write_images(tmp_path / "src" / "lab", {"a.png": rand_img(8, 8)}, labels={"a.png": 0})
    with open(os.path.join(src, "dataset.json"), "w") as f:
        json.dump({"labels": [["a.png", 0], ["gone.png", 1]]}, f)
    fails("--source", src, "--dest", tmp_path / "o", needles=["dataset.json", "gone.png", "remove their entries"])
    fails("--source", "builtin:circles", "--dest", tmp_path / "o", needles=["builtin:shapes"])
    assert leftovers(tmp_path) == []


def test_refuses_non_empty_dest(tmp_path):
    os.makedirs(str(tmp_path / "full"))
    with open(str(tmp_path / "full" / "keep.txt"), "w") as f:
        f.write("precious")
    fails("--source", "builtin:shapes", "--dest", tmp_path / "full", needles=["full", "not empty", "--dest"])
    with open(str(tmp_path / "full" / "keep.txt")) as f:
        assert f.read() == "precious"
    with open(str(tmp_path / "exists.zip"), "wb") as f:
        f.write(b"old")
    fails("--source", "builtin:shapes", "--dest", tmp_path / "exists.zip", needles=["exists.zip", "exists"])
    os.makedirs(str(tmp_path / "emptydir"))  # an empty folder is fine
    ok("--source", "builtin:shapes", "--dest", tmp_path / "emptydir", "--max-images", 5)
    assert len(ds.ImageFolderDataset(str(tmp_path / "emptydir"))) == 5


def test_progress_lines(tmp_path):
    out = ok("--source", "builtin:shapes", "--dest", tmp_path / "o.zip").output
    assert "100/100 images" in out and "ETA" in out
    lines = []
    dataset_tool.convert_dataset("builtin:shapes-8", str(tmp_path / "p.zip"), log=lines.append, progress_every=25)
    assert [l.split()[0] for l in lines if "ETA" in l] == ["25/100", "50/100", "75/100", "100/100"]


def test_lmdb_reported_clearly_without_package(tmp_path):
    try:
        import lmdb  # noqa: F401
        pytest.skip("the lmdb package is installed here, so LMDB sources are supported")
    except ImportError:
        pass
    os.makedirs(str(tmp_path / "src" / "db"))
    open(str(tmp_path / "src" / "db" / "data.mdb"), "wb").close()
    fails("--source", tmp_path / "src" / "db", "--dest", tmp_path / "o", needles=["LMDB", "pip install lmdb"])


# MNIST-format IDX and CIFAR-10, with fabricated miniature files


def _idx_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def _write_idx(folder, prefix, images, labels, gz):
    os.makedirs(str(folder), exist_ok=True)
    for kind, rank, arr in (("images", "idx3", images), ("labels", "idx1", labels)):
        name = os.path.join(str(folder), "{}-{}-{}-ubyte".format(prefix, kind, rank) + (".gz" if gz else ""))
        with (gzip.open if gz else open)(name, "wb") as f:
            f.write(_idx_bytes(arr))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_digits_padded_with_digit_names(tmp_path, gz):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=[30, 28, 28]).astype(np.uint8)
    labels = np.arange(30) % 10
    _write_idx(tmp_path / "src", "train", images, labels, gz)
    _write_idx(tmp_path / "src", "t10k", images[:5], labels[:5], gz)
    ok("--source", tmp_path / "src", "--dest", tmp_path / "m.zip", "--subset-per-class", 2, "--seed", 3)
    d = ds.ImageFolderDataset(str(tmp_path / "m.zip"), use_labels=True)
    assert len(d) == 20 and d.image_shape == [1, 32, 32]
    assert d.class_names == [str(i) for i in range(10)]
    counts = np.bincount([int(d.get_details(i).raw_label) for i in range(len(d))])
    assert counts.tolist() == [2] * 10
    img = d[0][0][0]
    assert img[:2].max() == 0 and img[:, :2].max() == 0 and img[-2:].max() == 0  # zero padding 28 -> 32
    assert any(np.array_equal(img[2:30, 2:30], x) for x in images)
    ok("--source", tmp_path / "src", "--dest", tmp_path / "t", "--split", "test")
    assert len(ds.ImageFolderDataset(str(tmp_path / "t"))) == 5
    # Truncated IDX files are caught and named.
    name = os.path.join(str(tmp_path / "src"), "train-images-idx3-ubyte" + (".gz" if gz else ""))
    with (gzip.open if gz else open)(name, "wb") as f:
        f.write(_idx_bytes(images)[:-10])
    fails("--source", tmp_path / "src", "--dest", tmp_path / "bad", needles=["train-images-idx3-ubyte",
                                                                              "re-download"])


def test_subset_per_class_is_seeded(tmp_path):
    images = np.random.RandomState(1).randint(0, 256, size=[60, 8, 8]).astype(np.uint8)
    _write_idx(tmp_path / "src", "train", images, np.arange(60) % 3, gz=False)

    def picked(dest, seed):
        ok("--source", tmp_path / "src", "--dest", tmp_path / dest, "--subset-per-class", 4, "--seed", seed)
        d = ds.ImageFolderDataset(str(tmp_path / dest))
        return [hashlib.md5(d[i][0].tobytes()).hexdigest() for i in range(len(d))]

    first = picked("s0", 0)
    assert len(first) == 12
    assert first == picked("s0b", 0)
    assert first != picked("s1", 1)
    fails("--source", "builtin:shapes", "--dest", tmp_path / "x", "--subset-per-class", 0, needles=["at least 1"])
    src = write_images(tmp_path / "src" / "plain", {"a.png": rand_img(8, 8)})
    fails("--source", src, "--dest", tmp_path / "y", "--subset-per-class", 1, needles=["integer class labels"])


def _cifar_pickle(obj):
    return pickle.dumps(obj, protocol=2)


def _make_cifar(tmp_path, as_tar):
    rng = np.random.RandomState(5)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    blobs = {"batches.meta": _cifar_pickle({"label_names": names, "num_vis": 3072})}
    for i, name in enumerate(["data_batch_{}".format(k) for k in range(1, 6)] + ["test_batch"]):
        blobs[name] = _cifar_pickle({"data": rng.randint(0, 256, size=[4, 3072]).astype(np.uint8),
                                     "labels": [(i + j) % 10 for j in range(4)]})
    if as_tar:
        path = str(tmp_path / "src" / "cifar-10-python.tar.gz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo("cifar-10-batches-py/" + name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        return path, blobs
    folder = tmp_path / "src" / "cifar-10-batches-py"
    os.makedirs(str(folder))
    for name, blob in blobs.items():
        with open(str(folder / name), "wb") as f:
            f.write(blob)
    return str(tmp_path / "src"), blobs


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar10_archive_and_folder(tmp_path, as_tar):
    src, blobs = _make_cifar(tmp_path, as_tar)
    ok("--source", src, "--dest", tmp_path / "c.zip")
    d = ds.ImageFolderDataset(str(tmp_path / "c.zip"), use_labels=True)
    assert len(d) == 20 and d.image_shape == [3, 32, 32]
    assert d.class_names[:3] == ["airplane", "automobile", "bird"] and len(d.class_names) == 10
    first = pickle.loads(blobs["data_batch_1"], encoding="latin1")
    np.testing.assert_array_equal(d[0][0], first["data"][0].reshape(3, 32, 32))
    assert int(np.argmax(d.get_label(0))) == first["labels"][0]
    ok("--source", src, "--dest", tmp_path / "t.zip", "--split", "test")
    assert len(ds.ImageFolderDataset(str(tmp_path / "t.zip"))) == 4


def test_cifar_refuses_foreign_pickles(tmp_path):
    folder = tmp_path / "src" / "cifar-10-batches-py"
    os.makedirs(str(folder))
    evil = pickle.dumps({"data": os.getcwd}, protocol=2)  # a pickle that would name an arbitrary callable
    for name in ["batches.meta", "test_batch"] + ["data_batch_{}".format(k) for k in range(1, 6)]:
        with open(str(folder / name), "wb") as f:
            f.write(evil)
    fails("--source", tmp_path / "src", "--dest", tmp_path / "o", needles=["data_batch_1", "not a CIFAR-10"])


# Fashion-MNIST (the real files, when the Debian package is installed)


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="Fashion-MNIST not installed at " + FASHION_DIR +
                    " (Debian package dataset-fashion-mnist)")
def test_fashion_mnist_converts_with_class_names(tmp_path):
    out = ok("--source", FASHION_DIR, "--dest", tmp_path / "fm.zip", "--subset-per-class", 3, "--seed", 0).output
    assert "Fashion-MNIST" in out
    d = ds.ImageFolderDataset(str(tmp_path / "fm.zip"), use_labels=True)
    assert len(d) == 30 and d.image_shape == [1, 32, 32] and d.label_dim == 10
    assert d.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                             "Bag", "Ankle boot"]
    assert np.bincount([int(d.get_details(i).raw_label) for i in range(30)]).tolist() == [3] * 10
    ok("--source", FASHION_DIR, "--dest", tmp_path / "test", "--split", "test", "--max-images", 4,
       "--resolution", 16)
    t = ds.ImageFolderDataset(str(tmp_path / "test"), use_labels=True)
    assert len(t) == 4 and t.resolution == 16 and t.class_names[9] == "Ankle boot"
    # The first test image of Fashion-MNIST is an ankle boot (label 9).
    assert int(np.argmax(t.get_label(0))) == 9
