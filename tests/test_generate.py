"""generate.py: one PNG per seed / projected w, and clear errors (no traceback)
for the usual mistakes."""
import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
from training import networks

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')


def tiny_G(c_dim):
    torch.manual_seed(c_dim)
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=3,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=512, channel_max=32)).eval()


@pytest.fixture(scope='module')
def pickles(tmp_path_factory):
    root = tmp_path_factory.mktemp('nets')
    paths = {}
    for name, c_dim in [('uncond', 0), ('cond', 4)]:
        paths[name] = str(root / f'{name}.pkl')
        G = tiny_G(c_dim)
        with open(paths[name], 'wb') as f:
            pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    return paths


def run(*args):
    return CliRunner().invoke(generate.generate_images, [str(a) for a in args])


def assert_clean_error(result, code, *phrases):
    """A click error: given exit code, message in the output, no Python exception escaping."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    for phrase in phrases:
        assert phrase in result.output, result.output


def test_one_png_per_seed(pickles, tmp_path):
    out = tmp_path / 'out'
    result = run('--network', pickles['uncond'], '--seeds', '0-2,7', '--outdir', out)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ['seed0000.png', 'seed0001.png', 'seed0002.png', 'seed0007.png']
    for name in os.listdir(out):
        with PIL.Image.open(out / name) as img:
            assert img.size == (32, 32) and img.mode == 'RGB'
    assert result.output.count('Generating image for seed') == 4
    assert ('Using device: cuda' if torch.cuda.is_available() else 'Using device: cpu') in result.output

    # Const noise and seeded z: the same command gives the same pixels; another seed does not.
    again = tmp_path / 'again'
    assert run('--network', pickles['uncond'], '--seeds', '7', '--outdir', again).exit_code == 0
    first = np.asarray(PIL.Image.open(out / 'seed0007.png'))
    assert np.array_equal(first, np.asarray(PIL.Image.open(again / 'seed0007.png')))
    assert not np.array_equal(first, np.asarray(PIL.Image.open(out / 'seed0000.png')))


def test_conditional_network_with_class(pickles, tmp_path):
    result = run('--network', pickles['cond'], '--seeds', '1', '--class', 2, '--trunc', 0.7,
                 '--noise-mode', 'random', '--outdir', tmp_path)
    assert result.exit_code == 0, result.output
    assert os.path.isfile(tmp_path / 'seed0001.png')


def test_projected_w(pickles, tmp_path):
    G = tiny_G(0)
    np.savez(tmp_path / 'w.npz', w=np.random.RandomState(0).randn(2, G.num_ws, G.w_dim).astype(np.float32))
    out = tmp_path / 'out'
    result = run('--network', pickles['uncond'], '--projected-w', tmp_path / 'w.npz', '--outdir', out)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ['proj00.png', 'proj01.png']

    np.savez(tmp_path / 'bad.npz', w=np.zeros([2, G.num_ws + 1, G.w_dim], np.float32))
    assert_clean_error(run('--network', pickles['uncond'], '--projected-w', tmp_path / 'bad.npz', '--outdir', out),
                       1, 'needs [N, ')


def test_missing_network_file(tmp_path):
    result = run('--network', tmp_path / 'nope.pkl', '--seeds', '0', '--outdir', tmp_path)
    assert_clean_error(result, 2, 'file not found', 'nope.pkl')


def test_unconditional_network_rejects_class(pickles, tmp_path):
    result = run('--network', pickles['uncond'], '--seeds', '0', '--class', 1, '--outdir', tmp_path / 'o')
    assert_clean_error(result, 2, 'unconditional')
    assert not os.path.exists(tmp_path / 'o' / 'seed0000.png')


def test_conditional_network_needs_class(pickles, tmp_path):
    assert_clean_error(run('--network', pickles['cond'], '--seeds', '0', '--outdir', tmp_path),
                       2, 'conditional', '--class')
    assert_clean_error(run('--network', pickles['cond'], '--seeds', '0', '--class', 9, '--outdir', tmp_path),
                       2, 'not in 0..3')


def test_needs_seeds_or_projected_w(pickles, tmp_path):
    assert_clean_error(run('--network', pickles['uncond'], '--outdir', tmp_path), 2, '--seeds', '--projected-w')


def test_bad_seed_ranges(pickles, tmp_path):
    assert generate.parse_range('0-3,7, 9') == [0, 1, 2, 3, 7, 9]
    for bad in ['3-1', 'a', '1,,2', str(2 ** 32)]:
        assert_clean_error(run('--network', pickles['uncond'], '--seeds', bad, '--outdir', tmp_path), 2, '--seeds')


def test_not_a_pickle(tmp_path):
    bad = tmp_path / 'bad.pkl'
    bad.write_bytes(b'definitely not a pickle')
    assert_clean_error(run('--network', bad, '--seeds', '0', '--outdir', tmp_path), 1, 'not a network pickle')


def test_script_runs_from_its_folder(pickles, tmp_path):
    """As users run it: `python generate.py ...` from stylegan2_ada/, errors without tracebacks."""
    proc = subprocess.run([sys.executable, 'generate.py', '--network', pickles['uncond'], '--seeds', '3',
                           '--outdir', str(tmp_path)], cwd=HARNESS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert os.path.isfile(tmp_path / 'seed0003.png')
    proc = subprocess.run([sys.executable, 'generate.py', '--network', str(tmp_path / 'missing.pkl'), '--seeds', '3',
                           '--outdir', str(tmp_path)], cwd=HARNESS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and 'file not found' in proc.stderr and 'Traceback' not in proc.stderr
