"""Helpers shared by several test modules (pytest puts tests/ on sys.path).

Pixel-space Frechet distance: the training tests' measure of "the generator
learned the data". Images are box-downsampled to 8x8 and the Frechet distance
between the Gaussians fitted to two sets of those pixel vectors is computed;
no detector network is needed, so it runs offline on the CPU.
"""
import contextlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')


def pixel_features(images):
    """[N, C, H, W] in [-1, 1] -> 8x8 box-downsampled pixels, float64 [N, C*64]."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    return torch.nn.functional.avg_pool2d(x, x.shape[-1] // 8).flatten(1).numpy()


def frechet_distance(a, b):
    """Frechet distance between the Gaussians fitted to the rows of `a` and of `b`."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(np.square(mu_a - mu_b).sum() + np.trace(cov_a + cov_b - 2 * root))


def fake_features(G, num=256, seed=123, c=None):
    """pixel_features of `num` images of G (fixed latents, constant noise). `c`: [num, c_dim]
    labels for a conditional G (default: zeros)."""
    z = torch.randn([num, G.z_dim], generator=torch.Generator().manual_seed(seed))
    c = torch.zeros([num, G.c_dim]) if c is None else torch.as_tensor(c, dtype=torch.float32)
    with torch.no_grad():
        return pixel_features(G(z, c, noise_mode='const'))


@contextlib.contextmanager
def torch_threads(n):
    """Run a block with `n` intra-op threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """These nets are tiny: one thread avoids oversubscribing a shared CPU (several times faster).
    A module-scoped autouse fixture for the modules that import it."""
    with torch_threads(1):
        yield


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    """builtin:shapes as 16 images of 16x16: the smallest data a training-loop test needs."""
    from training import shapes
    return shapes.materialize_builtin('builtin:shapes', str(tmp_path_factory.mktemp('data')), resolution=16,
                                      num_images=16)


@pytest.fixture
def own_stat_totals(monkeypatch):
    """training_stats keeps process-wide totals: a run in this process starts from none, and leaves none
    behind (NaN losses of a divergence test would otherwise reach every later test of the worker)."""
    from torch_utils import training_stats
    monkeypatch.setattr(training_stats, '_totals', {})
    monkeypatch.setattr(training_stats, '_counters', {})


def save_random_vgg16(folder):
    """A random-weight VGG16+LPIPS of the real architecture, scripted and saved as `folder`/vgg16.pt."""
    from metrics.vgg16_lpips import make_random_vgg16_lpips
    torch.jit.script(make_random_vgg16_lpips(seed=0)).save(str(folder / 'vgg16.pt'))
    return folder


def load_scripted_vgg16(folder):
    """projector.load_vgg16 from `folder`, checked to be the TorchScript path (as for NVIDIA's file)."""
    import projector
    det = projector.load_vgg16(torch.device('cpu'), str(folder))
    assert isinstance(det, torch.jit.ScriptModule)  # the TorchScript path, as for NVIDIA's file
    return det


def run_pickle_child(cwd, shadowed, body):
    """Run `body` in a fresh Python in `cwd` (PYTHONPATH = stylegan2_ada/, one thread), with package
    `shadowed` replaced by one in `cwd` (first on sys.path) that refuses to import. The child first
    checks that `shadowed` cannot be imported, then loads `cwd`/net.pkl into `data`. Returns the
    CompletedProcess."""
    (cwd / shadowed).mkdir()
    (cwd / shadowed / '__init__.py').write_text(f'raise ImportError("{shadowed} is shadowed in this test")\n')
    child = textwrap.dedent(f'''
        import pickle, sys, torch
        torch.set_num_threads(1)
        try:
            import {shadowed}
        except ImportError:
            pass
        else:
            sys.exit("{shadowed} was importable")
        with open("net.pkl", "rb") as f:
            data = pickle.load(f)
    ''') + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=HARNESS, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', child], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def invoke_train(*args):
    """train.py's click command in this process, arguments as strings."""
    from click.testing import CliRunner
    import train
    return CliRunner().invoke(train.main, [str(a) for a in args])


def dry_run(outdir, data, *args):
    """Run train.py --dry-run; returns (training options, resolved names, output)."""
    import json
    result = invoke_train('--outdir', outdir, '--data', data, '--metrics=none', '--device=cpu', '--dry-run', *args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    decoder = json.JSONDecoder()
    out = result.output
    options = decoder.raw_decode(out[out.index('{', out.index('Training options:')):])[0]
    resolved = decoder.raw_decode(out[out.index('{', out.index('Resolved names:')):])[0]
    return options, resolved, out


def tiny_stylegan2_kwargs(path, mapping_layers=1, **overrides):
    """training_loop kwargs of a StyleGAN2 at 32x32 small enough for a few minibatches a second
    (batch 4, 8 channels); tests override the schedule and seed they need."""
    import dnnlib
    E = dnnlib.EasyDict
    adam = dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8)
    kw = E(
        training_set_kwargs=E(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False,
                              xflip=False),
        data_loader_kwargs=E(num_workers=0),
        G_kwargs=E(class_name='training.networks.Generator', z_dim=8, w_dim=8,
                   mapping_kwargs=E(num_layers=mapping_layers), synthesis_kwargs=E(channel_base=128, channel_max=8)),
        D_kwargs=E(class_name='training.networks.Discriminator', channel_base=128, channel_max=8,
                   block_kwargs=E(), mapping_kwargs=E(), epilogue_kwargs=E(mbstd_group_size=4)),
        G_opt_kwargs=E(adam), D_opt_kwargs=E(adam),
        loss_kwargs=E(class_name='training.loss.StyleGAN2Loss', r1_gamma=0.05),
        batch_size=4, batch_gpu=4, ema_kimg=0.01, device='cpu', image_snapshot_ticks=None)
    kw.update(overrides)
    return kw


def train_run(outdir, *args, timeout=600):
    """A real run of train.py in a subprocess on the CPU, one thread, no metrics (the loop's
    statistics are per-process state); returns the run folder."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    cmd = [sys.executable, 'train.py', '--outdir', str(outdir), '--device=cpu', '--metrics=none', '--workers=0',
           *[str(a) for a in args]]
    proc = subprocess.run(cmd, cwd=HARNESS, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run,) = os.listdir(outdir)
    return os.path.join(outdir, run)


def sigterm_when(args, cwd, env, stop_here, timeout=120):
    """Run `args`, hand each output line to `stop_here(line)` and send SIGTERM the first time it returns
    True (then read the rest). Returns (exit code, the whole output, whether SIGTERM was sent)."""
    import signal
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if stop_here(line):
                proc.send_signal(signal.SIGTERM)
                sent = True
                break
        lines.append(proc.communicate(timeout=timeout)[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, ''.join(lines), sent
