"""dataset_tool.py on CIFAR-10/100 python archives: CIFAR-100 is read (fine labels, its 100 class
names), and --subset-fraction makes KD-DLGAN's seeded, class-balanced 10 % / 20 % sets (issue 15).

The archives are synthetic but in the real layout: pickled dicts (protocol 2, as the published
files) with the real keys, under cifar-100-python/ (train, test, meta) or cifar-10-batches-py/.
"""
import io
import json
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import dataset_tool
from training import dataset as ds

PER_CLASS = 10   # training images per class in the synthetic CIFAR-100


def _tar(path, folder, blobs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, 'w:gz') as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f'{folder}/{name}')
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def make_cifar100(tmp_path):
    """(archive path, train dict): 100 classes x PER_CLASS training images, 2 per class for test."""
    rng = np.random.RandomState(3)
    fine = [f'fine{k:02d}' for k in range(100)]
    meta = dict(fine_label_names=fine, coarse_label_names=[f'coarse{k}' for k in range(20)])

    def split(per_class, tag):
        labels = [k for k in range(100) for _ in range(per_class)]
        order = rng.permutation(len(labels))
        labels = [labels[i] for i in order]
        return dict(filenames=[f'{tag}_{i}.png' for i in range(len(labels))], batch_label=f'{tag} batch 1 of 1',
                    fine_labels=labels, coarse_labels=[k // 5 for k in labels],
                    data=rng.randint(0, 256, size=[len(labels), 3072]).astype(np.uint8))

    train, test = split(PER_CLASS, 'train'), split(2, 'test')
    blobs = {name: pickle.dumps(obj, protocol=2) for name, obj in (('meta', meta), ('train', train), ('test', test))}
    return _tar(str(tmp_path / 'src' / 'cifar-100-python.tar.gz'), 'cifar-100-python', blobs), train


def make_cifar10_folder(tmp_path, per_batch=20):
    rng = np.random.RandomState(4)
    folder = tmp_path / 'src10' / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    (folder / 'batches.meta').write_bytes(pickle.dumps(dict(label_names=names, num_cases_per_batch=per_batch,
                                                             num_vis=3072), protocol=2))
    for i, name in enumerate([f'data_batch_{k}' for k in range(1, 6)] + ['test_batch']):
        batch = dict(batch_label=name, labels=[(i + j) % 10 for j in range(per_batch)],
                     data=rng.randint(0, 256, size=[per_batch, 3072]).astype(np.uint8),
                     filenames=[f'{name}_{j}.png' for j in range(per_batch)])
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return str(folder.parent)


def convert(*args):
    result = CliRunner().invoke(dataset_tool.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def refuse(*args, needles=()):
    result = CliRunner().invoke(dataset_tool.main, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    for needle in needles:
        assert needle in result.output, result.output


def read_labels(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read('dataset.json'))


def test_cifar100_archive_fine_labels_and_class_names(tmp_path):
    src, train = make_cifar100(tmp_path)
    out = convert('--source', src, '--dest', tmp_path / 'head.zip', '--max-images', 120)
    assert 'CIFAR-100 train' in out
    d = ds.ImageFolderDataset(str(tmp_path / 'head.zip'), use_labels=True)
    assert len(d) == 120 and d.image_shape == [3, 32, 32]
    assert d.class_names == [f'fine{k:02d}' for k in range(100)]
    for i in (0, 1, 117):
        np.testing.assert_array_equal(d[i][0], train['data'][i].reshape(3, 32, 32))
        assert int(np.argmax(d.get_label(i))) == train['fine_labels'][i]
    convert('--source', src, '--dest', tmp_path / 'test.zip', '--split', 'test')
    assert len(ds.ImageFolderDataset(str(tmp_path / 'test.zip'))) == 200


@pytest.mark.parametrize('fraction', [0.1, 0.2])
def test_cifar100_fraction_is_class_balanced_seeded_and_drawn_from_the_set(tmp_path, fraction):
    src, train = make_cifar100(tmp_path)
    dest = tmp_path / f'f{fraction}.zip'
    convert('--source', src, '--dest', dest, '--subset-fraction', fraction, '--seed', 7)
    meta = read_labels(dest)
    assert meta['class_names'] == [f'fine{k:02d}' for k in range(100)]
    counts = np.bincount([label for _name, label in meta['labels']], minlength=100)
    per_class = round(fraction * PER_CLASS)
    assert counts.tolist() == [per_class] * 100
    # Each kept image is one of the training images, with that image's label.
    d = ds.ImageFolderDataset(str(dest), use_labels=True)
    rows = {train['data'][i].tobytes(): train['fine_labels'][i] for i in range(len(train['fine_labels']))}
    for i in range(len(d)):
        assert rows[d[i][0].reshape(-1).tobytes()] == int(np.argmax(d.get_label(i)))
    # The same seed picks the same images; another seed others.
    convert('--source', src, '--dest', tmp_path / 'again.zip', '--subset-fraction', fraction, '--seed', 7)
    convert('--source', src, '--dest', tmp_path / 'other.zip', '--subset-fraction', fraction, '--seed', 8)
    again = ds.ImageFolderDataset(str(tmp_path / 'again.zip'))
    other = ds.ImageFolderDataset(str(tmp_path / 'other.zip'))
    assert all(np.array_equal(d[i][0], again[i][0]) for i in range(len(d)))
    assert not all(np.array_equal(d[i][0], other[i][0]) for i in range(len(d)))


def test_cifar10_folder_fraction(tmp_path):
    src = make_cifar10_folder(tmp_path)
    dest = tmp_path / 'c10.zip'
    out = convert('--source', src, '--dest', dest, '--subset-fraction', 0.2)
    assert 'CIFAR-10 train' in out
    meta = read_labels(dest)
    assert meta['class_names'][:2] == ['airplane', 'automobile']
    # 5 batches x 20 = 100 images, 10 per class: 20 % = 2 of every class.
    assert np.bincount([label for _n, label in meta['labels']], minlength=10).tolist() == [2] * 10


def test_fraction_is_checked(tmp_path):
    src, _train = make_cifar100(tmp_path)
    refuse('--source', src, '--dest', tmp_path / 'a', '--subset-fraction', 0, needles=['(0, 1]'])
    refuse('--source', src, '--dest', tmp_path / 'b', '--subset-fraction', 1.5, needles=['(0, 1]'])
    refuse('--source', src, '--dest', tmp_path / 'c', '--subset-fraction', 0.1, '--subset-per-class', 2,
           needles=['not both'])
    assert dataset_tool.per_class_of_fraction([0, 0, 1, 1, 2, 2] * 50, 0.1) == 10


def test_unknown_archive_is_named(tmp_path):
    path = _tar(str(tmp_path / 'x.tar.gz'), 'something', {'readme': b'hello'})
    refuse('--source', path, '--dest', tmp_path / 'o', needles=['cifar-100-python.tar.gz'])
