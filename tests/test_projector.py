"""projector.py on CPU: a tiny G, and a random-weight VGG16+LPIPS detector of the
real architecture, scripted and saved as `vgg16.pt` and loaded through the same
path as NVIDIA's file (the shared detector resolver + torch.jit.load)."""
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
from helpers import load_scripted_vgg16, save_random_vgg16
import projector
from metrics import detectors
from metrics.vgg16_lpips import lpips_distance
from training import networks


def tiny_G(c_dim=0, use_noise=True, seed=0):
    torch.manual_seed(seed)
    synthesis_kwargs = dict(channel_base=512, channel_max=32)
    if not use_noise:
        synthesis_kwargs['use_noise'] = False
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=synthesis_kwargs).eval()


def to_uint8(img):
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope='module')
def detector_dir(tmp_path_factory):
    return save_random_vgg16(tmp_path_factory.mktemp('detectors'))


@pytest.fixture(scope='module')
def vgg16(detector_dir):
    return load_scripted_vgg16(detector_dir)


@pytest.fixture(scope='module')
def target_setup():
    """G and a target image it can produce exactly: a mapped w away from w_avg, const noise."""
    G = tiny_G()
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(7).randn(1, G.z_dim).astype(np.float32))
        w_target = G.mapping(z, None)
        target = to_uint8(G.synthesis(w_target, noise_mode='const'))[0]
    return G, target


def test_lpips_vector_is_the_distance(vgg16):
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, [2, 3, 32, 32], generator=gen, dtype=torch.uint8)
    with torch.no_grad():
        fa = vgg16(a, resize_images=False, return_lpips=True)
        d = lpips_distance(vgg16, a, a.flip(0))
        feats = vgg16(a, return_features=True)
    assert fa.ndim == 2 and fa.shape[0] == 2
    assert d.shape == (2,) and torch.allclose(d[0], d[1]) and d[0] > 0
    assert float(lpips_distance(vgg16, a[:1], a[:1])) == 0
    assert feats.shape == (2, 4096) and (feats >= 0).all()


@pytest.mark.slow
def test_project_reduces_lpips(target_setup, vgg16):
    G, target = target_setup
    noise_before = {k: v.clone() for k, v in projector._noise_buffers(G).items()}
    assert len(noise_before) > 0

    torch.manual_seed(0)
    ws, dists = projector.project(G, target, vgg16=vgg16, num_steps=25, w_avg_samples=1000,
                                  device='cpu', return_dists=True)
    assert ws.shape == (25, G.num_ws, G.w_dim)
    assert torch.isfinite(ws).all()
    assert torch.equal(ws[-1, 0], ws[-1, -1])  # one w broadcast to every layer
    assert dists.shape == (25,) and np.isfinite(dists).all()

    # The distance seen by the optimiser falls...
    assert dists[-5:].mean() < 0.7 * dists[:3].mean(), dists
    # ...and so does the distance of the image the user gets (G's own const noise).
    with torch.no_grad():
        w_avg, _ = projector._latent_stats(G, 1000, 123, 'cpu')
        start = to_uint8(G.synthesis(w_avg.repeat([1, G.num_ws, 1]), noise_mode='const'))
        final = to_uint8(G.synthesis(ws[-1:], noise_mode='const'))
        d_start = float(lpips_distance(vgg16, start, target[None]))
        d_final = float(lpips_distance(vgg16, final, target[None]))
    assert d_final < 0.7 * d_start, (d_start, d_final)

    # G itself is untouched: the projector optimised a copy's noise buffers.
    for name, buf in projector._noise_buffers(G).items():
        assert torch.equal(buf, noise_before[name]) and not buf.requires_grad


def test_noise_regularizer():
    """Near zero for white noise, large for spatially correlated noise of the same variance."""
    torch.manual_seed(0)
    white = [torch.randn(32, 32), torch.randn(8, 8)]
    smooth = torch.nn.functional.interpolate(torch.randn(1, 1, 4, 4), size=(32, 32), mode='bilinear')[0, 0]
    smooth = (smooth - smooth.mean()) / smooth.square().mean().sqrt()
    white_reg = float(projector._noise_regularizer(white))
    smooth_reg = float(projector._noise_regularizer([smooth]))
    assert white_reg < 0.2 and smooth_reg > 1 and smooth_reg > 20 * white_reg, (white_reg, smooth_reg)


def test_generators_without_noise_and_conditional(vgg16):
    G = tiny_G(use_noise=False)
    assert projector._noise_buffers(G) == {}
    with torch.no_grad():
        target = to_uint8(G(torch.randn(1, G.z_dim), None, noise_mode='const'))[0]
    ws = projector.project(G, target, vgg16=vgg16, num_steps=3, w_avg_samples=100)
    assert ws.shape == (3, G.num_ws, G.w_dim) and torch.isfinite(ws).all()

    G = tiny_G(c_dim=3)
    ws = projector.project(G, target, vgg16=vgg16, num_steps=3, w_avg_samples=100)
    assert ws.shape == (3, G.num_ws, G.w_dim) and torch.isfinite(ws).all()

    with pytest.raises(ValueError, match='target must be'):
        projector.project(G, target[:, :16], vgg16=vgg16, num_steps=1, w_avg_samples=10)


@pytest.mark.slow
def test_cli_writes_outputs_and_generate_reads_them(target_setup, detector_dir, tmp_path):
    G, target = target_setup
    pkl = tmp_path / 'net.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    # A target that needs the center crop: 40x48 with the 32x32 image in the middle, resized up.
    big = PIL.Image.fromarray(target.permute(1, 2, 0).numpy(), 'RGB').resize((40, 40), PIL.Image.LANCZOS)
    canvas = PIL.Image.new('RGB', (40, 48), (255, 0, 0))
    canvas.paste(big, (0, 4))
    canvas.save(tmp_path / 'target.png')

    out = tmp_path / 'out'
    result = CliRunner().invoke(projector.run_projection, [
        '--network', str(pkl), '--target', str(tmp_path / 'target.png'), '--num-steps', '12', '--seed', '1',
        '--save-video', 'true', '--outdir', str(out), '--detector-dir', str(detector_dir)])
    assert result.exit_code == 0, result.output
    assert 'step   12/12: dist' in result.output
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
        assert os.path.isfile(out / 'proj.mp4')
    except ImportError:
        assert 'Skipping proj.mp4' in result.output and not os.path.exists(out / 'proj.mp4')

    w = np.load(out / 'projected_w.npz')['w']
    assert w.shape == (1, G.num_ws, G.w_dim) and w.dtype == np.float32
    for name in ['proj.png', 'target.png']:
        with PIL.Image.open(out / name) as img:
            assert img.size == (32, 32) and img.mode == 'RGB'
    # The crop removed the red bands: the saved target is close to the original image.
    saved = np.asarray(PIL.Image.open(out / 'target.png'), dtype=np.float32)
    assert np.abs(saved - target.permute(1, 2, 0).numpy()).mean() < 20

    gen_out = tmp_path / 'gen'
    result = CliRunner().invoke(generate.generate_images, ['--network', str(pkl), '--projected-w',
                                                           str(out / 'projected_w.npz'), '--outdir', str(gen_out)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(PIL.Image.open(gen_out / 'proj00.png')),
                          np.asarray(PIL.Image.open(out / 'proj.png')))


def test_cli_missing_detector_fails_fast(target_setup, tmp_path, monkeypatch):
    G, target = target_setup
    pkl = tmp_path / 'net.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    PIL.Image.fromarray(target.permute(1, 2, 0).numpy(), 'RGB').save(tmp_path / 'target.png')
    # Offline machine with an empty cache: the resolver's reachability probe fails.
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv(detectors.DEFAULT_ENV_VAR, raising=False)
    monkeypatch.setattr(detectors, '_probe', lambda url, timeout: 'no network (test)')
    empty = tmp_path / 'empty'
    empty.mkdir()
    result = CliRunner().invoke(projector.run_projection, [
        '--network', str(pkl), '--target', str(tmp_path / 'target.png'), '--num-steps', '5',
        '--outdir', str(tmp_path / 'out'), '--detector-dir', str(empty)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert 'vgg16.pt' in result.output and '--detector-dir' in result.output
    assert not os.path.exists(tmp_path / 'out')
