"""calc_metrics.py: fails within seconds, in one line, when a detector can be
neither found nor downloaded; with the test detector in --detector-dir it
computes metrics with progress and appends metric-*.jsonl beside the pickle,
in one process or several (gloo on the CPU)."""
import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import dnnlib
from helpers import one_thread  # noqa: F401  (module-scoped autouse fixture)
from metrics import metric_utils
from test_metrics_e2e import NUM_IMAGES, RES, save_test_detectors, tiny_G
from training import dataset as dataset_lib
from training import shapes

# The stand-in detector is TorchScript, which recent torch calls deprecated.
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')
JSONL_KEYS = {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp'}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('calc')
    data = shapes.materialize_builtin(f'builtin:shapes-{RES}', str(root / 'datasets'), num_images=NUM_IMAGES)
    det_dir = save_test_detectors(root / 'detectors')
    run_dir = root / 'run'
    run_dir.mkdir()
    pkl = run_dir / 'network-snapshot-000000.pkl'
    G = tiny_G()
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, resolution=RES,
                             use_labels=False, max_size=NUM_IMAGES, xflip=False)
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=kwargs), f)
    return dnnlib.EasyDict(root=root, data=data, det_dir=det_dir, run_dir=run_dir, pkl=str(pkl))


def offline_env(tmp_path):
    """No detector anywhere, and every download refused at once (a dead proxy), whatever this machine's network."""
    env = dict(os.environ)
    (tmp_path / 'empty-cache').mkdir()
    env.update(DNNLIB_CACHE_DIR=str(tmp_path / 'empty-cache'), TORCH_HOME=str(tmp_path / 'torch'),
               HTTPS_PROXY='http://127.0.0.1:9', HTTP_PROXY='http://127.0.0.1:9',
               https_proxy='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9', PYTHONUNBUFFERED='1')
    for var in ('KDGAN_DETECTOR_DIR', 'NO_PROXY', 'no_proxy'):
        env.pop(var, None)
    return env


def run_script(args, env, timeout=300):
    start = time.time()
    proc = subprocess.run([sys.executable, 'calc_metrics.py'] + [str(a) for a in args], cwd=HARNESS, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - start



def test_missing_detector_fails_fast_with_one_clear_line(setup, tmp_path):
    env = offline_env(tmp_path)
    proc, elapsed = run_script(['--network', setup.pkl, '--metrics', 'fid50k_full'], env)
    assert proc.returncode != 0
    assert elapsed < 5, elapsed
    out = proc.stdout + proc.stderr
    assert 'Traceback' not in out
    error_lines = [line for line in out.splitlines() if line.startswith('Error:')]
    assert len(error_lines) == 1, out
    line = error_lines[0]
    for phrase in ('inception-2015-12-05.pt', 'https://nvlabs-fi-cdn.nvidia.com/', '--detector-dir',
                   'KDGAN_DETECTOR_DIR', str(tmp_path / 'empty-cache')):
        assert phrase in line, line
    assert not os.path.exists(setup.run_dir / 'metric-fid50k_full.jsonl')

    # VGG16 metrics name their own file; an empty --detector-dir changes nothing.
    (tmp_path / 'empty-dets').mkdir()
    proc, elapsed = run_script(['--network', setup.pkl, '--metrics', 'pr50k3_full',
                                '--detector-dir', tmp_path / 'empty-dets'], env)
    assert proc.returncode != 0 and elapsed < 5
    assert 'vgg16.pt' in proc.stderr and 'Traceback' not in proc.stderr


def test_cli_computes_metrics_and_writes_jsonl_beside_the_pickle(setup, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('KDGAN_DETECTOR_DIR', raising=False)
    result = CliRunner().invoke(calc_metrics.calc_metrics, [
        '--network', setup.pkl, '--metrics', 'fid256_full,kid64_full', '--detector-dir', setup.det_dir,
        '--device', 'cpu'])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = result.output
    # Progress with counts and an ETA, for the real images and for generation.
    assert f'dataset features: {NUM_IMAGES}/{NUM_IMAGES} items (100%)' in out
    assert 'generator features: 64/256 items (25%)' in out and 'ETA' in out
    assert 'generator features: 256/256 items (100%)' in out

    for metric in ('fid256_full', 'kid64_full'):
        lines = (setup.run_dir / f'metric-{metric}.jsonl').read_text().splitlines()
        assert len(lines) == 1
        entry = json.loads(lines[0])
        assert set(entry) == JSONL_KEYS
        assert entry['metric'] == metric and entry['num_gpus'] == 1
        assert entry['snapshot_pkl'] == 'network-snapshot-000000.pkl'
        assert list(entry['results']) == [metric] and np.isfinite(entry['results'][metric])
    assert json.loads((setup.run_dir / 'metric-fid256_full.jsonl').read_text())['results']['fid256_full'] > 0


def test_cli_usage_errors(setup, tmp_path):
    runner = CliRunner()
    result = runner.invoke(calc_metrics.calc_metrics, ['--network', setup.pkl, '--metrics', 'fid50k_full,bogus'])
    assert result.exit_code == 2 and 'bogus' in result.output and 'fid50k_full' in result.output
    assert isinstance(result.exception, SystemExit)
    result = runner.invoke(calc_metrics.calc_metrics, ['--network', str(tmp_path / 'missing.pkl'), '--metrics',
                                                       'fid64_full', '--detector-dir', setup.det_dir])
    assert result.exit_code == 2 and 'file not found' in result.output


def test_two_cpu_processes_match_one(setup, tmp_path):
    """--gpus=2 on the CPU: two spawned ranks with gloo; the gathered real
    statistics are exactly those of all real images."""
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'), OMP_NUM_THREADS='1')
    env.pop('KDGAN_DETECTOR_DIR', None)
    # Odd counts on purpose: 41 real images and 30 generated ones do not split evenly between two ranks.
    data = shapes.materialize_builtin(f'builtin:shapes-{RES}', str(tmp_path / 'datasets'), num_images=41)
    proc, _ = run_script(['--network', setup.pkl, '--metrics', 'fid30_full', '--gpus', '2', '--device', 'cpu',
                          '--detector-dir', setup.det_dir, '--data', data], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry = json.loads((setup.run_dir / 'metric-fid30_full.jsonl').read_text().splitlines()[-1])
    assert entry['num_gpus'] == 2 and entry['results']['fid30_full'] > 0

    (cache_file,) = list((tmp_path / 'cache' / 'gan-metrics').iterdir())
    stats = metric_utils.FeatureStats.load(str(cache_file))
    ds = dataset_lib.ImageFolderDataset(path=data)
    images = torch.from_numpy(np.stack([ds[i][0] for i in range(len(ds))]))
    ds.close()
    det = torch.jit.load(os.path.join(setup.det_dir, 'inception-2015-12-05.pt'))
    with torch.no_grad():
        feats = det(images, return_features=True).double().numpy()
    mean, cov = stats.get_mean_cov()
    assert stats.num_items == 41
    assert np.allclose(mean, feats.mean(0), atol=1e-5) and np.allclose(cov, np.cov(feats.T, bias=True), atol=1e-5)
