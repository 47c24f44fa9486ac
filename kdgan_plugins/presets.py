"""The kdgan presets, registered into kdgan_plugins.registry as data when this module is imported.

cfg   fastgan        FastGAN G/D (ngf = ndf = 64, nz = 256), Adam lr 2e-4 betas (0.5, 0.999),
                     batch 8, EMA 0.999 per step (after a ramp-up: EMA_RAMPUP), no R1, no path
                     length, no style mixing;
                     default --loss=fastgan, --aug=diffaug
      fastgan_lite   the same with every generator up block plain (lite=True)
                     (both: DiffAugment policy 'color,translation', the official code's;
                     G_ema's batch norm: ema_bn = FASTGAN_EMA_BN)
      biggan_cifar   BigGAN for CIFAR (KD-DLGAN's CIFAR backbone, ngf = ndf = 64, z 128):
                     hinge loss + LeCam 0.3, batch 50, 4 D steps per G step, Adam 2e-4
                     betas (0, 0.999) eps 1e-8, G_ema 0.9999 per G step from iteration 1000,
                     no R1 / path length / style mixing; default --loss=biggan,
                     --aug=diffaug with policy 'translation,cutout'
      stylegan2_100shot  StyleGAN2 in KD-DLGAN's 100-shot / AnimalFace setting: the `auto`
                     row with batch 8, lr 2e-3, Adam betas (0, 0.99) eps 1e-8
loss  biggan         StyleGAN2Loss as BigGAN's plain hinge (margin 1) + the LeCam term
      fastgan        FastGANLoss: hinge with the official random margin + reconstruction
                     (recon=lpips, the official choice: needs NVIDIA's vgg16.pt, which
                     check_assets resolves before training; `--recon=mse` needs no file)
      kdgan.AGKD     the cfg's own loss + the AGKD term, D wrapped in KDDiscriminator
      kdgan.CGKD     the cfg's own loss + the CGKD term, D wrapped in KDDiscriminator
      kdgan.KDDLGAN  both terms
aug   diffaug        DiffAugment, policy 'color,translation,cutout', always on (p = 1);
                     a cfg's `policy` default and then --diffaug choose other ops

Recipes (the published settings; README "Recipes" lists the commands): FastGAN =
--cfg=fastgan; StyleGAN2 + DiffAugment / + ADA = --cfg=stylegan2_100shot --aug=diffaug
/ --aug=ada; KD-DLGAN on StyleGAN2 = the DiffAugment one plus --loss=kdgan.KDDLGAN;
KD-DLGAN on BigGAN = --cfg=biggan_cifar --loss=kdgan.KDDLGAN --cond=1 --mirror=1 on a
CIFAR set or subset from dataset_tool.py. `RECIPES` holds them as data.

How the presets use the registry's data model
---------------------------------------------
* Loss terms live in `loss_kwargs.terms` as a dict {name: {class_name, ...}}:
  dicts deep-merge, so a kdgan.* loss preset applied after a cfg ADDS its
  term to the cfg's loss (FastGAN's reconstruction stays) and keeps the cfg's
  loss class (StyleGAN2Loss or FastGANLoss): the kdgan.* presets name no
  loss class_name. The LeCam term (`lecam`) is one such term: the
  biggan_cifar cfg has it; `--lecam=WEIGHT` adds it to any loss (0 removes it).
  Its warm-up is in G iterations, so cli_patch also sets its iter_kimg
  (batch x D steps per G step).
* The teacher is `loss_kwargs.teacher` ({class_name: CLIPTeacher, spec, ...}),
  built once by the loss and shared by the terms.
* "Wrap whatever D the cfg chose" cannot be a plain patch (a patch naming
  another class_name replaces the whole section). The kdgan.* presets carry
  `D_kwargs = {class_name: KDDiscriminator, backbone_class_name: WRAP, ...}`
  where WRAP = '@cfg' marks a wrapper; train.py applies loss presets with
  `apply_loss_preset(name, args)` (below), which turns the cfg's D section
  into {class_name: KDDiscriminator, backbone_class_name: <cfg's D class>,
  <cfg's D kwargs>, <student kwargs>} and patches the other sections as
  `registry.apply` does. Later explicit flags (--fp32, --cbase, ...) still
  merge into the same top-level keys, which KDDiscriminator passes to the
  backbone.
* Things a preset cannot express as data go through small functions here:
  `loop_options(cfg)` (top-level training_loop options: the FastGAN cfgs run
  without lazy regularisation, so Adam keeps lr 2e-4 and betas (0.5, 0.999)
  unscaled) and `cli_patch(...)` (the --teacher/--kd-*/--recon options as one
  explicit patch, including D_kwargs.student_dim = the teacher's width).
"""

import copy
import math

from kdgan_plugins import registry

__all__ = ['WRAP', 'FASTGAN_EMA_KIMG', 'BIGGAN_EMA_KIMG', 'RECIPES', 'register_all', 'apply_loss_preset', 'wrap_D_kwargs', 'loop_options',
           'cli_patch', 'KD_LOSSES']

WRAP = '@cfg'

FASTGAN_G = 'kdgan_plugins.networks.fastgan.Generator'
FASTGAN_D = 'kdgan_plugins.networks.fastgan.Discriminator'
FASTGAN_LOSS = 'kdgan_plugins.losses.fastgan_loss.FastGANLoss'
RECON = 'kdgan_plugins.losses.terms.Reconstruction'
AGKD = 'kdgan_plugins.losses.kd.AGKD'
CGKD = 'kdgan_plugins.losses.kd.CGKD'
KD_D = 'kdgan_plugins.networks.student.KDDiscriminator'
TEACHER = 'kdgan_plugins.teachers.clip_teacher.CLIPTeacher'
DIFFAUG = 'kdgan_plugins.augment.diffaugment.DiffAugment'
BIGGAN_G = 'kdgan_plugins.networks.biggan.Generator'
BIGGAN_D = 'kdgan_plugins.networks.biggan.Discriminator'
LECAM = 'kdgan_plugins.losses.lecam.LeCam'
CORE_LOSS = 'training.loss.StyleGAN2Loss'

FASTGAN_BATCH = 8
FASTGAN_EMA_BETA = 0.999
# The loop's EMA: beta = 0.5 ** (batch / (ema_kimg * 1000)); beta = 0.999 per step at batch 8
# means ema_kimg = batch * ln(0.5) / ln(0.999) / 1000 = 5.5424 (another --batch keeps this
# half-life in images, so beta per step changes with it).
FASTGAN_EMA_KIMG = round(FASTGAN_BATCH * math.log(0.5) / math.log(FASTGAN_EMA_BETA) / 1000, 4)
# With 0.999 from the first step, G_ema after a few hundred iterations is still ~90 % the initial G
# (grey pictures). The ramp-up of the `auto` row caps the half-life at 5 % of the images seen, so
# G_ema follows G early on; from 5.5424 / 0.05 = 111 kimg (of the official 400) it is 0.999 again.
EMA_RAMPUP = 0.05
# G_ema's batch-norm statistics (training_loop's ema_bn, --ema-bn). On the Fashion-MNIST proxy
# (docs/benchmarks.md, "FastGAN G_ema batch norm") no choice beat the others by more than the
# snapshot-to-snapshot swing; 'copy' had the lowest FID at the later snapshot and is what runs did before.
FASTGAN_EMA_BN = 'copy'

# BigGAN CIFAR: batch 50, 4 D steps per G step, G_ema decay 0.9999 per G step (BigGAN-PyTorch's
# default) from iteration 1000. The loop updates G_ema after every minibatch (= one D step), and G
# changes once per 4 of them, so beta per minibatch = 0.9999 ** (1/4) gives exactly 0.9999 per G step.
BIGGAN_BATCH = 50
BIGGAN_D_STEPS = 4
BIGGAN_EMA_KIMG = round(BIGGAN_BATCH * BIGGAN_D_STEPS * math.log(0.5) / math.log(0.9999) / 1000, 4)
# G steps 1..999 leave G_ema a copy of G: the 1000th G step follows minibatch 4000 (200 kimg at batch 50).
BIGGAN_EMA_START_KIMG = 1000 * BIGGAN_D_STEPS * BIGGAN_BATCH / 1000
# That copy is what makes its early snapshots show G, so it has no ramp-up: one would last
# 1386 / 0.05 = 27.7 Mimg, longer than the run, and change the published EMA throughout.
LECAM_TERM = dict(class_name=LECAM, weight=0.3, decay=0.9, start_iter=1000)

DEFAULT_TEACHER = dict(class_name=TEACHER, spec='ViT-B-32:openai', weights=None, config=None, labels='auto',
                       template='A photo of a {label}')
DEFAULT_STUDENT = dict(student_dim=512, student_hidden=1024)
KD_LOSSES = ('kdgan.AGKD', 'kdgan.CGKD', 'kdgan.KDDLGAN')


def _fastgan_cfg(lite):
    return dict(
        description=('FastGAN (Liu et al. 2021)' + (', lite: every G up block plain' if lite else '')
                     + ': ngf=ndf=64, nz=256, Adam 2e-4 (0.5, 0.999), batch 8, EMA 0.999/step, no R1/PL'),
        base='auto',
        loss='fastgan',
        aug='diffaug',
        defaults=dict(batch=FASTGAN_BATCH, lr=2e-4, gamma=0, ema=FASTGAN_EMA_KIMG, ramp=EMA_RAMPUP, mbstd=None,
                      kimg=400,    # 50k iterations at batch 8, the official default.
                      policy='color,translation'),   # the official DiffAugment ops (no cutout)
        G_kwargs=dict(class_name=FASTGAN_G, z_dim=256, w_dim=None, ngf=64, lite=bool(lite), up_conv='folded'),
        D_kwargs=dict(class_name=FASTGAN_D, ndf=64, decoder_widths='ndf', up_conv='folded'),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', betas=[0.5, 0.999], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', betas=[0.5, 0.999], eps=1e-8),
        loss_kwargs=_fastgan_loss_kwargs(),
    )


def _fastgan_loss_kwargs():
    return dict(class_name=FASTGAN_LOSS, style_mixing_prob=0, r1_gamma=0, pl_weight=0, precision='auto',
                fake_reuse=True, terms=dict(recon=dict(class_name=RECON, kind='lpips', weight=1.0)))


def _biggan_cfg():
    return dict(
        description=('BigGAN CIFAR (KD-DLGAN): ngf=ndf=64, z 128, hinge + LeCam 0.3, batch 50, 4 D steps/G step, '
                     'Adam 2e-4 (0, 0.999), G_ema 0.9999 from iteration 1000'),
        base='auto',
        loss='biggan',
        aug='diffaug',
        defaults=dict(batch=BIGGAN_BATCH, lr=2e-4, gamma=0, ema=BIGGAN_EMA_KIMG, ramp=None, mbstd=None,
                      policy='translation,cutout'),
        G_kwargs=dict(class_name=BIGGAN_G, z_dim=128, w_dim=None, ngf=64),
        D_kwargs=dict(class_name=BIGGAN_D, ndf=64),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', betas=[0.0, 0.999], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', betas=[0.0, 0.999], eps=1e-8),
        loss_kwargs=_biggan_loss_kwargs(),
    )


def _biggan_loss_kwargs():
    return dict(class_name=CORE_LOSS, adversarial='hinge', hinge_margin=[1.0, 1.0], style_mixing_prob=0,
                r1_gamma=0, pl_weight=0, terms=dict(lecam=dict(LECAM_TERM)))


def _stylegan2_100shot_cfg():
    return dict(
        description='StyleGAN2, KD-DLGAN supplement 100-shot/AnimalFace setting: batch 8, lr 2e-3, Adam (0, 0.99)',
        base='auto',
        defaults=dict(batch=8, lr=2e-3),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8),
    )


def _kd_loss(description, terms):
    return dict(
        description=description,
        loss_kwargs=dict(terms=terms, teacher=dict(DEFAULT_TEACHER)),
        D_kwargs=dict(class_name=KD_D, backbone_class_name=WRAP, **DEFAULT_STUDENT),
    )


AGKD_TERM = dict(class_name=AGKD, weight=10.0, p=0.7, dist=None)
CGKD_TERM = dict(class_name=CGKD, weight=10.0, dist=None, diversity=0.0)

PRESETS = {
    ('cfg', 'fastgan'): _fastgan_cfg(lite=False),
    ('cfg', 'fastgan_lite'): _fastgan_cfg(lite=True),
    ('cfg', 'biggan_cifar'): _biggan_cfg(),
    ('cfg', 'stylegan2_100shot'): _stylegan2_100shot_cfg(),
    ('loss', 'biggan'): dict(
        description='BigGAN loss: plain hinge (margin 1) + LeCam (weight 0.3, from iteration 1000)',
        loss_kwargs=_biggan_loss_kwargs()),
    ('loss', 'fastgan'): dict(
        description='FastGAN loss: hinge with random margin 0.8 + 0.2 U(0,1) + reconstruction (lpips by default)',
        loss_kwargs=_fastgan_loss_kwargs()),
    ('loss', 'kdgan.AGKD'): _kd_loss('KD-DLGAN AGKD (distillation + aggregated cross terms, p=0.7) on the cfg\'s loss',
                                     dict(agkd=AGKD_TERM)),
    ('loss', 'kdgan.CGKD'): _kd_loss('KD-DLGAN CGKD (image-text correlation distillation) on the cfg\'s loss',
                                     dict(cgkd=CGKD_TERM)),
    ('loss', 'kdgan.KDDLGAN'): _kd_loss('KD-DLGAN: AGKD + CGKD on the cfg\'s loss',
                                        dict(agkd=AGKD_TERM, cgkd=CGKD_TERM)),
    ('aug', 'diffaug'): dict(
        description="DiffAugment (Zhao et al. 2020), always applied; policy 'color,translation,cutout'",
        augment_kwargs=dict(class_name=DIFFAUG, policy='color,translation,cutout'),
        replace=['augment_kwargs'],
        defaults=dict(p=1)),
}

# Top-level training_loop options per cfg preset (the registry has no key for them).
LOOP_OPTIONS = {
    'fastgan': dict(G_reg_interval=None, D_reg_interval=None, ema_bn=FASTGAN_EMA_BN),
    'fastgan_lite': dict(G_reg_interval=None, D_reg_interval=None, ema_bn=FASTGAN_EMA_BN),
    'biggan_cifar': dict(G_reg_interval=None, D_reg_interval=None, num_D_steps=BIGGAN_D_STEPS,
                         ema_start_kimg=BIGGAN_EMA_START_KIMG),
}

# The published settings as command-line options (README "Recipes"); tests/test_recipes.py
# dry-runs each and checks the values the papers give.
RECIPES = {
    'fastgan': ['--cfg=fastgan', '--aug=diffaug'],
    'stylegan2-diffaug-100shot': ['--cfg=stylegan2_100shot', '--aug=diffaug'],
    'stylegan2-ada-100shot': ['--cfg=stylegan2_100shot', '--aug=ada'],
    'kddlgan-stylegan2-100shot': ['--cfg=stylegan2_100shot', '--aug=diffaug', '--loss=kdgan.KDDLGAN'],
    'kddlgan-biggan-cifar': ['--cfg=biggan_cifar', '--loss=kdgan.KDDLGAN', '--cond=1', '--mirror=1'],
}


def register_all(overwrite=True):
    """Register every preset of this module (idempotent)."""
    for (kind, name), preset in PRESETS.items():
        registry.register(kind, name, copy.deepcopy(preset), overwrite=overwrite)


def loop_options(cfg):
    """Top-level training_loop kwargs that cfg preset `cfg` needs ({} for others)."""
    return copy.deepcopy(LOOP_OPTIONS.get(cfg, {}))


# Applying a loss preset that wraps D.


def _like(template, value):
    cls = type(template) if isinstance(template, dict) else dict
    try:
        return cls(value)
    except TypeError:
        return dict(value)


def wrap_D_kwargs(D_kwargs, wrapper):
    """D_kwargs of `wrapper['class_name']` around the D that D_kwargs describes.

    `wrapper` is a preset's D_kwargs with backbone_class_name = WRAP. A D
    already of the wrapper's class is only patched (applying twice is harmless).
    """
    wrapper = {k: v for k, v in wrapper.items() if not (k == 'backbone_class_name' and v == WRAP)}
    D_kwargs = D_kwargs if D_kwargs is not None else {}
    if D_kwargs.get('class_name') == wrapper.get('class_name'):
        return registry.deep_merge(D_kwargs, wrapper)
    backbone = D_kwargs.get('class_name')
    if not backbone:
        raise ValueError('cannot wrap D: the cfg names no discriminator class_name')
    out = _like(D_kwargs, {})
    out['class_name'] = wrapper['class_name']
    out['backbone_class_name'] = backbone
    for key, value in D_kwargs.items():
        if key != 'class_name':
            out[key] = copy.deepcopy(value)
    return registry.deep_merge(out, {k: v for k, v in wrapper.items() if k != 'class_name'})


def apply_loss_preset(name, options):
    """Like registry.apply('loss', name, options), except that a D_kwargs patch with
    backbone_class_name = WRAP wraps the D already in `options` instead of replacing it."""
    preset = registry.lookup('loss', name)
    D_patch = preset.get('D_kwargs')
    if not (isinstance(D_patch, dict) and D_patch.get('backbone_class_name') == WRAP):
        return registry.apply('loss', name, options)
    replace = set(preset.get('replace', []))
    for section in registry.SECTIONS:
        if section == 'D_kwargs':
            options[section] = wrap_D_kwargs(options.get(section), D_patch)
        elif section in preset:
            options[section] = registry.patch_section(options.get(section), preset[section],
                                                      replace=section in replace)
        elif section in replace:
            options[section] = _like(options.get(section) or {}, {})
    return options


# Command-line options -> one explicit patch.


def _term_names(loss_kwargs, class_name):
    terms = (loss_kwargs or {}).get('terms') or {}
    if isinstance(terms, dict):
        return [n for n, spec in terms.items() if isinstance(spec, dict) and spec.get('class_name') == class_name]
    return [spec.get('name') or class_name.rsplit('.', 1)[-1].lower() for spec in terms
            if isinstance(spec, dict) and spec.get('class_name') == class_name]


def cli_patch(args, teacher=None, teacher_weights=None, teacher_config=None, teacher_dir=None, kd_p=None,
              kd_agkd_weight=None, kd_cgkd_weight=None, kd_dist=None, kd_labels=None, kd_template=None,
              kd_diversity=None, recon=None, recon_weight=None, class_names=None, detector_dir=None, seed=None,
              lecam=None, precision=None, fake_reuse=None):
    """The --teacher / --kd-* / --recon options as a patch {section: {...}} for the
    resolved `args` (after the presets): merge it with the other explicit flags.

    Options left None change nothing. A given option that does not apply to
    the resolved loss (--kd-p without an AGKD term, --recon without a
    reconstruction term, ...) raises ValueError naming the option. Whenever
    the loss has KD terms, `class_names` (the dataset's, or None) goes to
    loss_kwargs.class_names, `seed` to AGKD's seed, and D_kwargs.student_dim is
    set to the teacher's embedding width. `lecam` (--lecam) adds the LeCam term
    with that weight (or sets the weight of the one the loss has; 0 removes it);
    every LeCam term gets iter_kimg = batch x num_D_steps / 1000. `precision` and
    `fake_reuse` (FastGAN's loss) go to loss_kwargs; precision 'fp32' also puts
    G's and D's up-convolutions back on the reference arithmetic (up_conv='nearest').
    """
    loss_kwargs = args.get('loss_kwargs') or {}
    agkd, cgkd, rec = (_term_names(loss_kwargs, cls) for cls in (AGKD, CGKD, RECON))
    kd = bool(agkd or cgkd)
    patch = {}

    def put(path, value):
        node = patch
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    def need(ok, flag, what):
        if not ok:
            raise ValueError(f'{flag} applies to {what}, which the resolved loss '
                             f'({loss_kwargs.get("class_name")}) does not have; use --loss=kdgan.AGKD|kdgan.CGKD|'
                             f'kdgan.KDDLGAN' + (' or --cfg=fastgan' if 'recon' in flag else ''))

    teacher_opts = dict(spec=teacher, weights=teacher_weights, config=teacher_config, teacher_dir=teacher_dir,
                        labels=kd_labels, template=kd_template)
    for key, value in teacher_opts.items():
        if value is not None:
            need(kd, '--' + {'spec': 'teacher', 'weights': 'teacher-weights', 'config': 'teacher-config',
                             'teacher_dir': 'teacher-dir', 'labels': 'kd-labels',
                             'template': 'kd-template'}[key], 'a KD term')
            put(['loss_kwargs', 'teacher', key], value)
    # One row per per-term option: (value, terms it applies to, flag, what it needs, key, type).
    term_options = (
        (kd_p, agkd, '--kd-p', 'the AGKD term', 'p', float),
        (kd_agkd_weight, agkd, '--kd-agkd-weight', 'the AGKD term', 'weight', float),
        (kd_cgkd_weight, cgkd, '--kd-cgkd-weight', 'the CGKD term', 'weight', float),
        (kd_diversity, cgkd, '--kd-diversity', 'the CGKD term', 'diversity', float),
        (kd_dist, agkd + cgkd, '--kd-dist', 'a KD term', 'dist', str),
    )
    for value, names, flag, what, key, cast in term_options:
        if value is not None:
            need(names, flag, what)
            for name in names:
                put(['loss_kwargs', 'terms', name, key], cast(value))
    if recon is not None:
        need(rec, '--recon', 'the reconstruction term')
        for name in rec:
            put(['loss_kwargs', 'terms', name], None if recon == 'none' else {'kind': str(recon)})
    if recon_weight is not None and recon != 'none':
        need(rec, '--recon-weight', 'the reconstruction term')
        for name in rec:
            put(['loss_kwargs', 'terms', name, 'weight'], float(recon_weight))
    if detector_dir is not None:
        for name in rec:
            if recon != 'none':
                put(['loss_kwargs', 'terms', name, 'detector_dir'], detector_dir)
        if kd:
            put(['loss_kwargs', 'teacher', 'detector_dir'], detector_dir)
    _lecam_patch(args, loss_kwargs, lecam, put)
    _speed_patch(args, loss_kwargs, precision, fake_reuse, put, need)
    if kd:
        if class_names is not None:
            put(['loss_kwargs', 'class_names'], list(class_names))
        if seed is not None:
            for name in agkd:
                put(['loss_kwargs', 'terms', name, 'seed'], int(seed))
        from kdgan_plugins.losses.kd import teacher_embed_dim
        merged = copy.deepcopy(dict(loss_kwargs.get('teacher') or {}))
        merged.update(patch.get('loss_kwargs', {}).get('teacher', {}))
        if (args.get('D_kwargs') or {}).get('class_name') == KD_D:
            put(['D_kwargs', 'student_dim'], teacher_embed_dim(merged))
    return patch


def _speed_patch(args, loss_kwargs, precision, fake_reuse, put, need):
    """--precision / --fake-reuse for losses that take them (FastGAN's)."""
    fastgan = loss_kwargs.get('class_name') == FASTGAN_LOSS
    if fake_reuse is not None:
        need(fastgan, '--fake-reuse', "FastGAN's loss")
        put(['loss_kwargs', 'fake_reuse'], bool(fake_reuse))
    if precision is None:
        return
    need(fastgan, '--precision', "FastGAN's loss")
    put(['loss_kwargs', 'precision'], str(precision))
    for section in ('G_kwargs', 'D_kwargs'):
        if 'up_conv' in (args.get(section) or {}):
            put([section, 'up_conv'], 'nearest' if precision == 'fp32' else 'folded')


def _lecam_patch(args, loss_kwargs, weight, put):
    names = _term_names(loss_kwargs, LECAM)
    if weight is not None:
        if float(weight) < 0:
            raise ValueError(f'--lecam is a weight: 0 (off) or more, got {weight}')
        if float(weight) == 0:
            for name in names:
                put(['loss_kwargs', 'terms', name], None)
            return
        if not isinstance((loss_kwargs or {}).get('terms') or {}, dict):
            raise ValueError('--lecam needs the loss terms as a dict {name: spec}')
        names = names or ['lecam']
        for name in names:
            spec = {} if name in _term_names(loss_kwargs, LECAM) else dict(LECAM_TERM)
            put(['loss_kwargs', 'terms', name], dict(spec, weight=float(weight)))
    iter_kimg = args.get('batch_size', 0) * (args.get('num_D_steps') or 1) / 1000
    for name in names:
        put(['loss_kwargs', 'terms', name, 'iter_kimg'], iter_kimg)


register_all()
