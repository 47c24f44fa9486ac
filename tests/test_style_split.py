"""style_mixing.py picks a split that mixes something for the network it loads (FastGAN: its SLE
style), and KD-DLGAN says which prompts its teacher uses and how to choose them (issue 16, item 7)."""
import os
import pickle

import numpy as np
import PIL.Image
import torch
from click.testing import CliRunner

import style_mixing
from helpers import dry_run
from kdgan_plugins.networks.fastgan import Generator as FastGANGenerator
from training import networks


def save_pickle(G, path):
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    return str(path)


def mix(pkl, out, *extra):
    result = CliRunner().invoke(style_mixing.generate_style_mix, ['--network', pkl, '--rows', '1', '--cols', '10',
                                                                  '--outdir', str(out)] + [str(a) for a in extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    load = lambda name: np.asarray(PIL.Image.open(os.path.join(out, name)).convert('RGB'))
    return result.output, load('1-10.png'), load('1-1.png'), load('10-10.png')


def test_fastgan_default_mixes_its_sle_style(tmp_path):
    torch.manual_seed(0)
    G = FastGANGenerator(z_dim=32, c_dim=0, img_resolution=64, img_channels=3, ngf=8).eval()
    pkl = save_pickle(G, tmp_path / 'fastgan.pkl')
    output, mixed, row, col = mix(pkl, tmp_path / 'default')
    assert 'No --styles: styles 1,' in output and 'FastGAN' in output, output
    assert not np.array_equal(mixed, col) and not np.array_equal(mixed, row)   # a real mix, not the column again
    _out, explicit, _r, _c = mix(pkl, tmp_path / 'explicit', '--styles', '1')
    assert np.array_equal(mixed, explicit)
    output, everything, _r, col = mix(pkl, tmp_path / 'all', '--styles', '0-1')   # told otherwise: obeyed, warned
    assert np.array_equal(everything, col) and 'Warning' in output and 'repeats its column image' in output


def test_small_stylegan2_default_does_not_take_every_style(tmp_path):
    torch.manual_seed(1)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=8, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=512, channel_max=32)).eval()
    assert G.num_ws <= 7
    output, mixed, row, col = mix(save_pickle(G, tmp_path / 'sg2.pkl'), tmp_path / 'mix')
    assert 'coarser half' in output, output
    assert not np.array_equal(mixed, col)


def _plain_folder(folder):
    os.makedirs(folder)
    for i in range(2):
        PIL.Image.fromarray(np.random.RandomState(i).randint(0, 256, [64, 64, 3], dtype=np.uint8)).save(
            os.path.join(folder, f'{i}.png'))
    return str(folder)


def test_kd_prints_its_prompts_and_how_to_set_them(tmp_path):
    data = _plain_folder(tmp_path / 'photos')   # the user's own images: no class names
    kd = ['--cfg=fastgan', '--loss=kdgan.KDDLGAN', '--teacher=random:ViT-B-32', '--recon=mse']
    _opts, _names, out = dry_run(tmp_path / 'runs', data, *kd)
    line = next(l for l in out.splitlines() if l.startswith('Teacher prompts:'))
    assert "'A photo of a happy'" in line and 'face-expression' in line and '--kd-labels' in line, line
    _opts, _names, out = dry_run(tmp_path / 'runs', data, *kd, '--kd-labels=sun,cloud')
    line = next(l for l in out.splitlines() if l.startswith('Teacher prompts:'))
    assert "2 prompts: 'A photo of a sun', 'A photo of a cloud'" in line and 'face-expression' not in line, line
