"""Inputs checked before anything is written (issue 12, item 4): labels in dataset_tool.py and
ImageFolderDataset, networks against the data (resolution, channels), option ranges, resume
compatibility, --outdir, corrupt zip members. Each failure is a one-line error, with no
traceback and no run folder (or output data set) left behind."""
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dataset_tool
from helpers import invoke_train, one_thread  # noqa: F401 (autouse fixture)
from training import dataset, networks

RES = 16
TINY = ['--metrics=none', '--device=cpu', '--cbase=256', '--cmax=16', '--map-depth=1', '--batch=4', '--workers=0',
        '--kimg=0.004', '--tick=0.004', '--aug=noaug']


def make_folder(folder, labels=None, n=4, res=RES, class_names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = (np.random.RandomState(i).rand(res, res, 3) * 255).astype(np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f'img{i}.png')
    if labels is not None:
        meta = {'labels': [[f'img{i}.png', label] for i, label in enumerate(labels)]}
        if class_names is not None:
            meta['class_names'] = class_names
        (folder / 'dataset.json').write_text(json.dumps(meta))
    return folder


BAD_LABELS = [
    ('null', [0, None, 1, 2], "'img1.png' is null"),
    ('string', [0, 'cat', 1, 2], "'img1.png' is 'cat' (a string)"),
    ('negative', [0, -1, 1, 2], "'img1.png' is -1; class indices start at 0"),
    ('huge', [0, 30000000, 1, 2], '30000001-class conditional model'),
    ('huge_float', [0, 3e7, 1, 2], '30000001-class conditional model'),
    ('boolean', [0, True, 1, 0], 'a boolean'),
    ('fraction', [0, 0.5, 1, 2], 'not a class index'),
    ('mixed', [0, [1.0, 2.0], 1, 2], 'use one kind for all'),
    ('lengths', [[0.5], [1.0, 2.0], [0.1], [0.2]], 'use one kind for all'),
    ('nan', [[0.5], [float('nan')], [0.1], [0.2]], 'non-finite'),
]


@pytest.mark.parametrize('name, labels, message', BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_dataset_tool_refuses_bad_labels_and_writes_nothing(tmp_path, name, labels, message):
    source = make_folder(tmp_path / name, labels)
    dest = tmp_path / 'out.zip'
    result = CliRunner().invoke(dataset_tool.main, ['--source', str(source), '--dest', str(dest)])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert message in result.output and 'dataset.json' in result.output, result.output
    assert not dest.exists() and os.listdir(tmp_path) == [name]


def test_dataset_tool_out_of_range_of_class_names(tmp_path):
    source = make_folder(tmp_path / 'src', [0, 1, 5, 1], class_names=['a', 'b', 'c'])
    result = CliRunner().invoke(dataset_tool.main, ['--source', str(source), '--dest', str(tmp_path / 'o.zip')])
    assert result.exit_code != 0 and "label 5 (of 'img2.png') has no entry in class_names" in result.output
    assert not (tmp_path / 'o.zip').exists()


def test_writer_refuses_partly_labelled_sets(tmp_path):
    writer = dataset.DatasetWriter(str(tmp_path / 'o.zip'))
    png = dataset.encode_png(np.zeros([4, 4, 3], np.uint8))
    writer.add_image(0, png, label=1)
    writer.add_image(1, png, label=None)
    with pytest.raises(dataset.DatasetError, match='some images have labels and some do not'):
        writer.finish()


@pytest.mark.parametrize('name, labels, message', BAD_LABELS[:5], ids=[c[0] for c in BAD_LABELS[:5]])
@pytest.mark.parametrize('cond', ['0', '1'])
def test_train_reports_bad_labels_before_the_run_folder(tmp_path, name, labels, message, cond):
    data = make_folder(tmp_path / name, labels)
    outdir = tmp_path / 'runs'
    result = invoke_train('--outdir', outdir, '--data', data, f'--cond={cond}', *TINY)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert 'bad --data' in result.output and message in result.output
    assert not outdir.exists()


def test_image_folder_dataset_checks_labels(tmp_path):
    data = make_folder(tmp_path / 'd', [0, 2, 1, 2])
    assert list(dataset.ImageFolderDataset(str(data), use_labels=True)._get_raw_labels()) == [0, 2, 1, 2]
    make_folder(tmp_path / 'd', [0, 2, None, 2])
    with pytest.raises(dataset.DatasetError, match="'img2.png' is null"):
        dataset.ImageFolderDataset(str(data), use_labels=True).label_shape


def _corrupt_tail(path, member):
    """Flip a byte near the end of a stored member: the header reads fine, the checksum does not."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size - 50)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x5A]))


def test_corrupt_zip_member_is_named_before_the_run_folder(tmp_path):
    path = tmp_path / 'data.zip'
    with zipfile.ZipFile(path, 'w') as zf:
        for i in range(4):
            pixels = (np.random.RandomState(i).rand(64, 64, 3) * 255).astype(np.uint8)
            with zf.open(f'img{i}.png', 'w') as f:
                PIL.Image.fromarray(pixels).save(f, format='png')
    _corrupt_tail(path, 'img2.png')
    outdir = tmp_path / 'runs'
    result = invoke_train('--outdir', outdir, '--data', path, *TINY)
    assert result.exit_code == 1, result.output
    assert 'img2.png' in result.output and 'corrupt zip member' in result.output
    assert not outdir.exists()


@pytest.mark.parametrize('dry_run', [True, False])
def test_cfg_that_cannot_build_for_the_data_is_refused(tmp_path, dry_run):
    data = make_folder(tmp_path / 'd')   # 16x16: FastGAN's smallest resolution is 32
    outdir = tmp_path / 'runs'
    result = invoke_train('--outdir', outdir, '--data', data, '--cfg=fastgan', '--recon=mse', '--metrics=none',
                          '--device=cpu', '--workers=0', *(['--dry-run'] if dry_run else []))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert 'fastgan.Generator cannot be built for this data set (16x16, 3 channel(s)' in result.output
    assert not outdir.exists()


@pytest.mark.parametrize('option', ['--kd-p=1.5', '--kd-p=-0.1', '--kd-p=nan', '--kd-agkd-weight=-1',
                                    '--kd-cgkd-weight=nan', '--gamma=nan', '--gamma=inf', '--kimg=inf',
                                    '--tick=inf', '--seed=-1', '--seed=4294967296', '--kd-diversity=-1'])
def test_option_ranges_fail_the_dry_run(tmp_path, option):
    data = make_folder(tmp_path / 'd')
    extra = ['--loss=kdgan.KDDLGAN', '--teacher=random:ViT-B-32'] if option.startswith('--kd') else []
    result = invoke_train('--outdir', tmp_path / 'runs', '--data', data, '--dry-run', *TINY, option, *extra)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option.split('=')[0]}'" in result.output


@pytest.mark.parametrize('outdir', ['afile', 'afile/runs'])
def test_outdir_under_a_regular_file(tmp_path, outdir):
    data = make_folder(tmp_path / 'd')
    (tmp_path / 'afile').write_text('keep me')
    for dry in (['--dry-run'], []):
        result = invoke_train('--outdir', tmp_path / outdir, '--data', data, *TINY, *dry)
        assert result.exit_code == 2 and "Invalid value for '--outdir'" in result.output, result.output
        assert 'is a file' in result.output
    assert (tmp_path / 'afile').read_text() == 'keep me'


def _tiny_nets(cmax):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=1),
                           synthesis_kwargs=dict(channel_base=256, channel_max=cmax, num_fp16_res=4, conv_clamp=256))
    D = networks.Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=256, channel_max=cmax,
                               num_fp16_res=4, conv_clamp=256)
    return G.eval(), D.eval()


def test_networks_resume_of_other_shapes_is_refused_before_the_run_folder(tmp_path):
    G, D = _tiny_nets(cmax=32)
    pkl = tmp_path / 'other.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    data = make_folder(tmp_path / 'd')
    outdir = tmp_path / 'runs'
    for dry in (['--dry-run'], []):
        result = invoke_train('--outdir', outdir, '--data', data, f'--resume={pkl}', *TINY, *dry)
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert 'has shape [32' in result.output and 'but [16' in result.output and '--cbase/--cmax' in result.output
        assert not outdir.exists()


def _fake_checkpoint(path, cmax, ranks, options):
    """The parts of an exact-resume checkpoint that the start-up checks read."""
    G, D = _tiny_nets(cmax)
    torch.save(dict(G=G.state_dict(), D=D.state_dict(), G_ema=G.state_dict(), ranks=[{}] * ranks,
                    options_json=json.dumps(options)), str(path))


@pytest.mark.parametrize('cmax, ranks, options, message', [
    (32, 1, {}, 'has shape [32'),
    (16, 2, {}, 'written by 2 process(es)'),
    (16, 1, {'batch_size': 64}, 'these differ: batch_size'),
])
def test_exact_resume_mismatch_is_refused_before_the_run_folder(tmp_path, cmax, ranks, options, message):
    ckpt = tmp_path / 'network-snapshot-000004.ckpt.pt'
    _fake_checkpoint(ckpt, cmax, ranks, options)
    data = make_folder(tmp_path / 'd')
    outdir = tmp_path / 'runs'
    result = invoke_train('--outdir', outdir, '--data', data, f'--resume={ckpt}', *TINY)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert message in result.output
    assert not outdir.exists()
