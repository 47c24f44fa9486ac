"""train.py: --dry-run resolves CONTRACT.md's cfg table (and the 'auto'
formulas), plug-in presets resolve through kdgan_plugins.registry, conflicting
options are refused with clear messages, run folders are never reused, and a
tiny real run leaves a complete run folder."""
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import pytest
import torch

import train
from helpers import dry_run
from helpers import invoke_train as invoke
from kdgan_plugins import registry

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')


# Helpers


def make_folder(path, res, n=4, labels=None, sizes=None):
    """A folder of n random res x res RGB PNGs, with dataset.json labels when given."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.RandomState(res + n)
    names = []
    for i in range(n):
        size = sizes[i] if sizes else res
        name = f'img{i:03d}.png'
        PIL.Image.fromarray(rng.randint(0, 256, size=(size, size, 3), dtype=np.uint8)).save(os.path.join(path, name))
        names.append(name)
    if labels is not None:
        with open(os.path.join(path, 'dataset.json'), 'w') as f:
            json.dump(dict(labels=[[name, labels[i]] for i, name in enumerate(names)]), f)
    return str(path)


@pytest.fixture(scope='module')
def data32(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp('d32') / 'imgs', 32)


@pytest.fixture(scope='module')
def data32_labels(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp('d32l') / 'imgs', 32, n=4, labels=[0, 1, 2, 1])


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))



def table_values(opts):
    """The CONTRACT.md table's columns as they appear in the options."""
    return dict(
        mb=opts['batch_size'],
        mbstd=opts['D_kwargs']['epilogue_kwargs']['mbstd_group_size'],
        channel_base=opts['G_kwargs']['synthesis_kwargs']['channel_base'],
        D_channel_base=opts['D_kwargs']['channel_base'],
        lrate=opts['G_opt_kwargs']['lr'],
        D_lrate=opts['D_opt_kwargs']['lr'],
        gamma=opts['loss_kwargs']['r1_gamma'],
        ema=opts['ema_kimg'],
        ramp=opts['ema_rampup'],
        map=opts['G_kwargs']['mapping_kwargs']['num_layers'],
        kimg=opts['total_kimg'],
    )


def assert_clean_error(result, *phrases):
    assert result.exit_code == 2 or result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    for phrase in phrases:
        assert phrase in result.output, result.output


# The cfg table (CONTRACT.md) through --dry-run

CONTRACT_TABLE = {
    #             mb  mbstd fmaps lrate   gamma ema  ramp  map  kimg
    'stylegan2': (32, 4,  1,   0.002,  10,   10,  None, 8, 25000),
    'paper256':  (64, 8,  0.5, 0.0025, 1,    20,  None, 8, 25000),
    'paper512':  (64, 8,  1,   0.0025, 0.5,  20,  None, 8, 25000),
    'paper1024': (32, 4,  1,   0.002,  2,    10,  None, 8, 25000),
    'cifar':     (64, 32, 1,   0.0025, 0.01, 500, 0.05, 2, 100000),
}


@pytest.mark.parametrize('cfg', sorted(CONTRACT_TABLE))
def test_dry_run_prints_table_values(tmp_path, data32, cfg):
    mb, mbstd, fmaps, lrate, gamma, ema, ramp, mapping, kimg = CONTRACT_TABLE[cfg]
    opts, resolved, out = dry_run(tmp_path / 'runs', data32, '--cfg', cfg)
    got = table_values(opts)
    assert got == dict(mb=mb, mbstd=mbstd, channel_base=int(fmaps * 32768), D_channel_base=int(fmaps * 32768),
                       lrate=lrate, D_lrate=lrate, gamma=gamma, ema=ema, ramp=ramp, map=mapping, kimg=kimg)
    # Shared settings of every preset.
    for section in (opts['G_kwargs']['synthesis_kwargs'], opts['D_kwargs']):
        assert section['channel_max'] == 512 and section['num_fp16_res'] == 4 and section['conv_clamp'] == 256
    assert opts['G_opt_kwargs']['betas'] == [0, 0.99] and opts['G_opt_kwargs']['eps'] == 1e-8
    ref_gpus = 2 if cfg == 'cifar' else 8
    assert opts['batch_gpu'] == mb // ref_gpus  # upstream keeps the reference per-GPU batch
    assert resolved['cfg'] == dict(name=cfg, source='built-in (training.cfg_specs)', base=cfg,
                                   table=dict(ref_gpus=ref_gpus, kimg=kimg, mb=mb, mbstd=mbstd, fmaps=fmaps,
                                              lrate=lrate, gamma=gamma, ema=ema, ramp=ramp, map=mapping))
    if cfg == 'cifar':
        assert opts['loss_kwargs']['pl_weight'] == 0 and opts['loss_kwargs']['style_mixing_prob'] == 0
        assert opts['D_kwargs']['architecture'] == 'orig'
    else:
        assert 'pl_weight' not in opts['loss_kwargs'] and 'architecture' not in opts['D_kwargs']
    # Upstream's structure around the networks.
    assert opts['training_set_kwargs'] == dict(class_name='training.dataset.ImageFolderDataset', path=data32,
                                               use_labels=False, max_size=4, xflip=False, resolution=32)
    assert opts['augment_kwargs']['class_name'] == 'training.augment.AugmentPipe'
    assert opts['ada_target'] == 0.6 and opts['augment_p'] == 0
    assert opts['metrics'] == [] and opts['random_seed'] == 0 and opts['num_gpus'] == 1
    assert opts['image_snapshot_ticks'] == opts['network_snapshot_ticks'] == 50
    assert opts['run_dir'].endswith(f'00000-imgs-{cfg}')
    assert not os.path.exists(tmp_path / 'runs')  # a dry run creates nothing


@pytest.mark.parametrize('res,gpus', [(32, 1), (64, 2), (512, 1), (1024, 1), (256, 4)])
def test_dry_run_auto_formulas(tmp_path, res, gpus):
    data = make_folder(tmp_path / f'r{res}', res, n=2)
    opts, resolved, _ = dry_run(tmp_path / 'runs', data, '--gpus', gpus)
    mb = max(min(gpus * min(4096 // res, 32), 64), gpus)
    expect = dict(mb=mb, mbstd=min(mb // gpus, 4),
                  channel_base=32768 if res >= 512 else 16384, D_channel_base=32768 if res >= 512 else 16384,
                  lrate=0.002 if res >= 1024 else 0.0025, D_lrate=0.002 if res >= 1024 else 0.0025,
                  gamma=0.0002 * res ** 2 / mb, ema=mb * 10 / 32, ramp=0.05, map=2, kimg=25000)
    got = table_values(opts)
    assert got.keys() == expect.keys()
    for key in expect:
        assert got[key] == pytest.approx(expect[key]), key
    assert opts['batch_gpu'] == mb // gpus and opts['num_gpus'] == gpus
    assert resolved['cfg']['table']['ref_gpus'] == gpus


def test_dry_run_auto_spot_values(tmp_path):
    """Hand-computed auto values, independent of the formula code above."""
    data = make_folder(tmp_path / 'r512', 512, n=1)
    opts, _, _ = dry_run(tmp_path / 'runs', data)
    assert (opts['batch_size'], opts['loss_kwargs']['r1_gamma'], opts['ema_kimg']) == (8, pytest.approx(6.5536), 2.5)


def test_gpus_need_not_be_a_power_of_two(tmp_path, data32):
    opts, resolved, out = dry_run(tmp_path / 'runs', data32, '--gpus=3')
    # auto at 32^2 gives 32 for one GPU, 64 for three, which does not split; it is rounded to whole mbstd groups.
    assert opts['batch_size'] == 60 and opts['batch_gpu'] == 20 and opts['num_gpus'] == 3
    assert 'rounded down to 60' in out and 'batch_note' in resolved['cfg']
    opts, _, _ = dry_run(tmp_path / 'runs', data32, '--gpus=3', '--batch=12')
    assert opts['batch_size'] == 12 and opts['batch_gpu'] == 4


def test_explicit_flags_and_desc(tmp_path, data32_labels):
    opts, resolved, out = dry_run(tmp_path / 'runs', data32_labels, '--cfg=paper256', '--gamma=3', '--kimg=7',
                                  '--batch=16', '--cond=1', '--mirror=1', '--subset=3', '--seed=5', '--snap=2',
                                  '--fp32=1', '--nhwc=1', '--nobench=1', '--allow-tf32=1', '--workers=0',
                                  '--freezed=2', '--aug=fixed', '--p=0.25', '--augpipe=bg', '--tick=0.5',
                                  '--cbase=1024', '--cmax=64', '--map-depth=3', '--mbstd-group=2')
    assert opts['loss_kwargs']['r1_gamma'] == 3 and opts['total_kimg'] == 7
    assert opts['batch_size'] == 16 and opts['batch_gpu'] == 16
    assert opts['training_set_kwargs']['use_labels'] is True and opts['training_set_kwargs']['xflip'] is True
    assert opts['training_set_kwargs']['max_size'] == 3 and opts['training_set_kwargs']['random_seed'] == 5
    assert opts['random_seed'] == 5 and opts['image_snapshot_ticks'] == 2 and opts['kimg_per_tick'] == 0.5
    for section in (opts['G_kwargs']['synthesis_kwargs'], opts['D_kwargs']):
        assert section['num_fp16_res'] == 0 and section['conv_clamp'] is None
        assert section['channel_base'] == 1024 and section['channel_max'] == 64
    assert opts['G_kwargs']['synthesis_kwargs']['fp16_channels_last'] is True
    assert opts['D_kwargs']['block_kwargs'] == dict(fp16_channels_last=True, freeze_layers=2)
    assert opts['G_kwargs']['mapping_kwargs']['num_layers'] == 3
    assert opts['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == 2
    assert opts['cudnn_benchmark'] is False and opts['allow_tf32'] is True
    assert opts['data_loader_kwargs'] == dict(pin_memory=False, num_workers=0, prefetch_factor=None)
    assert opts['augment_p'] == 0.25 and opts['ada_target'] is None
    assert set(k for k, v in opts['augment_kwargs'].items() if k != 'class_name') == {
        'xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac'}  # the bg pipe
    assert opts['run_dir'].endswith('00000-imgs-cond-subset3-mirror-paper256-gamma3-kimg7-batch16-fixed-p0.25-bg'
                                    '-freezed2')


def test_noaug_and_target(tmp_path, data32):
    opts, resolved, _ = dry_run(tmp_path / 'runs', data32, '--aug=noaug')
    assert opts['augment_kwargs'] is None and opts['ada_target'] is None
    assert resolved['aug']['adaptive'] is False
    opts, _, _ = dry_run(tmp_path / 'runs', data32, '--target=0.3', '--augpipe=bgcfnc')
    assert opts['ada_target'] == 0.3
    assert opts['augment_kwargs']['cutout'] == 1 and opts['augment_kwargs']['noise'] == 1
    assert opts['run_dir'].endswith('-auto-target0.3-bgcfnc')
    opts, _, _ = dry_run(tmp_path / 'runs', data32, '--ada-kimg=5')
    assert opts['ada_kimg'] == 5 and opts['run_dir'].endswith('-auto-adakimg5')
    opts, _, _ = dry_run(tmp_path / 'runs', data32)
    assert opts['ada_kimg'] == 500  # upstream's default


def test_ada_kimg_wins_over_the_resume_default(tmp_path, data32):
    pkl = tmp_path / 'net.pkl'
    pkl.write_bytes(b'not read by a dry run')
    opts, _, _ = dry_run(tmp_path / 'runs', data32, '--resume', pkl, '--ada-kimg=20')
    assert opts['ada_kimg'] == 20


def test_resume_pickle_sets_upstream_transfer_options(tmp_path, data32):
    pkl = tmp_path / 'net.pkl'
    pkl.write_bytes(b'not read by a dry run')
    opts, resolved, _ = dry_run(tmp_path / 'runs', data32, '--resume', pkl)
    assert resolved['resume']['exact'] is False
    assert opts['resume_pkl'] == str(pkl) and opts['ada_kimg'] == 100 and opts['ema_rampup'] is None
    assert opts['run_dir'].endswith('-resumecustom')
    opts, _, _ = dry_run(tmp_path / 'runs', data32, '--resume', 'ffhq256')
    assert opts['resume_pkl'].startswith('https://nvlabs-fi-cdn.nvidia.com/') and opts['resume_pkl'].endswith('.pkl')
    assert opts['run_dir'].endswith('-resumeffhq256')


def test_exact_resume_keeps_options(tmp_path, data32):
    """A run folder with a checkpoint beside its latest pickle resumes exactly: no transfer-learning
    overrides, except those the resumed run itself had (from its training_options.json)."""
    run = tmp_path / 'old-run'
    run.mkdir()
    for kimg in (2, 4):
        (run / f'network-snapshot-{kimg:06d}.pkl').write_bytes(b'x')
        (run / f'network-snapshot-{kimg:06d}.ckpt.pt').write_bytes(b'x')
    opts, resolved, out = dry_run(tmp_path / 'runs', data32, '--resume', run)
    assert resolved['resume']['exact'] is True
    assert opts['resume_pkl'] == str(run / 'network-snapshot-000004.pkl')
    assert opts['ada_kimg'] == 500 and opts['ema_rampup'] == 0.05
    assert 'restores the full training state' in out
    (run / 'training_options.json').write_text(json.dumps(dict(ada_kimg=100, ema_rampup=None)))
    opts, _, _ = dry_run(tmp_path / 'runs', data32, '--resume', run)
    assert opts['ada_kimg'] == 100 and opts['ema_rampup'] is None
    empty = tmp_path / 'empty-run'
    empty.mkdir()
    result = invoke('--outdir', tmp_path / 'runs', '--data', data32, '--metrics=none', '-n', '--resume', empty)
    assert_clean_error(result, '--resume', 'holds no network-snapshot')


def test_builtin_data_dry_run_writes_nothing(tmp_path):
    opts, _, out = dry_run(tmp_path / 'runs', 'builtin:shapes-32')
    assert opts['training_set_kwargs']['resolution'] == 32 and opts['training_set_kwargs']['max_size'] == 100
    assert opts['training_set_kwargs']['path'].startswith(str(tmp_path / 'cache'))
    assert not os.path.exists(tmp_path / 'cache') and not os.path.exists(tmp_path / 'runs')


# Plug-in hook


def register_test_presets():
    registry.register('cfg', 'test.tinycfg', dict(
        description='a small cfg for tests', base='paper256',
        defaults=dict(batch=12, gamma=3, map=3, mbstd=4),
        G_kwargs=dict(synthesis_kwargs=dict(channel_max=64)),
        D_kwargs=dict(class_name='tests.fake.OtherDiscriminator', width=7),
        G_opt_kwargs=dict(lr=0.01), loss='test.loss'))
    registry.register('loss', 'test.loss', dict(
        loss_kwargs=dict(class_name='tests.fake.TestLoss', weight=2.0), defaults=dict(ema=3)))
    registry.register('aug', 'test.aug', dict(
        augment_kwargs=dict(class_name='tests.fake.TestAugment', policy='color'), defaults=dict(p=0.4)))
    registry.register('aug', 'test.adaptive', dict(
        augment_kwargs=dict(class_name='tests.fake.TestAugment', policy='all'), defaults=dict(target=0.5)))


def test_plugin_presets_resolve(tmp_path, data32, clean_registry):
    register_test_presets()
    opts, resolved, out = dry_run(tmp_path / 'runs', data32, '--cfg=test.tinycfg', '--aug=test.aug')
    # cfg: base paper256 row + preset defaults; sections patched (same class merged, new class replaced).
    assert opts['batch_size'] == 12 and opts['G_kwargs']['mapping_kwargs']['num_layers'] == 3
    assert opts['D_kwargs'] == dict(class_name='tests.fake.OtherDiscriminator', width=7)
    assert opts['G_kwargs']['synthesis_kwargs']['channel_max'] == 64
    assert opts['G_kwargs']['synthesis_kwargs']['channel_base'] == 16384  # from the paper256 base
    assert opts['G_opt_kwargs']['lr'] == 0.01 and opts['D_opt_kwargs']['lr'] == 0.0025
    # loss: the cfg's default loss, from the registry (its defaults apply too).
    assert opts['loss_kwargs'] == dict(class_name='tests.fake.TestLoss', weight=2.0)
    assert opts['ema_kimg'] == 3
    # aug: the preset's pipe and p, no ADA.
    assert opts['augment_kwargs'] == dict(class_name='tests.fake.TestAugment', policy='color')
    assert opts['augment_p'] == 0.4 and opts['ada_target'] is None
    for kind, name in (('cfg', 'test.tinycfg'), ('loss', 'test.loss'), ('aug', 'test.aug')):
        assert resolved[kind]['name'] == name
        assert resolved[kind]['source'] == 'plug-in (kdgan_plugins.registry)'
        assert resolved[kind]['preset'] == registry.lookup(kind, name)
    assert resolved['cfg']['base'] == 'paper256' and resolved['loss']['class_name'] == 'tests.fake.TestLoss'
    assert opts['run_dir'].endswith('-test.tinycfg-test.aug')


def test_explicit_flags_beat_presets(tmp_path, data32, clean_registry):
    register_test_presets()
    opts, resolved, _ = dry_run(tmp_path / 'runs', data32, '--cfg=test.tinycfg', '--batch=8', '--gamma=0.5',
                                '--map-depth=5', '--cmax=32', '--aug=test.aug', '--p=0.1')
    assert opts['batch_size'] == 8 and opts['G_kwargs']['mapping_kwargs']['num_layers'] == 5
    assert opts['G_kwargs']['synthesis_kwargs']['channel_max'] == 32
    assert opts['loss_kwargs']['r1_gamma'] == 0.5 and opts['augment_p'] == 0.1
    assert resolved['explicit_flags']['loss_kwargs'] == dict(r1_gamma=0.5)


def test_builtin_loss_on_plugin_cfg_and_plugin_loss_on_builtin_cfg(tmp_path, data32, clean_registry):
    register_test_presets()
    opts, resolved, _ = dry_run(tmp_path / 'runs', data32, '--cfg=test.tinycfg', '--loss=stylegan2')
    assert opts['loss_kwargs'] == dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=3)
    assert resolved['loss']['source'] == 'built-in (training.loss)'
    opts, resolved, _ = dry_run(tmp_path / 'runs', data32, '--cfg=stylegan2', '--loss=test.loss')
    assert opts['loss_kwargs'] == dict(class_name='tests.fake.TestLoss', weight=2.0)
    assert opts['ema_kimg'] == 3 and opts['batch_size'] == 32
    assert opts['run_dir'].endswith('-stylegan2-test.loss')


def test_adaptive_plugin_aug_takes_target(tmp_path, data32, clean_registry):
    register_test_presets()
    opts, resolved, _ = dry_run(tmp_path / 'runs', data32, '--aug=test.adaptive', '--target=0.7')
    assert opts['ada_target'] == 0.7 and resolved['aug']['adaptive'] is True
    result = invoke('--outdir', tmp_path, '--data', data32, '--metrics=none', '-n', '--aug=test.aug', '--target=0.5')
    assert_clean_error(result, '--target', 'ADA target')


def test_unknown_names_list_choices(tmp_path, data32, clean_registry):
    register_test_presets()
    result = invoke('--outdir', tmp_path, '--data', data32, '--metrics=none', '-n', '--cfg=nope')
    assert_clean_error(result, "--cfg: unknown name 'nope'", 'paper256', 'test.tinycfg')
    result = invoke('--outdir', tmp_path, '--data', data32, '--metrics=none', '-n', '--loss=nope')
    assert_clean_error(result, "--loss: unknown name 'nope'", 'stylegan2', 'test.loss')
    result = invoke('--outdir', tmp_path, '--data', data32, '--metrics=none', '-n', '--aug=nope')
    assert_clean_error(result, "--aug: unknown name 'nope'", 'ada', 'noaug', 'fixed', 'test.aug')


# Conflicts and bad input


@pytest.mark.parametrize('args,phrases', [
    (['--p=0.2'], ['--p sets the probability of --aug=fixed']),
    (['--aug=ada', '--p=0.2'], ['--p sets the probability of --aug=fixed']),
    (['--aug=fixed'], ['--aug=fixed needs --p']),
    (['--aug=fixed', '--p=1.5'], ['--p', 'between 0 and 1']),
    (['--aug=noaug', '--target=0.5'], ['--target', 'needs --aug=ada']),
    (['--target=2'], ['--target', 'between 0 and 1']),
    (['--aug=noaug', '--ada-kimg=5'], ['--ada-kimg', 'needs --aug=ada']),
    (['--ada-kimg=0'], ['--ada-kimg', 'must be > 0']),
    (['--aug=noaug', '--augpipe=bgc'], ['--augpipe', 'does not apply to --aug=noaug']),
    (['--gamma=-1'], ['--gamma', 'must be >= 0']),
    (['--batch=5', '--gpus=2'], ['--batch=5 must be divisible by --gpus=2']),
    (['--batch=0'], ['--batch', 'at least 1']),
    (['--cond=1'], ['--cond=1 needs labels']),
    (['--subset=5'], ['--subset', '5 is outside 1..4']),
    (['--subset=0'], ['--subset', '0 is outside 1..4']),
    (['--kimg=0'], ['--kimg', 'must be positive']),
    (['--tick=0'], ['--tick', 'must be positive']),
    (['--gpus=0'], ['--gpus']),
    (['--snap=0'], ['--snap']),
    (['--cfg=paper9000'], ["--cfg: unknown name 'paper9000'"]),
    (['--augpipe=xyz'], ['--augpipe']),
    (['--resume=/no/such/file.pkl'], ['--resume', 'no such file or folder']),
])
def test_conflicts_refused(tmp_path, data32, args, phrases):
    result = invoke('--outdir', tmp_path / 'runs', '--data', data32, '--metrics=none', '--device=cpu', '-n', *args)
    assert_clean_error(result, *phrases)
    assert not os.path.exists(tmp_path / 'runs')


def test_metrics_suite_check(tmp_path, data32):
    """The metrics suite is part of the tree: unknown names are refused, the default is upstream's."""
    assert importlib.util.find_spec('metrics.metric_main') is not None
    result = invoke('--outdir', tmp_path, '--data', data32, '-n', '--metrics=nope_metric')
    assert_clean_error(result, 'nope_metric')
    result = invoke('--outdir', tmp_path, '--data', data32, '-n', '--device=cpu')
    assert result.exit_code == 0, result.output
    assert '"fid50k_full"' in result.output  # upstream's default metric


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without CUDA')
def test_device_cuda_without_cuda(tmp_path, data32):
    result = invoke('--outdir', tmp_path, '--data', data32, '--metrics=none', '-n', '--device=cuda')
    assert_clean_error(result, 'no CUDA device is available')


def test_bad_dataset_names_file_and_fix(tmp_path):
    data = make_folder(tmp_path / 'mixed', 32, n=3, sizes=[32, 32, 16])
    result = invoke('--outdir', tmp_path / 'runs', '--data', data, '--metrics=none', '-n')
    assert_clean_error(result, 'bad --data', 'img002.png', 'dataset_tool.py')
    result = invoke('--outdir', tmp_path / 'runs', '--data', tmp_path / 'missing', '--metrics=none', '-n')
    assert_clean_error(result, 'bad --data', 'missing', 'no such folder')
    result = invoke('--outdir', tmp_path / 'runs', '--data', 'builtin:nosuchset', '--metrics=none', '-n')
    assert_clean_error(result, '--data', 'builtin:shapes')


# Run folders


def test_run_dir_ids_never_reused(tmp_path):
    out = tmp_path / 'runs'
    os.makedirs(out / '00000-a')
    os.makedirs(out / '00007-b')
    (out / '00042-not-a-folder.txt').write_text('ignored: not a run folder')
    os.makedirs(out / 'notes')
    first = train.make_run_dir(str(out), 'x')
    assert os.path.basename(first) == '00008-x'
    assert os.path.basename(train.make_run_dir(str(out), 'x')) == '00009-x'
    assert train.predict_run_dir(str(out), 'y').endswith('00010-y')


def test_run_dir_race(tmp_path):
    out = str(tmp_path / 'runs')
    made, errors = [], []
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait()
            made.append(train.make_run_dir(out, 'race'))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(made)) == 8
    assert sorted(os.path.basename(d) for d in made) == [f'{i:05d}-race' for i in range(8)]


# A real run


@pytest.mark.slow
def test_tiny_training_run(tmp_path):
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'), OMP_NUM_THREADS='1')
    cmd = [sys.executable, 'train.py', '--outdir', str(tmp_path / 'runs'), '--data=builtin:shapes-16',
           '--device=cpu', '--metrics=none', '--cbase=256', '--cmax=16', '--map-depth=1', '--batch=4',
           '--kimg=0.008', '--tick=0.004', '--snap=1', '--workers=0', '--aug=ada', '--target=0.1', '--seed=1']
    start = time.time()
    proc = subprocess.run(cmd, cwd=HARNESS, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = os.listdir(tmp_path / 'runs')
    assert len(runs) == 1 and runs[0].startswith('00000-shapes-16-n100-s0-auto-kimg0.008-batch4')
    run_dir = tmp_path / 'runs' / runs[0]
    files = os.listdir(run_dir)
    for name in ('training_options.json', 'log.txt', 'reals.png', 'stats.jsonl'):
        assert name in files, files
    assert any(f.startswith('fakes') and f.endswith('.png') for f in files), files
    assert any(f.startswith('network-snapshot-') and f.endswith('.pkl') for f in files), files
    with open(run_dir / 'training_options.json') as f:
        opts = json.load(f)
    assert opts['batch_size'] == 4 and opts['G_kwargs']['synthesis_kwargs']['channel_max'] == 16
    assert opts['run_dir'] == str(run_dir)
    log = (run_dir / 'log.txt').read_text()
    assert 'Output directory:' in log and 'tick' in log
    with open(run_dir / 'stats.jsonl') as f:
        assert len([line for line in f if line.strip()]) >= 1
    print(f'tiny run took {elapsed:.1f} s')


THIRD_PARTY_PRESET = '''
from kdgan_plugins import registry
registry.register('cfg', 'thirdparty.tiny', dict(
    description='a tiny StyleGAN2 for CPU tests', base='auto', defaults=dict(map=1, batch=4, mbstd=2),
    G_kwargs=dict(synthesis_kwargs=dict(channel_base=256, channel_max=16)),
    D_kwargs=dict(channel_base=256, channel_max=16)), overwrite=True)
'''


@pytest.mark.slow
def test_two_process_run_with_third_party_preset(tmp_path):
    """--gpus=2 on the CPU (gloo, spawned ranks), with a cfg registered by a module named in
    $KDGAN_PLUGINS: usable by name without touching the harness; rank 0 alone writes files."""
    (tmp_path / 'tiny_preset.py').write_text(THIRD_PARTY_PRESET)
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'), OMP_NUM_THREADS='1',
               KDGAN_PLUGINS='tiny_preset',
               PYTHONPATH=os.pathsep.join([str(tmp_path)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    cmd = [sys.executable, 'train.py', '--outdir', str(tmp_path / 'runs'), '--data=builtin:shapes-16',
           '--device=cpu', '--metrics=none', '--cfg=thirdparty.tiny', '--gpus=2', '--kimg=0.008', '--tick=0.004',
           '--snap=1', '--workers=0']
    proc = subprocess.run(cmd, cwd=HARNESS, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = os.listdir(tmp_path / 'runs')
    run_dir = tmp_path / 'runs' / run
    assert run == '00000-shapes-16-n100-s0-thirdparty.tiny-kimg0.008'
    with open(run_dir / 'training_options.json') as f:
        opts = json.load(f)
    assert opts['num_gpus'] == 2 and opts['batch_size'] == 4 and opts['batch_gpu'] == 2
    assert opts['G_kwargs']['synthesis_kwargs']['channel_max'] == 16
    assert 'plug-in (kdgan_plugins.registry)' in proc.stdout
    files = os.listdir(run_dir)
    assert not any(f.startswith('.dist-') for f in files)  # the rendezvous folder is cleaned up
    assert any(f.startswith('network-snapshot-') for f in files)
    log = (run_dir / 'log.txt').read_text()
    assert log.count('Training for 0.008 kimg') == 1  # rank 1 prints nothing


# Start-up checks before anything slow (issue 4: detector files; the loss' assets)


def test_augpipe_names_match_the_augment_module():
    from training.augment import augpipe_specs
    assert sorted(train.AUGPIPE_NAMES) == sorted(augpipe_specs)


def test_importing_train_imports_no_torch():
    """The metric check runs before torch is imported (torch alone takes seconds here)."""
    code = 'import sys, train; assert "torch" not in sys.modules, "train.py imports torch at module level"'
    proc = subprocess.run([sys.executable, '-c', code], cwd=HARNESS, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _dead_proxy_env(tmp_path):
    """An environment with an empty cache, no detector folder and every proxy pointing at a closed
    local port, so that no download can be attempted beyond one refused connection."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dead = f'http://127.0.0.1:{port}'
    env = {k: v for k, v in os.environ.items() if k.upper() not in ('NO_PROXY', 'KDGAN_DETECTOR_DIR',
                                                                   'KDGAN_TEACHER_DIR')}
    env.update(DNNLIB_CACHE_DIR=str(tmp_path / 'empty-cache'), HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead,
               https_proxy=dead, ALL_PROXY=dead, all_proxy=dead, OMP_NUM_THREADS='1')
    return env


def test_missing_detector_fails_fast_before_training(tmp_path):
    """No detector file and no network: --metrics=fid50k_full fails in under 5 seconds, before any
    training (no run folder), with one line naming the file and how to supply it."""
    env = _dead_proxy_env(tmp_path)
    cmd = [sys.executable, 'train.py', '--outdir', str(tmp_path / 'runs'), '--data=builtin:shapes-16',
           '--device=cpu', '--metrics=fid50k_full', '--kimg=1']
    start = time.time()
    proc = subprocess.run(cmd, cwd=HARNESS, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.time() - start
    print(f'offline detector failure after {elapsed:.2f} s')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert elapsed < 5, f'took {elapsed:.1f} s'
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith('Error: Missing'), err
    for phrase in ('inception-2015-12-05.pt', '--detector-dir', 'KDGAN_DETECTOR_DIR'):
        assert phrase in err, err
    assert not os.path.exists(tmp_path / 'runs') and 'Training for' not in proc.stdout
    # --metrics=none is not affected (a dry run here; the tiny run above trains with it).
    cmd[cmd.index('--metrics=fid50k_full')] = '--metrics=none'
    proc = subprocess.run(cmd + ['--dry-run'], cwd=HARNESS, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_lpips_detector_fails_before_training(tmp_path):
    """--cfg=fastgan's default --recon=lpips needs VGG16: refused before the run folder exists."""
    env = _dead_proxy_env(tmp_path)
    data = make_folder(tmp_path / 'd64', 64, n=2)
    cmd = [sys.executable, 'train.py', '--outdir', str(tmp_path / 'runs'), '--data', data,
           '--device=cpu', '--metrics=none', '--cfg=fastgan', '--kimg=1']
    start = time.time()
    proc = subprocess.run(cmd, cwd=HARNESS, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.time() - start
    print(f'offline LPIPS failure after {elapsed:.2f} s')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'vgg16.pt' in proc.stderr and '--detector-dir' in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / 'runs') and elapsed < 30


def test_detector_dir_is_used_and_exported(tmp_path, data32, monkeypatch):
    folder = tmp_path / 'detectors'
    folder.mkdir()
    (folder / 'inception-2015-12-05.pt').write_bytes(b'a stand-in: only its presence is checked here')
    monkeypatch.setenv('KDGAN_DETECTOR_DIR', str(tmp_path / 'elsewhere'))  # restored after the test
    assert train.check_metrics(['fid50k_full', 'kid50k_full'], detector_dir=str(folder)) == ['fid50k_full',
                                                                                            'kid50k_full']
    with pytest.raises(Exception) as info:
        train.check_metrics(['no_such_metric'])
    assert 'no_such_metric' in str(info.value.format_message())
    result = invoke('--outdir', tmp_path / 'runs', '--data', data32, '--device=cpu', '-n',
                    '--detector-dir', folder)
    assert result.exit_code == 0, result.output
    assert os.environ['KDGAN_DETECTOR_DIR'] == str(folder)  # spawned ranks and the loop inherit it
