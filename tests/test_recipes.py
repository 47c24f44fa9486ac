"""The published settings as recipes (issue 15, item 4): each recipe's --dry-run shows the values
the papers and official code give, the README lists each recipe's command, and --diffaug chooses
DiffAugment's ops on every backbone."""
import os

import pytest

from helpers import dry_run, invoke_train
from kdgan_plugins import presets

DATA = 'builtin:shapes-32'
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')
DIFFAUG = 'kdgan_plugins.augment.diffaugment.DiffAugment'
SG2_100SHOT = dict(batch_size=8, lr=0.002, betas=[0.0, 0.99], eps=1e-8)


def recipe(tmp_path, name, *extra):
    return dry_run(tmp_path / name, DATA, *presets.RECIPES[name], *extra)


def adam(opts, key):
    opt = opts[key]
    return dict(lr=opt['lr'], betas=opt['betas'], eps=opt['eps'])


def check_stylegan2_100shot(opts):
    """KD-DLGAN supplement: batch 8, lr 2e-3 for G and D, Adam beta (0, 0.99), eps 1e-8."""
    assert opts['G_kwargs']['class_name'] == 'training.networks.Generator'
    assert opts['batch_size'] == SG2_100SHOT['batch_size']
    for key in ('G_opt_kwargs', 'D_opt_kwargs'):
        assert adam(opts, key) == dict(lr=SG2_100SHOT['lr'], betas=SG2_100SHOT['betas'], eps=SG2_100SHOT['eps'])


def test_every_recipe_is_in_the_readme():
    text = open(README, encoding='utf-8').read()
    for name, flags in presets.RECIPES.items():
        assert ' '.join(flags) in text, name


def test_fastgan_official(tmp_path):
    opts, resolved, out = recipe(tmp_path, 'fastgan')
    assert opts['augment_kwargs'] == dict(class_name=DIFFAUG, policy='color,translation')   # no cutout
    assert opts['batch_size'] == 8 and opts['total_kimg'] == 400   # 50k iterations at batch 8
    for key in ('G_opt_kwargs', 'D_opt_kwargs'):
        assert adam(opts, key) == dict(lr=2e-4, betas=[0.5, 0.999], eps=1e-8)
    assert opts['loss_kwargs']['terms']['recon']['kind'] == 'lpips'
    assert '"policy": "color,translation"' in out


def test_stylegan2_diffaug_100shot(tmp_path):
    opts, _, _ = recipe(tmp_path, 'stylegan2-diffaug-100shot')
    check_stylegan2_100shot(opts)
    assert opts['augment_kwargs'] == dict(class_name=DIFFAUG, policy='color,translation,cutout')


def test_stylegan2_ada_100shot(tmp_path):
    opts, _, _ = recipe(tmp_path, 'stylegan2-ada-100shot')
    check_stylegan2_100shot(opts)
    assert opts['augment_kwargs']['class_name'] == 'training.augment.AugmentPipe' and opts['ada_target'] == 0.6


def test_kddlgan_stylegan2_100shot(tmp_path):
    opts, resolved, _ = recipe(tmp_path, 'kddlgan-stylegan2-100shot', '--teacher=random:ViT-B-32')
    check_stylegan2_100shot(opts)
    terms = opts['loss_kwargs']['terms']
    assert terms['agkd']['p'] == 0.7 and terms['agkd']['weight'] == 10 and terms['cgkd']['weight'] == 10
    assert resolved['D'] == dict(class_name='kdgan_plugins.networks.student.KDDiscriminator',
                                 backbone_class_name='training.networks.Discriminator')


def test_kddlgan_biggan_cifar(tmp_path):
    opts, resolved, out = recipe(tmp_path, 'kddlgan-biggan-cifar', '--teacher=random:ViT-B-32')
    assert opts['G_kwargs'] == dict(class_name='kdgan_plugins.networks.biggan.Generator', z_dim=128, w_dim=None,
                                    ngf=64)
    assert resolved['D'] == dict(class_name='kdgan_plugins.networks.student.KDDiscriminator',
                                 backbone_class_name='kdgan_plugins.networks.biggan.Discriminator')
    assert opts['D_kwargs']['ndf'] == 64
    assert opts['batch_size'] == 50 and opts['num_D_steps'] == 4
    for key in ('G_opt_kwargs', 'D_opt_kwargs'):
        assert adam(opts, key) == dict(lr=2e-4, betas=[0.0, 0.999], eps=1e-8)
    loss = opts['loss_kwargs']
    assert loss['adversarial'] == 'hinge' and loss['hinge_margin'] == [1.0, 1.0]
    assert loss['r1_gamma'] == 0 and loss['pl_weight'] == 0 and loss['style_mixing_prob'] == 0
    assert loss['terms']['lecam'] == dict(class_name='kdgan_plugins.losses.lecam.LeCam', weight=0.3, decay=0.9,
                                          start_iter=1000, iter_kimg=0.2)
    assert set(loss['terms']) == {'lecam', 'agkd', 'cgkd'}
    # G_ema: 0.9999 per G step, a copy of G before iteration 1000 (1000 x 4 x 50 images).
    assert (0.5 ** (50 / (opts['ema_kimg'] * 1000))) ** 4 == pytest.approx(0.9999, abs=1e-9)
    assert opts['ema_start_kimg'] == 200 and opts['ema_rampup'] is None
    assert opts['augment_kwargs'] == dict(class_name=DIFFAUG, policy='translation,cutout')
    assert opts['training_set_kwargs']['xflip'] is True and opts['training_set_kwargs']['use_labels'] is True
    assert loss['class_names'] and loss['teacher']['labels'] == 'auto'   # class names as prompts
    assert '"num_D_steps": 4' in out


@pytest.mark.parametrize('cfg', ['auto', 'paper256', 'fastgan', 'biggan_cifar'])
def test_diffaug_policy_on_every_backbone(tmp_path, cfg):
    opts, _, _ = dry_run(tmp_path / cfg, DATA, f'--cfg={cfg}', '--aug=diffaug', '--diffaug=translation')
    assert opts['augment_kwargs'] == dict(class_name=DIFFAUG, policy='translation')


def test_diffaug_policy_is_checked(tmp_path):
    result = invoke_train('--outdir', tmp_path / 'a', '--data', DATA, '--metrics=none', '--device=cpu', '--dry-run',
                          '--aug=ada', '--diffaug=color')
    assert result.exit_code == 2 and '--aug=diffaug' in result.output
    result = invoke_train('--outdir', tmp_path / 'b', '--data', DATA, '--metrics=none', '--device=cpu', '--dry-run',
                          '--aug=diffaug', '--diffaug=colour')
    assert result.exit_code == 2 and 'unknown DiffAugment policy' in result.output
