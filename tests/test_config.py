"""training/config.py and training/cfg_specs.py: the cfg table as data, the
precedence of the module docstring, errors that name their option, and
train.py as a thin shell around them (same answers, short functions)."""
import ast
import dataclasses
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

import train
from training import cfg_specs, config

from kdgan_plugins import registry

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    folder = tmp_path_factory.mktemp('d16') / 'imgs'
    folder.mkdir()
    rng = np.random.RandomState(16)
    for i in range(2):
        PIL.Image.fromarray(rng.randint(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(folder / f'{i}.png')
    return str(folder)



def flags(data, **kwargs):
    return config.Flags(data=data, metrics=[], device='cpu', dry_run=True, **kwargs)


def test_table_is_the_contract_and_keeps_int_types():
    assert list(cfg_specs.cfg_specs) == ['auto', 'stylegan2', 'paper256', 'paper512', 'paper1024', 'cifar']
    row = cfg_specs.cfg_specs['paper1024']
    assert row == dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10, ramp=None,
                       map=8)
    assert isinstance(row['fmaps'], int) and isinstance(cfg_specs.cfg_specs['cifar']['gamma'], float)
    auto = cfg_specs.cfg_specs['auto']
    assert [k for k, v in auto.items() if v == cfg_specs.COMPUTED] == ['ref_gpus', 'mb', 'mbstd', 'fmaps', 'lrate',
                                                                        'gamma', 'ema']
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg_specs.TABLE['cifar'].mb = 1  # Frozen: resolve_cfg's copies are the only mutable form.


@pytest.mark.parametrize('res,gpus,expect', [
    # Hand-computed from CONTRACT.md's formulas: (mb, mbstd, fmaps, lrate, gamma, ema).
    (128, 3, (64, 4, 0.5, 0.0025, 0.0002 * 128 ** 2 / 64, 20.0)),
    (1024, 1, (4, 4, 1, 0.002, 0.0002 * 1024 ** 2 / 4, 1.25)),
    (4096, 5, (5, 1, 1, 0.002, 0.0002 * 4096 ** 2 / 5, 1.5625)),
])
def test_auto_formulas(res, gpus, expect):
    spec = cfg_specs.resolve_cfg('auto', res, gpus)
    assert (spec.mb, spec.mbstd, spec.fmaps, spec.lrate, spec.gamma, spec.ema) == expect
    assert spec.ref_gpus == gpus and spec.kimg == 25000 and spec.ramp == 0.05 and spec.map == 2


def test_network_kwargs_key_order():
    """The order of keys is what --dry-run and training_options.json print."""
    kw = cfg_specs.network_kwargs(cfg_specs.resolve_cfg('cifar', 32), cfg='cifar', c_dim=10, img_resolution=32,
                                  img_channels=3)
    assert list(kw) == ['G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs']
    assert list(kw.G_kwargs) == ['class_name', 'z_dim', 'w_dim', 'mapping_kwargs', 'synthesis_kwargs', 'c_dim',
                                 'img_resolution', 'img_channels']
    assert list(kw.D_kwargs) == ['class_name', 'block_kwargs', 'mapping_kwargs', 'epilogue_kwargs', 'channel_base',
                                 'channel_max', 'num_fp16_res', 'conv_clamp', 'c_dim', 'img_resolution',
                                 'img_channels', 'architecture']
    assert list(kw.loss_kwargs) == ['class_name', 'r1_gamma', 'pl_weight', 'style_mixing_prob']
    assert kw.G_opt_kwargs == kw.D_opt_kwargs and kw.G_opt_kwargs.betas is not kw.D_opt_kwargs.betas


def test_resolve_matches_train_entry_point(data16):
    got = config.resolve(flags(data16, cfg='paper256', gamma=2.0, kimg=3.0))
    desc, args, resolved, summary, cleanup = train.setup_training_loop_kwargs(
        data=data16, metrics=[], device='cpu', dry_run=True, cfg='paper256', gamma=2.0, kimg=3.0)
    assert (desc, args, resolved, summary, cleanup) == got.astuple()
    assert desc == 'imgs-paper256-gamma2-kimg3' and args.total_kimg == 3 and isinstance(args.total_kimg, int)


def test_precedence_table_then_presets_then_flags(data16, clean_registry):
    registry.register('cfg', 'test.prec', dict(base='stylegan2', defaults=dict(batch=16, gamma=4, ema=7),
                                               G_kwargs=dict(mapping_kwargs=dict(num_layers=5))))
    registry.register('loss', 'test.prec_loss', dict(defaults=dict(gamma=6)))
    args = config.resolve(flags(data16, cfg='test.prec', loss='test.prec_loss')).args
    # Table row (stylegan2: lrate 0.002), cfg defaults (batch, ema), loss defaults beat cfg's (gamma).
    assert (args.G_opt_kwargs.lr, args.batch_size, args.ema_kimg, args.loss_kwargs.r1_gamma) == (0.002, 16, 7, 6)
    # The cfg's section patch beats the table's mapping depth ...
    assert args.G_kwargs.mapping_kwargs.num_layers == 5
    # ... and explicit flags beat both.
    res = config.resolve(flags(data16, cfg='test.prec', loss='test.prec_loss', map_depth=2, gamma=1.0, batch=8))
    assert res.args.G_kwargs.mapping_kwargs.num_layers == 2 and res.args.loss_kwargs.r1_gamma == 1.0
    assert res.args.batch_size == 8
    assert res.resolved['explicit_flags'] == dict(loss_kwargs=dict(r1_gamma=1.0),
                                                  G_kwargs=dict(mapping_kwargs=dict(num_layers=2)))


@pytest.mark.parametrize('kwargs,kind,flag,phrase', [
    (dict(gamma=-1.0), config.BadValue, '--gamma', 'must be >= 0'),
    (dict(aug='fixed'), config.Conflict, None, '--aug=fixed needs --p'),
    (dict(cfg='nope'), config.Conflict, None, "--cfg: unknown name 'nope'"),
    (dict(subset=9), config.BadValue, '--subset', 'outside 1..2'),
    (dict(ema=0.0), config.BadValue, '--ema', 'must be positive'),
])
def test_errors_name_their_option(data16, kwargs, kind, flag, phrase):
    with pytest.raises(kind) as info:
        config.resolve(flags(data16, **kwargs))
    assert info.value.flag == flag and phrase in info.value.message


def test_train_shows_config_errors_as_click_errors(data16):
    import click
    with pytest.raises(click.BadParameter) as info:
        train.setup_training_loop_kwargs(data=data16, metrics=[], device='cpu', dry_run=True, gamma=-1.0)
    assert info.value.format_message() == "Invalid value for '--gamma': must be >= 0"
    with pytest.raises(click.UsageError):
        train.setup_training_loop_kwargs(data=data16, metrics=[], device='cpu', dry_run=True, aug='fixed')
    with pytest.raises(click.ClickException):
        train.open_dataset(dict(class_name='training.dataset.ImageFolderDataset', path=data16 + '-missing'))
    with pytest.raises(TypeError):
        train.setup_training_loop_kwargs(data=data16, no_such_option=1)


def test_config_imports_neither_torch_nor_click():
    code = ('import sys, training.config; bad = {"torch", "click"} & set(sys.modules); '
            'assert not bad, bad')
    proc = subprocess.run([sys.executable, '-c', code], cwd=HARNESS, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize('name', ['train.py', 'training/config.py', 'training/cfg_specs.py'])
def test_no_function_longer_than_80_lines(name):
    with open(os.path.join(HARNESS, name), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert not long, long
