"""FastGAN pickles with the StyleGAN2-ADA tools (issue 5, done-when 4).

A narrow FastGAN (ngf = ndf = 8, z_dim = 32, 64x64; one unconditional, one
conditional on the five classes of builtin:shapes-64) is saved the way the
training loop saves a snapshot ({G, D, G_ema, augment_pipe,
training_set_kwargs}, every module a deep copy in eval mode; G_ema with BN
running statistics re-estimated for its weights, noise strengths non-zero as
after some training), and then:

* generate.py writes one PNG per seed, the same bytes in another process,
  equal to G_ema's own output; a conditional pickle needs --class;
* style_mixing.py --styles=1 (FastGAN's SLE slot) writes the pairs and the
  grid; each mix differs from both parents, keeps the layout of its content
  (row) parent, is exactly the content trunk with the style latent's SLE
  inputs, and repeats byte for byte in another process;
* projector.py writes projected_w.npz [1, num_ws, w_dim] and proj.png, which
  generate.py --projected-w reproduces; `project()` lowers the LPIPS distance
  (random-weight VGG16 of the real architecture, TorchScript, loaded through
  the detector resolver);
* calc_metrics.py computes a sized FID from the pickle's own
  training_set_kwargs with a tiny TorchScript detector and appends a finite
  value to metric-<name>.jsonl beside the pickle.

Scripts run as subprocesses from stylegan2_ada/ (one thread each); repeats
run in this process through click, so "same bytes" also means "same bytes
in another process".
"""
import copy
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import dnnlib
import generate
from helpers import load_scripted_vgg16, one_thread, save_random_vgg16  # noqa: F401  (one_thread: autouse fixture)
import legacy
import projector
import style_mixing
from metrics.vgg16_lpips import lpips_distance
from test_metrics_e2e import save_test_detectors
from training import shapes

from kdgan_plugins.augment.diffaugment import DiffAugment
from kdgan_plugins.networks.fastgan import Discriminator, Generator, NoiseInjection

# The stand-in detectors are TorchScript, which recent torch calls deprecated.
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')
RES = 64
Z_DIM = 32
NUM_CLASSES = len(shapes.SHAPE_CLASSES)
NUM_IMAGES = 40

# Pickles in the harness format.


def build_snapshot(c_dim, data_path, seed):
    """The dict the training loop pickles, for a narrow FastGAN at 64x64."""
    torch.manual_seed(seed)
    G = Generator(z_dim=Z_DIM, c_dim=c_dim, w_dim=None, img_resolution=RES, img_channels=3, ngf=8)
    D = Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=3, ndf=8)
    with torch.no_grad():  # as after some training: the noise inputs matter
        for m in G.modules():
            if isinstance(m, NoiseInjection):
                m.weight.fill_(0.3)
    G_ema = copy.deepcopy(G).recompute_bn_stats(num_batches=4, batch_size=16, seed=seed)
    training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data_path,
                                          use_labels=c_dim > 0, max_size=NUM_IMAGES, xflip=False, resolution=RES)
    snapshot = dict(training_set_kwargs=dict(training_set_kwargs))
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', DiffAugment())]:
        snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    return snapshot


def load_G(pkl):
    with open(pkl, 'rb') as f:
        return legacy.load_network_pkl(f)['G_ema']


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp('fastgan-tools')
    data = shapes.materialize_builtin(f'builtin:shapes-{RES}', str(root / 'datasets'), num_images=NUM_IMAGES)
    paths = {}
    for name, c_dim, seed in [('uncond', 0, 1), ('cond', NUM_CLASSES, 2)]:
        run_dir = root / name
        run_dir.mkdir()
        paths[name] = str(run_dir / 'network-snapshot-000000.pkl')
        with open(paths[name], 'wb') as f:
            pickle.dump(build_snapshot(c_dim, data, seed), f)
    G = load_G(paths['uncond'])
    assert G.num_ws == 2 and G.w_dim == Z_DIM and not G.training
    assert load_G(paths['cond']).w_dim == Z_DIM + NUM_CLASSES
    return dnnlib.EasyDict(root=root, data=data, **paths)


def script_env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
    env.pop('KDGAN_DETECTOR_DIR', None)
    return env


def run_script(script, args, tmp_path, timeout=300):
    proc = subprocess.run([sys.executable, script] + [str(a) for a in args], cwd=HARNESS, env=script_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def invoke(command, *args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def load_png(path):
    with PIL.Image.open(path) as img:
        assert img.mode == 'RGB'
        return np.asarray(img)


def to_hwc_uint8(img):
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()


def seed_z(G, seed):
    """generate.py's and style_mixing.py's latent for a seed."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(torch.float32)


def seed_ws(G, seed, c=None):
    return G.mapping(seed_z(G, seed), c)


def mean_abs_diff(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def layout_corr(a, b):
    """Correlation of the luminance maps of two HWC uint8 images."""
    a = a.astype(np.float64).mean(2).ravel()
    b = b.astype(np.float64).mean(2).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def same_files(dir_a, dir_b):
    names = sorted(os.listdir(dir_a))
    assert names == sorted(os.listdir(dir_b))
    for name in names:
        assert (dir_a / name).read_bytes() == (dir_b / name).read_bytes(), name
    return names

# generate.py


def test_generate_one_png_per_seed_deterministic(nets, tmp_path):
    seeds = [0, 1, 5]
    run_script('generate.py', ['--network', nets.uncond, '--seeds', '0-1,5', '--outdir', tmp_path / 'a'], tmp_path)
    invoke(generate.generate_images, '--network', nets.uncond, '--seeds', '0-1,5', '--outdir', tmp_path / 'b')
    names = same_files(tmp_path / 'a', tmp_path / 'b')          # same bytes, another process
    assert names == [f'seed{s:04d}.png' for s in seeds]

    G = load_G(nets.uncond)
    images = [load_png(tmp_path / 'a' / name) for name in names]
    for seed, img in zip(seeds, images):
        assert img.shape == (RES, RES, 3)
        with torch.no_grad():
            expected = to_hwc_uint8(G.synthesis(seed_ws(G, seed), noise_mode='const'))
        assert np.array_equal(img, expected), seed             # G_ema's own image, const noise
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


def test_generate_conditional_needs_class(nets, tmp_path):
    result = CliRunner().invoke(generate.generate_images, ['--network', nets.cond, '--seeds', '3',
                                                           '--outdir', str(tmp_path / 'none')])
    assert result.exit_code == 2 and '--class' in result.output and f'{NUM_CLASSES} classes' in result.output
    assert not os.path.exists(tmp_path / 'none' / 'seed0003.png')

    run_script('generate.py', ['--network', nets.cond, '--seeds', '3', '--class', 1, '--outdir', tmp_path / 'a'],
               tmp_path)
    invoke(generate.generate_images, '--network', nets.cond, '--seeds', '3', '--class', 1, '--outdir', tmp_path / 'b')
    invoke(generate.generate_images, '--network', nets.cond, '--seeds', '3', '--class', 4, '--outdir', tmp_path / 'c')
    assert same_files(tmp_path / 'a', tmp_path / 'b') == ['seed0003.png']
    class1 = load_png(tmp_path / 'a' / 'seed0003.png')
    class4 = load_png(tmp_path / 'c' / 'seed0003.png')
    G = load_G(nets.cond)
    with torch.no_grad():
        c = torch.zeros([1, NUM_CLASSES])
        c[0, 1] = 1
        assert np.array_equal(class1, to_hwc_uint8(G(seed_z(G, 3), c, noise_mode='const')))
    assert not np.array_equal(class1, class4)                  # the label reaches the image

# style_mixing.py


def test_style_mixing_swaps_sle_inputs(nets, tmp_path):
    rows, cols = [1, 2, 3], [10, 11]
    args = ['--network', nets.uncond, '--rows', '1-3', '--cols', '10,11', '--styles', '1']
    run_script('style_mixing.py', args + ['--outdir', tmp_path / 'a'], tmp_path)
    invoke(style_mixing.generate_style_mix, *args, '--outdir', tmp_path / 'b')
    names = same_files(tmp_path / 'a', tmp_path / 'b')          # deterministic for fixed inputs
    expected = {f'{r}-{c}.png' for r in rows for c in cols} | {f'{s}-{s}.png' for s in rows + cols} | {'grid.png'}
    assert set(names) == expected

    out = tmp_path / 'a'
    img = {name[:-4]: load_png(out / name) for name in names}
    grid = img['grid']
    assert grid.shape == (RES * (len(rows) + 1), RES * (len(cols) + 1), 3)
    assert np.array_equal(grid[RES:2 * RES, RES:2 * RES], img['1-10'])

    G = load_G(nets.uncond)
    for r in rows:
        for c in cols:
            mix, content, style = img[f'{r}-{c}'], img[f'{r}-{r}'], img[f'{c}-{c}']
            # Differs from both parents (by more than rounding)...
            d_content, d_style = mean_abs_diff(mix, content), mean_abs_diff(mix, style)
            assert d_content > 2 and d_style > 2, (r, c, d_content, d_style)
            # ...keeps the content parent's layout, not the style parent's...
            corr_content, corr_style = layout_corr(mix, content), layout_corr(mix, style)
            assert corr_content > 0.25 and corr_content > corr_style + 0.2, (r, c, corr_content, corr_style)
            # ...and is the content trunk (ws[:, 0]) excited by the style latent's SLE inputs (ws[:, 1]).
            with torch.no_grad():
                ws = torch.stack([seed_ws(G, r)[:, 0], seed_ws(G, c)[:, 1]], dim=1)
                assert np.array_equal(mix, to_hwc_uint8(G.synthesis(ws, noise_mode='const')))


def test_style_mixing_all_styles_and_conditional(nets, tmp_path):
    # Both slots from the column: the mix is the column image itself.
    invoke(style_mixing.generate_style_mix, '--network', nets.uncond, '--rows', '1', '--cols', '10',
           '--styles', '0-1', '--outdir', tmp_path / 'all')
    assert np.array_equal(load_png(tmp_path / 'all' / '1-10.png'), load_png(tmp_path / 'all' / '10-10.png'))
    # FastGAN has two styles only.
    result = CliRunner().invoke(style_mixing.generate_style_mix, ['--network', nets.uncond, '--rows', '1', '--cols',
                                                                  '10', '--styles', '2', '--outdir',
                                                                  str(tmp_path / 'bad')])
    assert result.exit_code == 2 and 'this network has 2 styles' in result.output

    # Conditional: the label travels in each slot; the swap still mixes, repeatably.
    for out in ('c1', 'c2'):
        invoke(style_mixing.generate_style_mix, '--network', nets.cond, '--rows', '1', '--cols', '10', '--styles', '1',
               '--class', 2, '--outdir', tmp_path / out)
    same_files(tmp_path / 'c1', tmp_path / 'c2')
    mix, content, style = (load_png(tmp_path / 'c1' / f'{n}.png') for n in ('1-10', '1-1', '10-10'))
    assert not np.array_equal(mix, content) and not np.array_equal(mix, style)
    assert layout_corr(mix, content) > layout_corr(mix, style)

# projector.py


@pytest.fixture(scope='module')
def vgg_dir(tmp_path_factory):
    return save_random_vgg16(tmp_path_factory.mktemp('vgg16'))


@pytest.fixture(scope='module')
def vgg16(vgg_dir):
    return load_scripted_vgg16(vgg_dir)


def target_image(G, seed=7):
    """[3, RES, RES] uint8: an image G makes (const noise), so the projector can reach it."""
    with torch.no_grad():
        return torch.from_numpy(to_hwc_uint8(G.synthesis(seed_ws(G, seed), noise_mode='const'))).permute(2, 0, 1)


@pytest.mark.slow
def test_projector_cli_writes_w_and_generate_reads_it(nets, vgg_dir, tmp_path):
    G = load_G(nets.uncond)
    target = target_image(G)
    PIL.Image.fromarray(target.permute(1, 2, 0).numpy(), 'RGB').save(tmp_path / 'target.png')
    out = tmp_path / 'proj'
    proc = run_script('projector.py', ['--network', nets.uncond, '--target', tmp_path / 'target.png',
                                       '--num-steps', 4, '--save-video', 'false', '--outdir', out,
                                       '--detector-dir', vgg_dir], tmp_path)
    assert 'step    4/4: dist' in proc.stdout

    w = np.load(out / 'projected_w.npz')['w']
    assert w.shape == (1, G.num_ws, G.w_dim) and w.dtype == np.float32 and np.isfinite(w).all()
    assert np.array_equal(w[:, 0], w[:, 1])                   # one w in both slots
    assert np.array_equal(load_png(out / 'target.png'), target.permute(1, 2, 0).numpy())
    proj = load_png(out / 'proj.png')
    assert proj.shape == (RES, RES, 3)

    invoke(generate.generate_images, '--network', nets.uncond, '--projected-w', out / 'projected_w.npz',
           '--outdir', tmp_path / 'gen')
    assert np.array_equal(load_png(tmp_path / 'gen' / 'proj00.png'), proj)


@pytest.mark.slow
def test_project_lowers_lpips(nets, vgg16):
    G = load_G(nets.uncond)
    target = target_image(G)
    noise_before = {k: v.clone() for k, v in projector._noise_buffers(G).items()}
    assert len(noise_before) == 4                              # UpComp at 8 and 32, two injections each

    torch.manual_seed(0)
    steps = 30
    ws, dists = projector.project(G, target, vgg16=vgg16, num_steps=steps, w_avg_samples=1000, return_dists=True)
    assert ws.shape == (steps, G.num_ws, G.w_dim) and torch.isfinite(ws).all()
    assert dists.shape == (steps,) and np.isfinite(dists).all()
    assert dists[-5:].mean() < 0.7 * dists[:3].mean(), dists   # the optimiser's distance falls

    # So does the distance of the image the user gets (G's own const noise).
    with torch.no_grad():
        start = G.synthesis(torch.zeros([1, G.num_ws, G.w_dim]), noise_mode='const')   # w_avg = 0 for FastGAN
        final = G.synthesis(ws[-1:], noise_mode='const')
        to_u8 = lambda x: (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        d_start = float(lpips_distance(vgg16, to_u8(start), target[None]))
        d_final = float(lpips_distance(vgg16, to_u8(final), target[None]))
    assert d_final < 0.8 * d_start, (d_start, d_final)
    for name, buf in projector._noise_buffers(G).items():     # G itself untouched
        assert torch.equal(buf, noise_before[name]) and not buf.requires_grad

    # A conditional pickle projects too: w = [z, label] in both slots.
    Gc = load_G(nets.cond)
    ws = projector.project(Gc, target, vgg16=vgg16, num_steps=2, w_avg_samples=100)
    assert ws.shape == (2, 2, Z_DIM + NUM_CLASSES) and torch.isfinite(ws).all()

# calc_metrics.py


@pytest.fixture(scope='module')
def tiny_det_dir(tmp_path_factory):
    return save_test_detectors(tmp_path_factory.mktemp('tiny-detectors'))


def read_metric(pkl, metric):
    lines = open(os.path.join(os.path.dirname(pkl), f'metric-{metric}.jsonl')).read().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry['metric'] == metric and entry['snapshot_pkl'] == os.path.basename(pkl)
    return entry['results'][metric]


def test_calc_metrics_from_the_pickles_training_set(nets, tiny_det_dir, tmp_path, monkeypatch):
    # No --data: the pickle's training_set_kwargs (the materialised builtin:shapes-64) are used.
    proc = run_script('calc_metrics.py', ['--network', nets.uncond, '--metrics', 'fid64_full', '--detector-dir',
                                          tiny_det_dir, '--device', 'cpu'], tmp_path)
    assert f'{NUM_IMAGES} images at {RES}x{RES}' in proc.stdout
    fid = read_metric(nets.uncond, 'fid64_full')
    assert np.isfinite(fid) and fid > 0

    # Conditional: labels come from the data set (use_labels in the pickle's kwargs).
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('KDGAN_DETECTOR_DIR', raising=False)
    result = invoke(calc_metrics.calc_metrics, '--network', nets.cond, '--metrics', 'fid48_full', '--detector-dir',
                    tiny_det_dir, '--device', 'cpu', '--verbose', 'false')
    assert 'Traceback' not in result.output
    fid = read_metric(nets.cond, 'fid48_full')
    assert np.isfinite(fid) and fid > 0
