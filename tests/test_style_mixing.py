"""style_mixing.py: per-pair PNGs and grid.png from a tiny pickle; the grid's
layout, what mixing takes from each parent, and clear errors."""
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
import style_mixing
from training import networks

RES = 32


def tiny_G(c_dim, res=RES):
    torch.manual_seed(3 + c_dim)
    G = networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=512, channel_max=32)).eval()
    with torch.no_grad():  # a w_avg away from zero, so truncation has something to do
        G.mapping.w_avg.copy_(torch.linspace(-1, 1, 16))
    return G


@pytest.fixture(scope='module')
def pickles(tmp_path_factory):
    root = tmp_path_factory.mktemp('nets')
    paths = {}
    for name, c_dim, res in [('uncond', 0, RES), ('cond', 3, RES), ('small', 0, 8)]:
        G = tiny_G(c_dim, res)
        paths[name] = str(root / f'{name}.pkl')
        with open(paths[name], 'wb') as f:
            pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    return paths


def run(*args):
    return CliRunner().invoke(style_mixing.generate_style_mix, [str(a) for a in args])


def load(path):
    with PIL.Image.open(path) as img:
        return np.asarray(img.convert('RGB'))


def test_writes_pairs_and_grid(pickles, tmp_path):
    out = tmp_path / 'mix'
    result = run('--network', pickles['uncond'], '--rows', '1,2', '--cols', '5-7', '--styles', '0-3', '--outdir', out)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows, cols = [1, 2], [5, 6, 7]
    expected = {f'{r}-{c}.png' for r in rows for c in cols} | {f'{s}-{s}.png' for s in rows + cols} | {'grid.png'}
    assert set(os.listdir(out)) == expected
    grid = load(out / 'grid.png')
    assert grid.shape == (RES * (len(rows) + 1), RES * (len(cols) + 1), 3)
    cell = lambda i, j: grid[RES * i:RES * (i + 1), RES * j:RES * (j + 1)]
    assert not cell(0, 0).any()  # top-left is empty
    for j, c in enumerate(cols, start=1):
        assert np.array_equal(cell(0, j), load(out / f'{c}-{c}.png'))
    for i, r in enumerate(rows, start=1):
        assert np.array_equal(cell(i, 0), load(out / f'{r}-{r}.png'))
        for j, c in enumerate(cols, start=1):
            mixed = load(out / f'{r}-{c}.png')
            assert np.array_equal(cell(i, j), mixed)
            # Partial mixing gives something new: neither parent.
            assert not np.array_equal(mixed, load(out / f'{r}-{r}.png'))
            assert not np.array_equal(mixed, load(out / f'{c}-{c}.png'))


def test_mixing_semantics(pickles):
    """All styles from the column reproduce the column image; no mixed layer keeps the row image;
    the unmixed images equal generate.py's for the same seeds."""
    G = generate.load_generator(pickles['uncond'], torch.device('cpu'))
    label = torch.zeros([1, 0])
    with torch.no_grad():
        w = style_mixing.map_seeds(G, [1, 5], label, 1)
        everything = style_mixing.mix_images(G, w, [1], [5], list(range(G.num_ws)), 'const')
        again = style_mixing.mix_images(G, w, [1], [5], list(range(G.num_ws)), 'const')
        z = torch.from_numpy(np.random.RandomState(1).randn(1, G.z_dim))
        direct = G(z, label, noise_mode='const')
    assert np.array_equal(everything[(1, 5)], everything[(5, 5)])
    assert all(np.array_equal(everything[k], again[k]) for k in everything)  # deterministic with const noise
    direct = (direct.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()
    assert np.abs(direct.astype(int) - everything[(1, 1)].astype(int)).max() <= 1


def test_truncation_moves_towards_w_avg(pickles):
    G = generate.load_generator(pickles['uncond'], torch.device('cpu'))
    label = torch.zeros([1, 0])
    with torch.no_grad():
        plain = style_mixing.map_seeds(G, [3], label, 1)[3]
        half = style_mixing.map_seeds(G, [3], label, 0.5)[3]
    assert torch.allclose(half, G.mapping.w_avg + 0.5 * (plain - G.mapping.w_avg), atol=1e-6)


def test_any_generator_with_mapping_and_synthesis():
    """A duck-typed generator (e.g. a plug-in whose mapping passes z through) works."""
    class PassThroughMapping(torch.nn.Module):
        def forward(self, z, c):
            return z.unsqueeze(1).repeat(1, 2, 1)

    class ColourSynthesis(torch.nn.Module):
        def forward(self, ws, noise_mode='const'):
            colour = torch.stack([ws[:, 0, 0], ws[:, 1, 1], ws[:, 1, 2]], dim=1).tanh()
            return colour[:, :, None, None].expand(-1, -1, 4, 4)

    class G:
        z_dim, c_dim, w_dim, num_ws = 3, 0, 3, 2
        mapping = PassThroughMapping()
        synthesis = ColourSynthesis()

    w = style_mixing.map_seeds(G, [0, 1], torch.zeros([1, 0]), 1)
    images = style_mixing.mix_images(G, w, [0], [1], [1], 'const')
    # Channel 0 comes from style 0 (the row), channels 1-2 from style 1 (the column).
    assert np.array_equal(images[(0, 1)][..., 0], images[(0, 0)][..., 0])
    assert np.array_equal(images[(0, 1)][..., 1:], images[(1, 1)][..., 1:])
    with pytest.raises(Exception, match='w_avg'):
        style_mixing.map_seeds(G, [0], torch.zeros([1, 0]), 0.5)


def test_default_styles_fit_small_networks(pickles, tmp_path):
    G = generate.load_generator(pickles['small'], torch.device('cpu'))
    assert G.num_ws < 7
    result = run('--network', pickles['small'], '--rows', '0', '--cols', '1', '--outdir', tmp_path)
    assert result.exit_code == 0, result.output + repr(result.exception)
    # 0-6 would take every style (each mix = its column image); the coarser half is taken (issue 16).
    assert f'styles {",".join(str(i) for i in range(G.num_ws // 2))} from the columns' in result.output
    assert (tmp_path / 'grid.png').exists()


def test_conditional_network_takes_class(pickles, tmp_path):
    result = run('--network', pickles['cond'], '--rows', '0', '--cols', '1', '--outdir', tmp_path / 'a')
    assert result.exit_code == 2 and 'give --class=0..2' in result.output
    result = run('--network', pickles['cond'], '--rows', '0', '--cols', '1', '--class', 2, '--outdir', tmp_path / 'b')
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / 'b' / 'grid.png').exists()


@pytest.mark.parametrize('args,phrase', [
    (['--styles', '0-40'], 'out of range'),
    (['--rows', 'x'], 'neither a number nor a range'),
    (['--network', '/no/such.pkl'], 'file not found'),
])
def test_clear_errors(pickles, tmp_path, args, phrase):
    options = {'--network': pickles['uncond'], '--rows': '0', '--cols': '1', '--outdir': tmp_path}
    options.update(zip(args[::2], args[1::2]))  # the case's value replaces the good one
    result = run(*[x for pair in options.items() for x in pair])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert phrase in result.output, result.output
