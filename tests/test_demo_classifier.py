"""The shapes classifier behind the demo's score (issue 14, item 3): trained on freshly drawn
scenes, it is confident about the real 100-image set and not about spoiled scenes, noise or an
untrained generator; it is cached once trained; scripts/demo_score.py reports both shares."""

import json
import os
import pickle
import sys

import pytest
import torch
from click.testing import CliRunner

from training import shapes, shapes_classifier as sc
from helpers import torch_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def small_clf():
    """A quicker classifier than the default (fewer scenes and epochs), same network and data."""
    with torch_threads(1):
        return sc.train_classifier(num_scenes=1500, epochs=8)


def _real(resolution=64):
    images, labels, _names = shapes.make_shapes(num_images=100, resolution=resolution, seed=0)
    return torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels)


def test_training_scenes_are_not_the_training_set():
    x, y = sc.make_training_set(num_scenes=200, seed=0)
    real, _labels = _real(32)
    real = sc.to_input(real)
    assert (y == sc.OTHER).sum() > 20 and set(y.tolist()) == set(range(len(sc.CLASSES)))
    # No training scene equals one of the 100 real images.
    dist = torch.cdist(x.flatten(1), real.flatten(1))
    assert float(dist.min()) > 1.0


def test_confident_on_real_shapes_not_on_spoiled_ones(small_clf):
    real, labels = _real(64)
    report = sc.classify(small_clf, real)
    assert report['confident_share'] >= 0.8, report     # the quick variant; the default reaches 1.0
    probs = sc.probabilities(small_clf, real)
    assert float((probs.argmax(1) == labels).float().mean()) >= 0.95
    gen = torch.Generator().manual_seed(5)
    spoiled = sc._spoil(sc.to_input(real), labels, gen)
    noise = torch.rand([100, 3, 32, 32], generator=gen) * 2 - 1
    grey = torch.rand([20, 1, 32, 32], generator=gen) * 2 - 1     # one channel is accepted too
    for name, images in (('spoiled', spoiled), ('noise', noise), ('grey noise', grey)):
        assert sc.confident_share(small_clf, images) <= 0.1, name


def test_cached_after_first_training(tmp_path, monkeypatch, small_clf):
    calls = []

    def fake_train(**_kwargs):
        calls.append(1)
        return small_clf
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    monkeypatch.setattr(sc, 'train_classifier', fake_train)
    first = sc.load_classifier()
    second = sc.load_classifier()
    assert len(calls) == 1 and os.path.isfile(tmp_path / 'shapes-classifier' / f'{sc.VERSION}.pt')
    x = sc.to_input(_real(32)[0])
    torch.testing.assert_close(second(x), first(x))


def test_demo_score_reports_both_shares(tmp_path, monkeypatch, small_clf):
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    try:
        import demo_score
    finally:
        sys.path.pop(0)
    from kdgan_plugins.networks.fastgan import Generator
    monkeypatch.setattr(sc, 'load_classifier', lambda **_: small_clf)
    torch.manual_seed(0)
    G = Generator(z_dim=16, img_resolution=32, ngf=4).eval()   # untrained: no shapes
    pkl = tmp_path / 'net.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump({'G_ema': G}, f)
    data = shapes.materialize_builtin('builtin:shapes-32', str(tmp_path / 'data'))
    out = tmp_path / 'score.json'
    res = CliRunner().invoke(demo_score.main, [f'--network={pkl}', f'--data={data}', '--num=16',
                                               f'--grid={tmp_path / "grid.png"}', f'--json={out}'])
    assert res.exit_code == 0, res.output
    score = json.loads(out.read_text())
    assert score['real']['confident_share'] >= 0.8 and score['real']['num_images'] == 100
    assert score['generated']['confident_share'] <= 0.1 and score['generated']['num_images'] == 16
    assert os.path.isfile(tmp_path / 'grid.png') and 'generated:' in res.output and 'real' in res.output


def _blur(x, sigma):
    """Separable Gaussian blur (9 taps, replicate padding) of NCHW floats."""
    taps = torch.exp(-torch.arange(-4, 5, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = (taps / taps.sum()).repeat(x.shape[1], 1)
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [4, 4, 0, 0], mode='replicate'), k[:, None, None, :],
                                   groups=x.shape[1])
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, [0, 0, 4, 4], mode='replicate'), k[:, None, :, None],
                                      groups=x.shape[1])


def test_damage_a_person_looks_past_keeps_the_shape(small_clf):
    """A 1 px blur or pixel noise of std 0.1 leaves every shape plain to a person; the judge must
    still call many of them, while lumpy blobs stay 'other'."""
    real, labels = _real(32)
    x = sc.to_input(real)
    gen = torch.Generator().manual_seed(3)
    blurred = _blur(x, 1.0)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    # Bars for the quick variant (v3, the pixel-perfect judge, gave 3 % and 0 %; the default v5
    # gives 72 % and 99 %, docs/benchmarks.md).
    for name, images, bar in (('blur 1 px', blurred, 0.25), ('noise 0.1', noisy, 0.5)):
        assert sc.confident_share(small_clf, images) >= bar, name
        assert float((sc.probabilities(small_clf, images).argmax(1) == labels).float().mean()) >= 0.9, name
    assert sc.confident_share(small_clf, sc._blob(x, gen)) <= 0.1
