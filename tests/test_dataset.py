"""training.dataset: ImageFolderDataset over folders and zips, labels, mirroring, subsets, up-front checks."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from training import dataset as ds


def _png(arr):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="png")
    return buf.getvalue()


def _images(n, res=8, channels=3, seed=0):
    rng = np.random.RandomState(seed)
    shape = [n, res, res, channels] if channels == 3 else [n, res, res]
    return rng.randint(0, 256, size=shape).astype(np.uint8)


def _write_set(root, images, labels=None, class_names=None, as_zip=False, names=None):
    """Write images (+ dataset.json) as a folder or zip; returns the path."""
    names = names or ["sub{}/im{:03d}.png".format(i % 2, i) for i in range(len(images))]
    files = {n: _png(img) for n, img in zip(names, images)}
    meta = {}
    if labels is not None:
        meta["labels"] = [[n, lab] for n, lab in zip(names, labels)]
    if class_names is not None:
        meta["class_names"] = class_names
    if meta:
        files["dataset.json"] = json.dumps(meta).encode()
    if as_zip:
        path = str(root) + ".zip"
        with zipfile.ZipFile(path, "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
        return path
    os.makedirs(str(root), exist_ok=True)
    for n, data in files.items():
        full = os.path.join(str(root), *n.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    return str(root)


@pytest.mark.parametrize("as_zip", [False, True])
def test_items_labels_and_class_names(tmp_path, as_zip):
    imgs = _images(6)
    labels = [0, 2, 1, 2, 0, 1]
    path = _write_set(tmp_path / "set", imgs, labels, ["cat", "dog", "fox"], as_zip=as_zip)
    d = ds.ImageFolderDataset(path, use_labels=True)
    assert d.name == "set"
    assert len(d) == 6 and d.image_shape == [3, 8, 8] and d.num_channels == 3 and d.resolution == 8
    assert d.label_shape == [3] and d.label_dim == 3 and d.has_labels and d.has_onehot_labels
    assert d.class_names == ["cat", "dog", "fox"]
    # Files are sorted by name: sub0/im000, sub0/im002, sub0/im004, sub1/im001, ...
    order = [0, 2, 4, 1, 3, 5]
    for idx, src in enumerate(order):
        img, label = d[idx]
        assert img.dtype == np.uint8 and img.shape == (3, 8, 8)
        np.testing.assert_array_equal(img, imgs[src].transpose(2, 0, 1))
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, np.eye(3, dtype=np.float32)[labels[src]])
        np.testing.assert_array_equal(d.get_label(idx), label)
        assert d.get_details(idx).raw_label == labels[src]


def test_without_labels_gives_zero_length_labels(tmp_path):
    path = _write_set(tmp_path / "set", _images(3), [0, 1, 1], ["a", "b"])
    d = ds.ImageFolderDataset(path)  # use_labels=False
    _img, label = d[0]
    assert label.shape == (0,) and label.dtype == np.float32
    assert d.label_shape == [0] and d.label_dim == 0 and not d.has_labels
    assert d.class_names == ["a", "b"]  # names stay readable for prompts
    assert ds.ImageFolderDataset(_write_set(tmp_path / "plain", _images(2))).class_names is None


def test_float_vector_labels(tmp_path):
    labels = [[0.5, -1.0], [2.0, 0.25], [1.0, 1.0]]
    d = ds.ImageFolderDataset(_write_set(tmp_path / "set", _images(3), labels, names=["a.png", "b.png", "c.png"]),
                              use_labels=True)
    assert d.label_shape == [2] and not d.has_onehot_labels
    np.testing.assert_allclose(d.get_label(1), labels[1])
    assert d[2][1].dtype == np.float32


def test_xflip_doubles_with_mirrored_second_half(tmp_path):
    imgs = _images(4)
    path = _write_set(tmp_path / "set", imgs, [0, 1, 0, 1], names=[c + ".png" for c in "abcd"])
    d = ds.ImageFolderDataset(path, xflip=True, use_labels=True)
    assert len(d) == 8
    for i in range(4):
        a, la = d[i]
        b, lb = d[i + 4]
        np.testing.assert_array_equal(b, a[:, :, ::-1])
        np.testing.assert_array_equal(la, lb)
        assert not d.get_details(i).xflip and d.get_details(i + 4).xflip
        assert d.get_details(i + 4).raw_idx == i


def test_max_size_seeded_subset(tmp_path):
    path = _write_set(tmp_path / "set", _images(20), names=["{:02d}.png".format(i) for i in range(20)])
    full = ds.ImageFolderDataset(path)
    a = ds.ImageFolderDataset(path, max_size=5, random_seed=1)
    b = ds.ImageFolderDataset(path, max_size=5, random_seed=1)
    c = ds.ImageFolderDataset(path, max_size=5, random_seed=2)
    ia = [a.get_details(i).raw_idx for i in range(len(a))]
    ib = [b.get_details(i).raw_idx for i in range(len(b))]
    ic = [c.get_details(i).raw_idx for i in range(len(c))]
    assert len(a) == 5 and ia == ib and ia == sorted(ia) and len(set(ia)) == 5
    assert ia != ic  # another seed picks another subset
    np.testing.assert_array_equal(a[0][0], full[ia[0]][0])
    assert len(ds.ImageFolderDataset(path, max_size=50)) == 20
    assert len(ds.ImageFolderDataset(path, max_size=5, xflip=True)) == 10


def test_grayscale_is_one_channel_and_mixed_modes_promote_to_rgb(tmp_path):
    gray = _images(3, channels=1)
    d = ds.ImageFolderDataset(_write_set(tmp_path / "g", gray, names=["a.png", "b.png", "c.png"]))
    assert d.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(d[1][0][0], gray[1])
    mixed = [gray[0], _images(1)[0]]
    files = _write_set(tmp_path / "m", mixed, names=["a.png", "b.png"])
    dm = ds.ImageFolderDataset(files)
    assert dm.num_channels == 3
    np.testing.assert_array_equal(dm[0][0], np.repeat(gray[0][None], 3, axis=0))


def test_zip_pickles_and_loads_in_worker_processes(tmp_path):
    path = _write_set(tmp_path / "set", _images(6), [0, 1, 2, 0, 1, 2], as_zip=True)
    d = ds.ImageFolderDataset(path, use_labels=True)
    first = d[0][0]  # opens the zip in this process
    clone = pickle.loads(pickle.dumps(d))
    assert clone._zipfile is None
    np.testing.assert_array_equal(clone[0][0], first)
    loader = torch.utils.data.DataLoader(d, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    got = torch.cat([b[0] for b in batches]).numpy()
    want = np.stack([d[i][0] for i in range(len(d))])
    np.testing.assert_array_equal(got, want)
    d.close()


def test_writer_layout_round_trip(tmp_path):
    dest = str(tmp_path / "out.zip")
    imgs = _images(3)
    with ds.DatasetWriter(dest) as w:
        for i, img in enumerate(imgs):
            w.add_image(i, ds.encode_png(img), label=i % 2)
        w.finish(class_names=["even", "odd"])
    with zipfile.ZipFile(dest) as z:
        assert sorted(z.namelist()) == ["00000/img00000000.png", "00000/img00000001.png", "00000/img00000002.png",
                                        "dataset.json"]
    assert ds.archive_name(12345) == "00012/img00012345.png"
    d = ds.ImageFolderDataset(dest, use_labels=True)
    assert d.class_names == ["even", "odd"] and d.label_dim == 2
    np.testing.assert_array_equal(d[2][0], imgs[2].transpose(2, 0, 1))
    assert os.listdir(str(tmp_path)) == ["out.zip"]  # no temporary left beside it


def test_writer_leaves_nothing_without_finish(tmp_path):
    dest = str(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with ds.DatasetWriter(dest) as w:
            w.add_image(0, ds.encode_png(_images(1)[0]))
            raise RuntimeError("boom")
    assert os.listdir(str(tmp_path)) == []
    os.makedirs(dest)
    open(os.path.join(dest, "keep.txt"), "w").close()
    with pytest.raises(ds.DatasetError, match="not empty"):
        ds.DatasetWriter(dest)


# Invalid inputs: each error names the offending file and the fix.


def _expect_error(path, *needles, **kwargs):
    with pytest.raises(ds.DatasetError) as info:
        ds.ImageFolderDataset(path, **kwargs)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("as_zip", [False, True])
def test_error_corrupt_image(tmp_path, as_zip):
    path = _write_set(tmp_path / "set", _images(2), names=["a.png", "b.png"], as_zip=as_zip)
    if as_zip:
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("broken.png", b"this is not a png")
    else:
        with open(os.path.join(path, "broken.png"), "wb") as f:
            f.write(b"this is not a png")
        with open(os.path.join(path, "notes.txt"), "w") as f:  # non-image extensions are ignored
            f.write("hello")
    _expect_error(path, "broken.png", "not a readable image", "delete")


def test_error_mixed_sizes(tmp_path):
    path = _write_set(tmp_path / "set", list(_images(2, res=8)) + list(_images(1, res=16)),
                      names=["a.png", "b.png", "c.png"])
    _expect_error(path, "c.png", "16x16", "a.png", "dataset_tool.py", "--resolution", "--transform")


def test_error_non_square(tmp_path):
    path = _write_set(tmp_path / "set", [np.zeros([8, 16, 3], np.uint8)], names=["wide.png"])
    _expect_error(path, "wide.png", "16x8", "square", "dataset_tool.py", "--transform=center-crop")


def test_error_non_power_of_two(tmp_path):
    path = _write_set(tmp_path / "set", _images(2, res=12), names=["a.png", "b.png"], as_zip=True)
    _expect_error(path, "a.png", "power of two", "dataset_tool.py", "--resolution=8")


def test_error_empty_and_missing_sources(tmp_path):
    os.makedirs(str(tmp_path / "empty"))
    _expect_error(str(tmp_path / "empty"), "empty", "no images found", "dataset_tool.py")
    _expect_error(str(tmp_path / "nothing_here"), "nothing_here", "no such folder")
    with open(str(tmp_path / "bad.zip"), "wb") as f:
        f.write(b"not a zip")
    _expect_error(str(tmp_path / "bad.zip"), "bad.zip", "not a readable zip")


def test_error_json_names_missing_file(tmp_path):
    path = _write_set(tmp_path / "set", _images(2), [0, 1], names=["a.png", "b.png"])
    os.remove(os.path.join(path, "b.png"))
    msg = _expect_error(path, "dataset.json", "'b.png'", "remove their entries", use_labels=True)
    assert "missing" in msg
    # Unconditional training does not read the labels, so a stale dataset.json does not block it.
    assert len(ds.ImageFolderDataset(path)) == 1


def test_error_unlabelled_image_and_bad_class_names(tmp_path):
    path = _write_set(tmp_path / "set", _images(2), names=["a.png", "b.png"])
    with open(os.path.join(path, "dataset.json"), "w") as f:
        json.dump({"labels": [["a.png", 0]]}, f)
    _expect_error(path, "dataset.json", "'b.png'", "has no label", use_labels=True)
    with open(os.path.join(path, "dataset.json"), "w") as f:
        json.dump({"labels": [["a.png", 0], ["b.png", 3]], "class_names": ["x", "y"]}, f)
    d = ds.ImageFolderDataset(path, use_labels=True)
    with pytest.raises(ds.DatasetError, match="class_names"):
        d.label_shape


def test_error_resolution_mismatch(tmp_path):
    path = _write_set(tmp_path / "set", _images(2), names=["a.png", "b.png"])
    _expect_error(path, "set", "8x8", "resolution=32", "dataset_tool.py", "--resolution=32", resolution=32)
    assert ds.ImageFolderDataset(path, resolution=8).resolution == 8
