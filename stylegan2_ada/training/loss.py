"""Losses for the training loop: the phase machinery and the StyleGAN2 loss.

The training loop knows nothing about a method: each minibatch it calls
`loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, sync, gain)`
for the phases Gmain/Greg/Gboth/Dmain/Dreg/Dboth and steps the optimisers.

`StyleGAN2Loss` is written as one core that plug-in losses extend by
overriding small hooks instead of copying the phases:

- `run_G(z, c, sync)` -> (images, ws): mapping (+ style mixing) and synthesis.
- `run_D(img, c, sync, side)` -> EasyDict(logits=..., img_aug=..., ...): the
  augment pipe, then D. A subclass that needs more from D (student features,
  reconstructions) asks D for it here and stores it in the returned dict.
- `G_adv_term(gen_logits)`, `D_adv_term_gen(gen_logits)`,
  `D_adv_term_real(real_logits)`: per-sample adversarial terms
  (non-saturating logistic here; a hinge loss overrides these three).
- `extra_D_terms(side, res, c)` -> {name: tensor}: extra terms added to the
  Dmain loss of one side ('gen' or 'real'), given that side's `run_D` result.
  Each is averaged, reported as `Loss/D/<name>` and back-propagated with the
  side's adversarial term. The sides are separate because under
  DistributedDataParallel every D forward must be followed by its own backward
  (the gen pass runs without gradient sync, the real pass with it).
- `state_dict()` / `load_state_dict()`: tensors the loss owns across steps
  (pl_mean here), saved by the exact-resume checkpoint.

Options beyond upstream's (all optional, defaults = upstream behaviour):

- `adversarial='logistic'|'hinge'`: the adversarial terms. 'hinge' is
  FastGAN's: D real relu(m - D(x)), D fake relu(m + D(G(z))), G -D(G(z)),
  with m ~ U(hinge_margin) drawn per element of the logit map
  (`hinge_margin=(0.8, 1.0)`, the official code; (1, 1) is the plain hinge).
- `G_aux=False`: ask the synthesis network for its auxiliary image
  (`G_synthesis(ws, return_aux=True)` -> (img, img_small), FastGAN). Fakes
  then travel as a pair: the augment pipe is applied to each image
  independently and D gets `D(img_aug, c, img_small=img_small_aug)`.
- `terms`: composable loss terms (kdgan_plugins.losses.terms), a dict
  `{name: {class_name: ..., **kwargs}}` (None switches a named term off;
  dicts deep-merge, so presets can add terms to a cfg's) or a list of
  such dicts. Each is built once with the loss as its first argument and
  adds to the D phase (and, if it wants, to G's main loss). The core asks
  D for what the terms need (`features=True`, `recon=True`). When a term
  needs the augmented reals before the gen pass (AGKD's cross terms), the
  real batch is augmented ONCE up front and the real pass reuses exactly
  those images; R1 still differentiates w.r.t. the un-augmented image,
  because the graph from `real_img_tmp` through the augment pipe is kept.
- `teacher`: kwargs (class_name included, default
  kdgan_plugins.teachers.clip_teacher.CLIPTeacher) of a frozen teacher that
  terms share (`loss.get_teacher()`), built once on first use, never
  pickled. A `labels` spec that is a string ('auto', a comma list, a file)
  is resolved with `class_names` (the dataset's class names, which
  train.py passes) and whether D is conditional.
"""

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


class Loss:
    """Interface the training loop calls; see the module docstring."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        raise NotImplementedError()

    def state_dict(self):
        """Tensors to carry across an exact resume (name -> tensor)."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise KeyError('{} holds no state, got {}'.format(type(self).__name__, sorted(state)))


class StyleGAN2Loss(Loss):
    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2, adversarial='logistic', hinge_margin=(0.8, 1.0),
                 G_aux=False, terms=None, teacher=None, class_names=None):
        super().__init__()
        self.device = torch.device(device)
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = float(style_mixing_prob)
        self.r1_gamma = float(r1_gamma)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.pl_weight = float(pl_weight)
        self.pl_mean = torch.zeros([], device=self.device)   # Running mean of path lengths.
        if adversarial not in ('logistic', 'hinge'):
            raise ValueError(f"adversarial must be 'logistic' or 'hinge', got {adversarial!r}")
        self.adversarial = adversarial
        self.hinge_margin = tuple(float(m) for m in hinge_margin)
        if len(self.hinge_margin) != 2 or self.hinge_margin[0] > self.hinge_margin[1]:
            raise ValueError(f'hinge_margin must be (low, high) with low <= high, got {hinge_margin}')
        self.G_aux = bool(G_aux)
        if self.G_aux and getattr(getattr(G_synthesis, 'module', G_synthesis), 'aux_resolution', None) is None:
            raise TypeError('G_aux=True needs a synthesis network with an auxiliary output '
                            '(G_synthesis(ws, return_aux=True), e.g. FastGAN\'s); this one has no aux_resolution')
        self.teacher_kwargs = dict(teacher) if teacher else None
        self.class_names = list(class_names) if class_names is not None else None
        self._teacher = None
        self.step = None        # Per-call scratch of the terms during accumulate_gradients.
        self.terms = []
        if terms:
            from kdgan_plugins.losses.terms import build_terms
            self.terms = build_terms(self, terms)

    # Shared resources of the terms.

    @property
    def D_module(self):
        """D itself (unwrapped from DistributedDataParallel), for its attributes."""
        return getattr(self.D, 'module', self.D)

    def get_teacher(self):
        """The frozen teacher the terms share, built once from the `teacher` option."""
        if self._teacher is None:
            kwargs = dict(self.teacher_kwargs or {})
            class_name = kwargs.pop('class_name', DEFAULT_TEACHER_CLASS)
            spec = kwargs.pop('spec', None)
            if spec is not None:   # The --teacher string: 'ViT-B-32:openai', 'random:ViT-B-32', 'ViT-B-32' + weights.
                kwargs['model'] = spec
                if ':' not in str(spec):
                    kwargs['pretrained'] = None
            labels = kwargs.get('labels', None)
            if labels is None or isinstance(labels, str):
                from kdgan_plugins.teachers import clip_teacher
                kwargs['labels'] = clip_teacher.resolve_labels(
                    labels if labels is not None else 'auto', dataset_class_names=self.class_names,
                    conditional=getattr(self.D_module, 'c_dim', 0) > 0)
            kwargs.setdefault('device', self.device)
            self._teacher = dnnlib.util.construct_class_by_name(class_name=class_name, **kwargs)
        return self._teacher
    # State for exact resume.

    def state_dict(self):
        state = {'pl_mean': self.pl_mean.detach().clone()}
        for term in self.terms:
            for key, value in term.state_dict().items():
                state[f'terms.{term.name}.{key}'] = value
        return state

    def load_state_dict(self, state):
        state = dict(state)
        pl_mean = state.pop('pl_mean', None)
        if pl_mean is not None:
            self.pl_mean.copy_(torch.as_tensor(pl_mean).to(self.pl_mean))
        for term in self.terms:
            prefix = f'terms.{term.name}.'
            mine = {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
            term.load_state_dict(mine)
        if state:
            raise KeyError('{}: unexpected state entries {}'.format(type(self).__name__, sorted(state)))

    # Hooks.

    def run_G(self, z, c, sync):
        """Latents -> images. Returns (img, ws)."""
        with misc.ddp_sync(self.G_mapping, sync):
            ws = self.G_mapping(z, c)
            if self.style_mixing_prob > 0:
                ws = self._mix_styles(ws, z, c)
        with misc.ddp_sync(self.G_synthesis, sync):
            if self.G_aux:
                img = tuple(self.G_synthesis(ws, return_aux=True))   # (img, img_small)
            else:
                img = self.G_synthesis(ws)
        return img, ws

    def _mix_styles(self, ws, z, c):
        """With probability style_mixing_prob, the ws from a random cutoff on come from
        another latent. Drawn on the device, without a host sync."""
        with torch.autograd.profiler.record_function('style_mixing'):
            num_ws = ws.shape[1]
            cutoff = torch.randint(1, max(num_ws, 2), [], device=ws.device)
            use_mix = torch.rand([], device=ws.device) < self.style_mixing_prob
            cutoff = torch.where(use_mix, cutoff, torch.full_like(cutoff, num_ws))
            ws_other = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            take_other = (torch.arange(num_ws, device=ws.device) >= cutoff).reshape(1, num_ws, 1)
            return torch.where(take_other, ws_other, ws)

    def augment(self, img):
        """The augment pipe on a batch, or on each image of a (img, img_small) pair independently."""
        if self.augment_pipe is None:
            return img
        if isinstance(img, (tuple, list)):
            return tuple(self.augment_pipe(x) for x in img)
        return self.augment_pipe(img)

    def D_outputs(self, side, phase='D'):
        """What the terms need from D for `side` in the D (or G) phase: a set of
        'features' / 'recon'."""
        wants = set()
        for term in self.terms:
            wants.update(term.D_outputs(side) if phase == 'D' else term.G_outputs())
        return wants

    def run_D(self, img, c, sync, side, img_aug=None, outputs=()):
        """Augment (unless `img_aug` is given), then D. `side` is 'gen' or 'real'.
        `img` may be a (img, img_small) pair (G_aux). `outputs` names extra D outputs
        ('features', 'recon'). Returns an EasyDict with `logits`, `img_aug` (the
        full-size augmented image), `img_small_aug` for pairs, and `feat` / `rec`
        when asked for."""
        if img_aug is None:
            img_aug = self.augment(img)
        small = None
        if isinstance(img_aug, (tuple, list)):
            img_aug, small = img_aug
        kwargs = {}
        if small is not None:
            kwargs['img_small'] = small
        outputs = set(outputs)
        unknown = outputs - {'features', 'recon'}
        if unknown:
            raise ValueError(f'unknown D outputs {sorted(unknown)}')
        if 'features' in outputs:
            kwargs['features'] = True
        if 'recon' in outputs:
            kwargs['recon'] = True
        with misc.ddp_sync(self.D, sync):
            out = self.D(img_aug, c, **kwargs)
        res = dnnlib.EasyDict(img_aug=img_aug, img_small_aug=small)
        if 'features' in outputs or 'recon' in outputs:
            out = list(out)
            res.logits = out.pop(0)
            if 'features' in outputs:
                res.feat = out.pop(0)
            if 'recon' in outputs:
                res.rec = out.pop(0)
        else:
            res.logits = out
        return res

    def _run_D(self, img, c, sync, side, img_aug=None, outputs=()):
        """run_D with the new keywords passed only when used, so that subclasses overriding
        run_D(img, c, sync, side) keep working."""
        kwargs = {}
        if img_aug is not None:
            kwargs['img_aug'] = img_aug
        if outputs:
            kwargs['outputs'] = tuple(sorted(outputs))
        return self.run_D(img, c, sync, side, **kwargs)

    def G_adv_term(self, gen_logits):
        if self.adversarial == 'hinge':
            return terms_lib().hinge_G(gen_logits)
        return F.softplus(-gen_logits)      # -log(sigmoid(D(G(z)))): non-saturating.

    def D_adv_term_gen(self, gen_logits):
        if self.adversarial == 'hinge':
            return terms_lib().hinge_D_gen(gen_logits, self.hinge_margin)
        return F.softplus(gen_logits)       # -log(1 - sigmoid(D(G(z)))).

    def D_adv_term_real(self, real_logits):
        if self.adversarial == 'hinge':
            return terms_lib().hinge_D_real(real_logits, self.hinge_margin)
        return F.softplus(-real_logits)     # -log(sigmoid(D(x))).

    def extra_D_terms(self, side, res, c):
        """Extra Dmain terms for one side: those of the `terms` ({} in plain StyleGAN2).
        The per-call scratch the terms share is `self.step` (set by accumulate_gradients)."""
        out = {}
        step = self.step if self.step is not None else dnnlib.EasyDict()
        for term in self.terms:
            for name, value in term.D_terms(side, res, c, step).items():
                if name in out:
                    raise ValueError(f'two loss terms report {name!r}')
                out[name] = value
        return out

    def extra_G_terms(self, res, c):
        """Extra Gmain terms (e.g. KD's optional diversity term)."""
        out = {}
        for term in self.terms:
            out.update(term.G_terms(res, c))
        return out

    # Phases.

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        if phase not in PHASES:
            raise ValueError('unknown phase {!r}; expected one of {}'.format(phase, ', '.join(PHASES)))
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0

        if do_Gmain:
            self._G_main(gen_z, gen_c, sync=(sync and not do_Gpl), gain=gain)
        if do_Gpl:
            self._G_pl(gen_z, gen_c, sync=sync, gain=gain)
        loss_Dgen = None
        step = dnnlib.EasyDict(real_img_tmp=None, real_aug=None, real_c=real_c)
        if do_Dmain and self.terms:
            if any(term.needs_real_first for term in self.terms):
                # Augment the reals once, before the gen pass: the terms see the same images
                # that D sees in the real pass; the graph from real_img_tmp is kept for R1.
                step.real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
                step.real_aug = self.augment(step.real_img_tmp)
            for term in self.terms:
                term.begin_D(step)
        self.step = step
        try:
            if do_Dmain:
                loss_Dgen = self._D_gen(gen_z, gen_c, gain=gain, step=step)
            if do_Dmain or do_Dr1:
                self._D_real(real_img, real_c, sync=sync, gain=gain, do_main=do_Dmain, do_r1=do_Dr1,
                             loss_Dgen=loss_Dgen, step=step)
        finally:
            self.step = None   # Nothing of this call is held beyond it.

    def _G_main(self, gen_z, gen_c, sync, gain):
        with torch.autograd.profiler.record_function('Gmain_forward'):
            gen_img, _ws = self.run_G(gen_z, gen_c, sync=sync)
            gen = self._run_D(gen_img, gen_c, sync=False, side='gen', outputs=self.D_outputs('gen', phase='G'))
            training_stats.report('Loss/scores/fake', gen.logits)
            training_stats.report('Loss/signs/fake', gen.logits.sign())
            loss_G = self.G_adv_term(gen.logits)
            training_stats.report('Loss/G/loss', loss_G)
            total = loss_G.mean()
            for term_name, value in self.extra_G_terms(gen, gen_c).items():
                training_stats.report('Loss/G/' + term_name, value)
                total = total + value.mean()
        with torch.autograd.profiler.record_function('Gmain_backward'):
            total.mul(gain).backward()

    def _G_pl(self, gen_z, gen_c, sync, gain):
        with torch.autograd.profiler.record_function('Gpl_forward'):
            n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n], sync=sync)
            if isinstance(gen_img, tuple):
                gen_img = gen_img[0]
            # Random image-space direction, scaled so the length is resolution independent.
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            with torch.autograd.profiler.record_function('pl_grads'), conv2d_gradfix.no_weight_gradients():
                pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                               create_graph=True, only_inputs=True)[0]
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            training_stats.report('Loss/pl_penalty', pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
        with torch.autograd.profiler.record_function('Gpl_backward'):
            # The zero-weighted image term ties every synthesis output to the loss, so that
            # DDP sees all parameters take part in this backward.
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

    def _D_gen(self, gen_z, gen_c, gain, step=None):
        with torch.autograd.profiler.record_function('Dgen_forward'):
            gen_img, _ws = self.run_G(gen_z, gen_c, sync=False)
            gen = self._run_D(gen_img, gen_c, sync=False, side='gen', outputs=self.D_outputs('gen'))
            training_stats.report('Loss/scores/fake', gen.logits)
            training_stats.report('Loss/signs/fake', gen.logits.sign())
            loss_Dgen = self.D_adv_term_gen(gen.logits)
            loss = loss_Dgen.mean() + self._sum_extra_terms('gen', gen, gen_c, step)
        with torch.autograd.profiler.record_function('Dgen_backward'):
            loss.mul(gain).backward()
        return loss_Dgen.detach()   # Reported as part of Loss/D/loss with the real side.

    def _D_real(self, real_img, real_c, sync, gain, do_main, do_r1, loss_Dgen=None, step=None):
        name = 'Dreal_Dr1' if (do_main and do_r1) else 'Dreal' if do_main else 'Dr1'
        with torch.autograd.profiler.record_function(name + '_forward'):
            # R1 differentiates D with respect to the image *before* augmentation.
            if step is not None and step.get('real_img_tmp') is not None:
                real_img_tmp = step.real_img_tmp   # Augmented up front (see accumulate_gradients).
                real = self._run_D(real_img_tmp, real_c, sync=sync, side='real', img_aug=step.real_aug,
                                  outputs=self.D_outputs('real'))
            else:
                real_img_tmp = real_img.detach().requires_grad_(do_r1)
                # The real-side outputs are asked for in the R1-only pass too, so that every D
                # parameter (student head, decoders) takes part in each synced backward (DDP).
                real = self._run_D(real_img_tmp, real_c, sync=sync, side='real', outputs=self.D_outputs('real'))
            training_stats.report('Loss/scores/real', real.logits)
            training_stats.report('Loss/signs/real', real.logits.sign())

            loss = real.logits.sum() * 0   # Keeps every D output in the graph (DDP).
            for extra in _tensors(real.get('feat'), real.get('rec')):
                loss = loss + extra.sum() * 0
            if do_main:
                loss_Dreal = self.D_adv_term_real(real.logits)
                if loss_Dgen is not None and loss_Dgen.shape == loss_Dreal.shape:
                    training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                else:   # Batches of different sizes: report the two parts side by side.
                    training_stats.report('Loss/D/loss', torch.cat([t.flatten() for t in (loss_Dgen, loss_Dreal)
                                                                    if t is not None]))
                loss = loss + loss_Dreal.mean() + self._sum_extra_terms('real', real, real_c, step)

            if do_r1:
                with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
                    r1_grads = torch.autograd.grad(outputs=[real.logits.sum()], inputs=[real_img_tmp],
                                                   create_graph=True, only_inputs=True)[0]
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/r1_penalty', r1_penalty)
                training_stats.report('Loss/D/reg', loss_Dr1)
                loss = loss + loss_Dr1.mean()
        with torch.autograd.profiler.record_function(name + '_backward'):
            loss.mul(gain).backward()

    def _sum_extra_terms(self, side, res, c, step=None):
        total = 0
        for term_name, value in self.extra_D_terms(side, res, c).items():
            training_stats.report('Loss/D/' + term_name, value)
            total = total + value.mean()
        return total


DEFAULT_TEACHER_CLASS = 'kdgan_plugins.teachers.clip_teacher.CLIPTeacher'


def terms_lib():
    """kdgan_plugins.losses.terms (imported when first needed, so plain StyleGAN2 runs never need it)."""
    from kdgan_plugins.losses import terms
    return terms


def _tensors(*values):
    """The tensors in values (dicts are searched one level deep)."""
    out = []
    for value in values:
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, dict):
            out.extend(v for v in value.values() if isinstance(v, torch.Tensor) and v.requires_grad)
    return out
