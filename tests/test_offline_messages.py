"""Offline, every missing-file message names the option that needs the file and the one that
does without it; calc_metrics.py and bench/compare.py take --detector=PATH (any TorchScript
feature network with the documented call); compare checks each method's files before the first
run, and runs that never started do not tie an outdir to their settings (issue 16, item 2)."""
import json
import os
import pickle

import click
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import calc_metrics
import train
from metrics import detectors
from test_metrics_e2e import RES, TinyDetector, tiny_G
from training import config, shapes

from bench import compare
from bench.comparison import evaluation, session
from bench.comparison.common import CompareError
from bench.comparison.grid import Config, run_key
from bench.comparison.runner import State, run_spec

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')

FASTGAN_LOSS = dict(class_name='kdgan_plugins.losses.fastgan_loss.FastGANLoss')


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No detector anywhere and no network: the quick probe answers 'unreachable' at once."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'empty-cache'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.delenv(detectors.DEFAULT_ENV_VAR, raising=False)
    monkeypatch.setattr(detectors, '_probe', lambda url, timeout: 'network is unreachable')
    detectors.clear_cache()
    return tmp_path


def one_line(text):
    assert '\n' not in text.strip(), text
    return text


def test_train_metrics_message_names_the_metric_and_metrics_none(offline):
    with pytest.raises(config.Unavailable) as info:
        config.check_metrics(['fid50k_full'])
    msg = one_line(str(info.value))
    for phrase in ('inception-2015-12-05.pt', 'train.py --metrics=fid50k_full needs it', '--metrics=none',
                   'calc_metrics.py --detector=PATH', '--detector-dir'):
        assert phrase in msg, (phrase, msg)
    # Only the metrics of the list that need the file are named.
    with pytest.raises(config.Unavailable) as info:
        config.check_metrics(['pr50k3_full'])
    assert 'vgg16.pt' in str(info.value) and '--metrics=pr50k3_full needs it' in str(info.value)
    assert '--recon' not in str(info.value) and 'projector' not in str(info.value)


def test_fastgan_reconstruction_message_names_recon_not_metrics(offline):
    with pytest.raises(click.ClickException) as info:
        train.check_loss_assets(FASTGAN_LOSS)
    msg = one_line(info.value.format_message())
    for phrase in ('vgg16.pt', '--recon=lpips', '--cfg=fastgan', '--recon=mse', '--detector-dir'):
        assert phrase in msg, (phrase, msg)
    for blamed in ('precision', 'recall', 'PPL', 'ppl', 'pr50k3', 'projector'):
        assert blamed not in msg, (blamed, msg)


def test_message_without_context_lists_every_use_and_its_way_around(offline):
    with pytest.raises(detectors.AssetUnavailableError) as info:
        detectors.resolve_asset('vgg16', download=False)
    msg = one_line(str(info.value))
    for phrase in ('--recon=lpips', '--recon=mse', 'pr50k3', '--metrics=none', 'projector.py'):
        assert phrase in msg, (phrase, msg)


def _tiny_network(root):
    data = shapes.materialize_builtin(f'builtin:shapes-{RES}', str(root / 'datasets'), num_images=16)
    run_dir = root / 'run'
    run_dir.mkdir()
    pkl = run_dir / 'network-snapshot-000000.pkl'
    G = tiny_G()
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, resolution=RES,
                             use_labels=False, max_size=16, xflip=False)
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=kwargs), f)
    return str(pkl), data


class NoFeatures(torch.nn.Module):
    """The wrong call: takes no keyword arguments."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.float().mean(dim=[2, 3])


def test_calc_metrics_detector_option(offline):
    pkl, data = _tiny_network(offline)
    run = lambda *args: CliRunner().invoke(calc_metrics.calc_metrics, [str(a) for a in args])
    # Offline without --detector: the message offers it.
    result = run('--network', pkl, '--metrics', 'fid16_full', '--device', 'cpu')
    assert result.exit_code != 0
    assert 'calc_metrics.py --metrics=fid16_full needs it' in result.output and '--detector=PATH' in result.output
    # Any TorchScript network with the documented call stands in for Inception.
    good = offline / 'features.pt'
    torch.jit.script(TinyDetector().eval()).save(str(good))
    result = run('--network', pkl, '--metrics', 'fid16_full', '--device', 'cpu', '--data', data, '--detector', good)
    assert result.exit_code == 0, result.output + repr(result.exception)
    with open(os.path.join(os.path.dirname(pkl), 'metric-fid16_full.jsonl')) as f:
        fid = json.loads(f.readline())['results']['fid16_full']
    assert fid > 0
    # A network that does not answer as documented: one line quoting the signature.
    bad = offline / 'bad.pt'
    torch.jit.script(NoFeatures()).save(str(bad))
    result = run('--network', pkl, '--metrics', 'fid16_full', '--device', 'cpu', '--detector', bad)
    assert result.exit_code != 0 and 'Traceback' not in result.output
    assert 'return_features=True' in result.output and 'bad.pt' in result.output


def test_compare_detector_is_checked_against_the_signature(tmp_path):
    bad = tmp_path / 'bad.pt'
    torch.jit.script(NoFeatures()).save(str(bad))
    with pytest.raises(CompareError, match='return_features=True'):
        evaluation.stage_detector(str(tmp_path / 'out'), str(bad), None)
    good = tmp_path / 'good.pt'
    torch.jit.script(TinyDetector().eval()).save(str(good))
    folder = evaluation.stage_detector(str(tmp_path / 'out'), str(good), None).split(os.pathsep)[0]
    assert os.path.realpath(os.path.join(folder, 'inception-2015-12-05.pt')) == os.path.realpath(good)


def test_compare_preflight_finds_the_missing_vgg16_before_any_run(offline):
    outdir = offline / 'cmp'
    features = offline / 'features.pt'   # the metric's detector is at hand; FastGAN's VGG16 is not
    torch.jit.script(TinyDetector().eval()).save(str(features))
    result = CliRunner().invoke(compare.main, [
        '--outdir=' + str(outdir), '--data=builtin:shapes-64', '--methods=fastgan+diffaug', '--kimg=0.016',
        '--metric=fid16_full', '--detector=' + str(features), '--device=cpu', "--extra=--batch=4 --workers=0"])
    assert result.exit_code != 0
    out = result.output
    assert 'fastgan+diffaug' in out and 'vgg16.pt' in out and '--recon=mse' in out, out
    assert 'start' not in out and not os.path.exists(outdir / 'runs' / 'fastgan+diffaug-seed0'), out


def test_run_that_never_started_does_not_lock_the_outdir(tmp_path, monkeypatch):
    monkeypatch.setattr(session, 'dry_run', lambda cfg, method: '')
    monkeypatch.setattr(session, 'check_method_files', lambda cfg, method, text: [], raising=False)
    make = lambda extra: Config(outdir=str(tmp_path), data='builtin:shapes-32', eval_data='builtin:shapes-32',
                                methods={'fastgan+diffaug': ['--cfg=fastgan', '--aug=diffaug']}, seeds=[0],
                                kimg=1, minutes=None, snap=1, tick=None, metric='fid16_full', better='auto',
                                detector_dir=None, extra=extra, device='cpu', budget=None)
    old, new = make([]), make(['--recon=mse'])
    key = run_key('fastgan+diffaug', 0)
    grid = [('fastgan+diffaug', 0)]
    state = State(str(tmp_path / 'state.json'))
    # train.py failed at once: a session folder without a single tick.
    state.runs[key] = dict(method='fastgan+diffaug', seed=0, spec=run_spec(old, 'fastgan+diffaug', 0),
                           status='failed', evals={}, error='train.py exited with code 1')
    os.makedirs(old.run_dir('fastgan+diffaug', 0, 'train', '00000-shapes'))
    state.save()
    session._check_settings(new, state, grid)
    assert key not in State(str(tmp_path / 'state.json')).runs
    # A run that logged a tick still keeps its settings.
    state.runs[key] = dict(method='fastgan+diffaug', seed=0, spec=run_spec(old, 'fastgan+diffaug', 0),
                           status='failed', evals={})
    with open(old.run_dir('fastgan+diffaug', 0, 'train', '00000-shapes', 'stats.jsonl'), 'w') as f:
        f.write(json.dumps({'Progress/tick': {'mean': 0}, 'Progress/kimg': {'mean': 0.0},
                            'Timing/total_sec': {'mean': 1.0}, 'timestamp': 1.0}) + '\n')
    with pytest.raises(CompareError, match='other settings'):
        session._check_settings(new, state, grid)
