"""kdgan_plugins.presets: every preset resolves through the registry and builds
its networks, optimisers, loss and augment pipe by class name at small size;
the kdgan.* losses wrap whatever D the cfg chose and add to the cfg's loss."""

import copy
import json
import math

import pytest
import torch

import dnnlib
from training import cfg_specs

from kdgan_plugins import presets, registry

RES = 64
TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
ALL = [('cfg', 'fastgan'), ('cfg', 'fastgan_lite'), ('loss', 'fastgan'), ('loss', 'kdgan.AGKD'),
       ('loss', 'kdgan.CGKD'), ('loss', 'kdgan.KDDLGAN'), ('aug', 'diffaug')]


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('teacher') / 'tiny.json'
    path.write_text(json.dumps(TINY))
    return str(path)


def test_every_preset_is_registered_as_data():
    assert registry.load_plugins(['kdgan_plugins.presets']) == ['kdgan_plugins.presets']
    for kind, name in ALL:
        preset = registry.lookup(kind, name)
        assert json.loads(json.dumps(preset)) == preset   # Plain data.
    cfg = registry.lookup('cfg', 'fastgan')
    assert (cfg['loss'], cfg['aug']) == ('fastgan', 'diffaug')
    assert registry.lookup('aug', 'diffaug')['defaults']['p'] == 1


def test_fastgan_ema_is_0999_per_step_at_batch_8():
    ema_kimg = registry.defaults('cfg', 'fastgan')['ema']
    beta = 0.5 ** (8 / (ema_kimg * 1000))   # The loop's formula.
    assert beta == pytest.approx(0.999, abs=1e-7)
    assert presets.loop_options('fastgan') == dict(G_reg_interval=None, D_reg_interval=None, ema_bn='copy')
    assert presets.loop_options('paper256') == {}


def resolve(cfg, loss=None, aug=None, base=None):
    """What train.py does with the names, reduced to the preset steps."""
    spec = cfg_specs.resolve_cfg(base or registry.lookup('cfg', cfg).get('base', 'auto') if cfg in registry.names('cfg')
                                 else cfg, RES, 1)
    args = dnnlib.EasyDict(cfg_specs.network_kwargs(spec, cfg=cfg))
    if registry.is_registered('cfg', cfg):
        registry.apply('cfg', cfg, args)
        loss = loss or registry.lookup('cfg', cfg)['loss']
        aug = aug or registry.lookup('cfg', cfg)['aug']
    if loss is not None:
        presets.apply_loss_preset(loss, args)
    args.augment_kwargs = dnnlib.EasyDict()
    if aug is not None:
        registry.apply('aug', aug, args)
    return args


def small(args):
    """Shrink the resolved networks for a CPU test."""
    args = copy.deepcopy(args)
    if args.G_kwargs.class_name == presets.FASTGAN_G:
        args.G_kwargs.ngf = 8
    else:
        args.G_kwargs.synthesis_kwargs.update(channel_base=512, channel_max=16)
        args.G_kwargs.mapping_kwargs.num_layers = 1
        args.G_kwargs.update(z_dim=16, w_dim=16)
    if args.D_kwargs.get('ndf') is not None:
        args.D_kwargs.ndf = 8
    else:
        args.D_kwargs.update(channel_base=512, channel_max=16)
    return args


def build(args):
    common = dict(c_dim=0, img_resolution=RES, img_channels=3)
    G = dnnlib.util.construct_class_by_name(**args.G_kwargs, **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**args.D_kwargs, **common).train().requires_grad_(False)
    opts = []
    for module, kwargs in ((G, args.G_opt_kwargs), (D, args.D_opt_kwargs)):
        kwargs = dict(kwargs, betas=[float(b) for b in kwargs['betas']])   # As the loop's lazy-reg scaling does.
        opts.append(dnnlib.util.construct_class_by_name(module.parameters(), **kwargs))
    G_opt, D_opt = opts
    pipe = dnnlib.util.construct_class_by_name(**args.augment_kwargs) if args.augment_kwargs else None
    loss = dnnlib.util.construct_class_by_name(device='cpu', G_mapping=G.mapping, G_synthesis=G.synthesis, D=D,
                                               augment_pipe=pipe, **args.loss_kwargs)
    return G, D, G_opt, D_opt, pipe, loss


@pytest.mark.parametrize('cfg', ['fastgan', 'fastgan_lite'])
def test_fastgan_cfgs_build(cfg):
    args = resolve(cfg)
    assert args.G_kwargs.class_name == presets.FASTGAN_G and args.G_kwargs.z_dim == 256
    assert args.G_kwargs.ngf == 64 and args.D_kwargs.ndf == 64 and args.G_kwargs.lite == (cfg == 'fastgan_lite')
    assert args.G_opt_kwargs.betas == [0.5, 0.999] and args.D_opt_kwargs.betas == [0.5, 0.999]
    assert args.loss_kwargs.class_name == presets.FASTGAN_LOSS
    assert args.loss_kwargs.terms.recon.kind == 'lpips'   # The official reconstruction distance.
    assert args.augment_kwargs.class_name == presets.DIFFAUG
    assert args.augment_kwargs.policy == 'color,translation,cutout'
    defaults = registry.defaults('cfg', cfg)
    assert (defaults['batch'], defaults['lr'], defaults['gamma']) == (8, 2e-4, 0)
    small_args = small(args)
    small_args.loss_kwargs.terms.recon.kind = 'mse'   # No VGG16 file in tests.
    G, D, G_opt, D_opt, pipe, loss = build(small_args)
    assert type(loss).__name__ == 'FastGANLoss' and loss.adversarial == 'hinge' and loss.G_aux
    assert [type(t).__name__ for t in loss.terms] == ['Reconstruction']
    assert G_opt.defaults['betas'] == (0.5, 0.999) or list(G_opt.defaults['betas']) == [0.5, 0.999]
    img, aux = G.synthesis(G.mapping(torch.randn([2, G.z_dim]), None), return_aux=True)
    assert D(pipe(img), None, img_small=pipe(aux)).shape == (2, 50)
    assert float(pipe.p) == 1.0
    assert (cfg == 'fastgan_lite') == all('noise' not in n for n, _ in G.named_parameters())


def test_diffaug_preset_on_a_stylegan2_cfg():
    args = small(resolve('paper256', aug='diffaug'))
    assert args.loss_kwargs.class_name == 'training.loss.StyleGAN2Loss'
    _G, _D, _G_opt, _D_opt, pipe, loss = build(args)
    assert type(pipe).__name__ == 'DiffAugment' and loss.augment_pipe is pipe


@pytest.mark.parametrize('loss_name', presets.KD_LOSSES)
@pytest.mark.parametrize('cfg', ['paper256', 'fastgan'])
def test_kd_losses_wrap_the_cfgs_D_and_add_to_its_loss(cfg, loss_name, tiny_config):
    plain = resolve(cfg)
    args = resolve(cfg, loss=loss_name, aug='diffaug')
    # D: the cfg's D class inside KDDiscriminator, with all of the cfg's D kwargs.
    assert args.D_kwargs.class_name == presets.KD_D
    assert args.D_kwargs.backbone_class_name == plain.D_kwargs.class_name
    for key, value in plain.D_kwargs.items():
        if key != 'class_name':
            assert args.D_kwargs[key] == value
    # Loss: the cfg's class and terms, plus the KD terms and the teacher.
    assert args.loss_kwargs.class_name == plain.loss_kwargs.class_name
    kd_terms = {'kdgan.AGKD': ['agkd'], 'kdgan.CGKD': ['cgkd'], 'kdgan.KDDLGAN': ['agkd', 'cgkd']}[loss_name]
    assert sorted(args.loss_kwargs.terms) == sorted(kd_terms + (['recon'] if cfg == 'fastgan' else []))
    assert args.loss_kwargs.teacher.spec == 'ViT-B-32:openai' and args.D_kwargs.student_dim == 512
    # Applying twice changes nothing.
    again = presets.apply_loss_preset(loss_name, copy.deepcopy(args))
    assert again.D_kwargs == args.D_kwargs

    # The command-line options as one patch: a tiny random teacher sets the student width.
    patch = presets.cli_patch(args, teacher='random:tiny', teacher_config=tiny_config, kd_labels='happy,sad',
                              kd_dist='l1', recon='mse' if cfg == 'fastgan' else None, seed=3,
                              class_names=['a', 'b'])
    assert patch['D_kwargs'] == {'student_dim': 16}
    registry.deep_merge(args, patch)
    for name in kd_terms:
        assert args.loss_kwargs.terms[name].dist == 'l1'
    G, D, _G_opt, _D_opt, _pipe, loss = build(small(args))
    assert type(D).__name__ == 'KDDiscriminator' and D.backbone_class_name == plain.D_kwargs.class_name
    assert sorted(t.name for t in loss.terms) == sorted(args.loss_kwargs.terms)
    assert loss.get_teacher().labels == ['happy', 'sad']
    logits, s = D(torch.zeros([2, 3, RES, RES]), None, features=True)[:2]
    assert s.shape == (2, 16) and logits.shape[0] == 2


def test_cli_patch_maps_options_and_refuses_those_that_do_not_apply(tiny_config):
    args = resolve('fastgan', loss='kdgan.KDDLGAN')
    patch = presets.cli_patch(args, teacher='random:tiny', teacher_config=tiny_config, teacher_weights=None,
                              kd_p=0.5, kd_agkd_weight=3, kd_cgkd_weight=4, kd_template='a {label} face',
                              kd_diversity=0.1, recon_weight=2, detector_dir='/somewhere')
    terms = patch['loss_kwargs']['terms']
    assert terms['agkd'] == {'p': 0.5, 'weight': 3.0}
    assert terms['cgkd'] == {'weight': 4.0, 'diversity': 0.1}
    assert terms['recon'] == {'weight': 2.0, 'detector_dir': '/somewhere'}
    assert patch['loss_kwargs']['teacher'] == {'spec': 'random:tiny', 'config': tiny_config,
                                               'template': 'a {label} face', 'detector_dir': '/somewhere'}
    assert presets.cli_patch(args, recon='none')['loss_kwargs']['terms']['recon'] is None

    plain = resolve('fastgan')
    with pytest.raises(ValueError, match='--kd-p'):
        presets.cli_patch(plain, kd_p=0.5)
    with pytest.raises(ValueError, match='--teacher'):
        presets.cli_patch(plain, teacher='random:tiny')
    with pytest.raises(ValueError, match='--recon'):
        presets.cli_patch(resolve('paper256'), recon='mse')
    with pytest.raises(ValueError, match='--kd-diversity'):
        presets.cli_patch(resolve('paper256', loss='kdgan.AGKD'), kd_diversity=1)


def test_ema_constant_matches_its_formula():
    assert presets.FASTGAN_EMA_KIMG == pytest.approx(8 * math.log(0.5) / math.log(0.999) / 1000, abs=1e-4)
