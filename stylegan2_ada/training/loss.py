"""Training losses: the interface the loop calls, and the StyleGAN2 core.

The training loop knows no method. Each minibatch it calls
`loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, sync, gain)`
with a phase out of Gmain/Greg/Gboth/Dmain/Dreg/Dboth and then steps the
optimisers; a lazily regularised run alternates main and reg phases, an
unregularised one uses the both-phases.

Each phase is a list of named terms (`_PHASE_TERMS`): the adversarial term of
the network it trains (`G_adv`, `D_adv`) and its regulariser (`G_pl`, path
length; `D_r1`, R1 on reals). A regulariser whose weight is 0 is dropped.

Plug-in losses (kdgan_plugins.losses) extend `StyleGAN2Loss` through small
hooks instead of copying the phases:

- `run_G(z, c, sync)` -> (img, ws): mapping, style mixing, synthesis.
- `run_D(img, c, sync, side)` -> EasyDict(logits, img_aug, ...): augment, then
  D. A subclass that needs more from D stores it in the returned dict.
- `G_adv_term`, `D_adv_term_gen`, `D_adv_term_real`: the per-sample
  adversarial terms (non-saturating logistic, or the hinge of
  `adversarial='hinge'`).
- `extra_D_terms(side, res, c)` / `extra_G_terms(res, c)` -> {name: tensor}:
  terms added to one side's D loss (or to G's), reported as `Loss/D/<name>`
  (`Loss/G/<name>`). The D sides stay apart because under DDP every D forward
  needs its own backward (the fake side unsynced, the real one synced).
- `state_dict()` / `load_state_dict()`: what the loss carries across an exact
  resume (pl_mean and the terms' state).

Options beyond the classic ones, all off by default:

- `adversarial='hinge'` with `hinge_margin=(lo, hi)`: FastGAN's hinge, a margin
  drawn uniformly in [lo, hi] per logit; (1, 1) is the plain hinge.
- `G_aux=True`: the synthesis network also returns a small image
  (`G_synthesis(ws, return_aux=True)`, FastGAN); each image of the pair is
  augmented independently and D reads `D(img_aug, c, img_small=small_aug)`.
- `terms`: composable terms (kdgan_plugins.losses.terms), a dict
  {name: {class_name, **kwargs}} or a list of such. The core asks D for what
  they need (`features=True`, `recon=True`). A term that needs the augmented
  reals before the fake pass makes the core augment the reals once, up front;
  R1 still differentiates the un-augmented image through that graph.
- `teacher`: kwargs of the frozen teacher the terms share (`get_teacher()`),
  built on first use and never pickled; a string `labels` is resolved with
  `class_names` (passed by train.py) and whether D is conditional.
- `precision`: 'fp32' (default), 'bf16' (G's synthesis and D run under bf16
  autocast; their outputs are cast back to fp32, so every loss, the
  optimiser state and the EMA stay fp32), or 'auto' (bf16 where the device
  computes it natively: a CPU with AVX512-BF16/AMX, checked through oneDNN;
  fp32 elsewhere, CUDA included).
- `fake_reuse=True`: the D phase's fakes (G's output, augmented once) also
  serve the G phase that follows, so G runs forward once per minibatch (as
  FastGAN's official loop does). `D_first` tells the training loop to run D's
  phases before G's; the D pass reads the fakes detached, the G pass reads
  them through the updated D and back-propagates into G.
"""

import contextlib

import math

import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

# The terms each phase trains, in the order they run.
_PHASE_TERMS = dict(
    Gmain=('G_adv',),
    Greg=('G_pl',),
    Gboth=('G_adv', 'G_pl'),
    Dmain=('D_adv',),
    Dreg=('D_r1',),
    Dboth=('D_adv', 'D_r1'),
)
PHASES = tuple(_PHASE_TERMS)

# Extra D outputs: the keyword that asks D for one, and the result field that
# holds it, in the order D returns them after the logits.
_D_EXTRAS = (('features', 'feat'), ('recon', 'rec'))

DEFAULT_TEACHER_CLASS = 'kdgan_plugins.teachers.clip_teacher.CLIPTeacher'


def _label(name):
    """Profiler range of one loss pass."""
    return torch.autograd.profiler.record_function('kdgan_loss_' + name)


class Loss:
    """What the training loop calls; see the module docstring."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        raise NotImplementedError()

    def state_dict(self):
        """Tensors to carry across an exact resume (name -> tensor)."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise KeyError('{} holds no state, got {}'.format(type(self).__name__, sorted(state)))


class StyleGAN2Loss(Loss):
    """Non-saturating logistic GAN loss with R1 and path-length regularisation
    and style mixing; the hooks and options are in the module docstring."""

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2, adversarial='logistic', hinge_margin=(0.8, 1.0),
                 G_aux=False, terms=None, teacher=None, class_names=None, precision='fp32', fake_reuse=False):
        super().__init__()
        self.device = torch.device(device)
        self.G_mapping, self.G_synthesis, self.D = G_mapping, G_synthesis, D
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.pl_weight, self.pl_decay, self.pl_batch_shrink = float(pl_weight), float(pl_decay), int(pl_batch_shrink)
        self.style_mixing_prob = float(style_mixing_prob)
        # Running mean of the path lengths: the length G is pulled towards.
        self.pl_mean = torch.zeros([], device=self.device)
        self.adversarial, self.hinge_margin = _checked_adversarial(adversarial, hinge_margin)
        self.G_aux = bool(G_aux)
        self.precision = resolve_precision(precision, self.device)
        self.fake_reuse = bool(fake_reuse)
        self.D_first = self.fake_reuse     # read by the training loop: D's phases first
        self._reused = []                  # (img, img_aug) per accumulation round, D phase -> G phase
        if self.G_aux and getattr(getattr(G_synthesis, 'module', G_synthesis), 'aux_resolution', None) is None:
            raise TypeError('G_aux=True needs a synthesis network with an auxiliary output '
                            '(G_synthesis(ws, return_aux=True), e.g. FastGAN\'s); this one has no aux_resolution')
        self.teacher_kwargs = dict(teacher) if teacher else None
        self.class_names = None if class_names is None else list(class_names)
        self._teacher = None
        self.step = None     # the terms' scratch, alive during one D call only
        self.terms = []
        if terms:
            from kdgan_plugins.losses.terms import build_terms
            self.terms = build_terms(self, terms)

    # Resources the terms share.

    @property
    def D_module(self):
        """D without its DistributedDataParallel wrapper, for its attributes."""
        return getattr(self.D, 'module', self.D)

    def get_teacher(self):
        """The frozen teacher of the terms, built once from the `teacher` option."""
        if self._teacher is None:
            self._teacher = self._make_teacher()
        return self._teacher

    def _make_teacher(self):
        kwargs = dict(self.teacher_kwargs or {})
        class_name = kwargs.pop('class_name', DEFAULT_TEACHER_CLASS)
        spec = kwargs.pop('spec', None)
        if spec is not None:
            # --teacher: 'ViT-B-32:openai' names weights; 'ViT-B-32' alone or 'random:...' has none.
            kwargs['model'] = spec
            if ':' not in str(spec):
                kwargs['pretrained'] = None
        labels = kwargs.get('labels')
        if labels is None or isinstance(labels, str):
            from kdgan_plugins.teachers import clip_teacher
            kwargs['labels'] = clip_teacher.resolve_labels(
                'auto' if labels is None else labels, dataset_class_names=self.class_names,
                conditional=getattr(self.D_module, 'c_dim', 0) > 0)
        kwargs.setdefault('device', self.device)
        return dnnlib.util.construct_class_by_name(class_name=class_name, **kwargs)

    # Exact resume.

    def state_dict(self):
        state = {'pl_mean': self.pl_mean.detach().clone()}
        for term in self.terms:
            state.update({f'terms.{term.name}.{key}': value for key, value in term.state_dict().items()})
        return state

    def load_state_dict(self, state):
        rest = dict(state)
        if rest.get('pl_mean') is not None:
            self.pl_mean.copy_(torch.as_tensor(rest['pl_mean']).to(self.pl_mean))
        rest.pop('pl_mean', None)
        for term in self.terms:
            prefix = f'terms.{term.name}.'
            term.load_state_dict({key[len(prefix):]: rest.pop(key) for key in list(rest) if key.startswith(prefix)})
        if rest:
            raise KeyError('{}: unexpected state entries {}'.format(type(self).__name__, sorted(rest)))

    # Hooks.

    def run_G(self, z, c, sync):
        """Latents to images; returns (img, ws), img an (img, img_small) pair with G_aux."""
        with misc.ddp_sync(self.G_mapping, sync):
            ws = self.G_mapping(z, c)
            if self.style_mixing_prob > 0:
                ws = self._mix_styles(ws, z, c)
        with misc.ddp_sync(self.G_synthesis, sync), self._autocast():
            img = tuple(self.G_synthesis(ws, return_aux=True)) if self.G_aux else self.G_synthesis(ws)
        return _to_fp32(img), ws

    def _autocast(self):
        """bf16 autocast around the networks' forward passes when precision says so."""
        if self.precision != 'bf16':
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _mix_styles(self, ws, z, c):
        """With probability style_mixing_prob, a second latent's styles take over from a
        random layer on. Everything is drawn on the device: no host sync."""
        with _label('style_mixing'):
            layers = ws.shape[1]
            first = torch.randint(1, max(layers, 2), [], device=ws.device)
            mixing = torch.rand([], device=ws.device) < self.style_mixing_prob
            first = torch.where(mixing, first, torch.full_like(first, layers))
            other = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            layer = torch.arange(layers, device=ws.device).reshape(1, layers, 1)
            return torch.where(layer >= first, other, ws)

    def augment(self, img):
        """The augment pipe on a batch, or on each image of an (img, img_small) pair."""
        if self.augment_pipe is None:
            return img
        if isinstance(img, (tuple, list)):
            return tuple(self.augment_pipe(part) for part in img)
        return self.augment_pipe(img)

    def D_outputs(self, side, phase='D'):
        """The extra D outputs ('features', 'recon') the terms want for `side` in the
        D phase, or in the G phase when phase='G'."""
        wanted = set()
        for term in self.terms:
            wanted.update(term.D_outputs(side) if phase == 'D' else term.G_outputs())
        return wanted

    def run_D(self, img, c, sync, side, img_aug=None, outputs=()):
        """Augment `img` (unless `img_aug` is given), then D. `side` is 'gen' or 'real';
        `outputs` names extra D outputs. Returns an EasyDict with `logits`, `img_aug`
        (full size), `img_small_aug` (pairs) and `feat` / `rec` when asked for."""
        unknown = set(outputs) - {flag for flag, _ in _D_EXTRAS}
        if unknown:
            raise ValueError(f'unknown D outputs {sorted(unknown)}')
        if img_aug is None:
            img_aug = self.augment(img)
        small = None
        if isinstance(img_aug, (tuple, list)):
            img_aug, small = img_aug
        extras = [(flag, field) for flag, field in _D_EXTRAS if flag in outputs]
        kwargs = {flag: True for flag, _ in extras}
        if small is not None:
            kwargs['img_small'] = small
        with misc.ddp_sync(self.D, sync), self._autocast():
            raw = self.D(img_aug, c, **kwargs)
        raw = _to_fp32(raw)
        res = dnnlib.EasyDict(img_aug=img_aug, img_small_aug=small)
        if not extras:
            res.logits = raw
            return res
        raw = list(raw)
        res.logits = raw[0]
        for (_flag, field), value in zip(extras, raw[1:]):
            res[field] = value
        return res

    def _call_run_D(self, img, c, sync, side, img_aug=None, outputs=()):
        """run_D, passing the newer keywords only when set, so that subclasses that
        override run_D(img, c, sync, side) keep working."""
        kwargs = {}
        if img_aug is not None:
            kwargs['img_aug'] = img_aug
        if outputs:
            kwargs['outputs'] = tuple(sorted(outputs))
        return self.run_D(img, c, sync, side, **kwargs)

    def G_adv_term(self, gen_logits):
        if self.adversarial == 'hinge':
            return _terms_module().hinge_G(gen_logits)
        return F.softplus(-gen_logits)      # -log sigmoid(D(G(z)))

    def D_adv_term_gen(self, gen_logits):
        if self.adversarial == 'hinge':
            return _terms_module().hinge_D_gen(gen_logits, self.hinge_margin)
        return F.softplus(gen_logits)       # -log(1 - sigmoid(D(G(z))))

    def D_adv_term_real(self, real_logits):
        if self.adversarial == 'hinge':
            return _terms_module().hinge_D_real(real_logits, self.hinge_margin)
        return F.softplus(-real_logits)     # -log sigmoid(D(x))

    def extra_D_terms(self, side, res, c):
        """The terms' additions to one side of Dmain; they share `self.step`."""
        found = {}
        step = dnnlib.EasyDict() if self.step is None else self.step
        for term in self.terms:
            for name, value in term.D_terms(side, res, c, step).items():
                if name in found:
                    raise ValueError(f'two loss terms report {name!r}')
                found[name] = value
        return found

    def extra_G_terms(self, res, c):
        """The terms' additions to Gmain (e.g. KD's diversity term)."""
        found = {}
        for term in self.terms:
            found.update(term.G_terms(res, c))
        return found

    # Phases.

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        if phase not in _PHASE_TERMS:
            raise ValueError('unknown phase {!r}; expected one of {}'.format(phase, ', '.join(PHASES)))
        weights = {'G_pl': self.pl_weight, 'D_r1': self.r1_gamma}
        terms = {term for term in _PHASE_TERMS[phase] if weights.get(term, 1) != 0}
        if phase.startswith('G'):
            self._train_G(terms, gen_z, gen_c, sync, gain)
        else:
            self._train_D(terms, real_img, real_c, gen_z, gen_c, sync, gain)

    def _train_G(self, terms, gen_z, gen_c, sync, gain):
        if 'G_adv' in terms:
            # Under DDP only the call's last backward syncs gradients.
            self._G_adversarial(gen_z, gen_c, sync and 'G_pl' not in terms, gain)
        if 'G_pl' in terms:
            self._G_path_length(gen_z, gen_c, sync, gain)

    def _train_D(self, terms, real_img, real_c, gen_z, gen_c, sync, gain):
        adversarial, r1 = 'D_adv' in terms, 'D_r1' in terms
        step = self._open_step(real_img, real_c, adversarial, r1)
        self.step = step
        try:
            fake_loss = self._D_fake(gen_z, gen_c, sync, gain) if adversarial else None
            if adversarial or r1:
                self._D_real(real_img, real_c, sync, gain, adversarial, r1, fake_loss, step)
        finally:
            self.step = None

    def _open_step(self, real_img, real_c, adversarial, r1):
        """The scratch the terms share during one D call (see kdgan_plugins.losses.terms).
        A term that reads the augmented reals before the fake pass gets them here; the
        real pass then reuses those very images, and R1 differentiates through them."""
        step = dnnlib.EasyDict(real_leaf=None, real_aug=None, real_c=real_c)
        if adversarial and self.terms:
            if any(term.needs_real_first for term in self.terms):
                step.real_leaf = real_img.detach().requires_grad_(r1)
                step.real_aug = self.augment(step.real_leaf)
            for term in self.terms:
                term.begin_D(step)
        return step

    def _report_scores(self, kind, logits):
        training_stats.report('Loss/scores/' + kind, logits)
        training_stats.report('Loss/signs/' + kind, logits.sign())

    def _G_adversarial(self, gen_z, gen_c, sync, gain):
        with _label('G_adv'):
            outputs = self.D_outputs('gen', phase='G')
            if self._reused:
                img, img_aug, gen_c = self._reused.pop(0)
                res = self._call_run_D(img, gen_c, sync=False, side='gen', img_aug=img_aug, outputs=outputs)
            else:
                img, _ws = self.run_G(gen_z, gen_c, sync=sync)
                res = self._call_run_D(img, gen_c, sync=False, side='gen', outputs=outputs)
            self._report_scores('fake', res.logits)
            per_sample = self.G_adv_term(res.logits)
            training_stats.report('Loss/G/loss', per_sample)
            total = per_sample.mean()
            for name, value in self.extra_G_terms(res, gen_c).items():
                training_stats.report('Loss/G/' + name, value)
                total = total + value.mean()
            total.mul(gain).backward()

    def _G_path_length(self, gen_z, gen_c, sync, gain):
        with _label('G_pl'):
            rows = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            img, ws = self.run_G(gen_z[:rows], gen_c[:rows], sync=sync)
            if isinstance(img, tuple):
                img = img[0]
            penalty = self._path_length_penalty(img, ws)
            training_stats.report('Loss/pl_penalty', penalty)
            weighted = penalty * self.pl_weight
            training_stats.report('Loss/G/reg', weighted)
            # A zero-weighted pixel ties every synthesis output into this backward (DDP).
            (img[:, 0, 0, 0] * 0 + weighted).mean().mul(gain).backward()

    def _path_length_penalty(self, img, ws):
        """Per sample (|J^T y| - a)^2, J the Jacobian of the image w.r.t. ws, y Gaussian
        noise scaled by 1/sqrt(pixels) so lengths do not grow with resolution, and a
        the running mean of the lengths, which this call moves."""
        probe = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        with conv2d_gradfix.no_weight_gradients():
            (ws_grad,) = torch.autograd.grad((img * probe).sum(), ws, create_graph=True)
        lengths = ws_grad.square().sum(2).mean(1).sqrt()
        target = self.pl_mean.lerp(lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(target.detach())
        return (lengths - target).square()

    def _D_fake(self, gen_z, gen_c, sync, gain):
        with _label('D_fake'):
            if self.fake_reuse:
                img, img_aug = self._fakes_for_reuse(gen_z, gen_c, sync)
                res = self._call_run_D(_detached(img), gen_c, sync=False, side='gen', img_aug=_detached(img_aug),
                                       outputs=self.D_outputs('gen'))
            else:
                img, _ws = self.run_G(gen_z, gen_c, sync=False)
                res = self._call_run_D(img, gen_c, sync=False, side='gen', outputs=self.D_outputs('gen'))
            self._report_scores('fake', res.logits)
            per_sample = self.D_adv_term_gen(res.logits)
            total = per_sample.mean() + self._extra_D_total('gen', res, gen_c)
            total.mul(gain).backward()
        return per_sample.detach()    # reported with the real side as Loss/D/loss

    def _fakes_for_reuse(self, gen_z, gen_c, sync):
        """G's fakes with their graph to G's parameters (which the loop has frozen during D's
        phase, so they are switched on for this one forward), augmented once; kept for the G
        phase. Under DDP G's forward takes the sync flag of the D round it serves."""
        params = [p for net in (self.G_mapping, self.G_synthesis) for p in net.parameters()]
        flags = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(True)
            img, _ws = self.run_G(gen_z, gen_c, sync=sync)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        img_aug = self.augment(img)
        self._reused.append((img, img_aug, gen_c))
        return img, img_aug

    def _D_real(self, real_img, real_c, sync, gain, adversarial, r1, fake_loss, step):
        with _label('D_real'):
            if step.real_leaf is not None:
                leaf = step.real_leaf
                res = self._call_run_D(leaf, real_c, sync=sync, side='real', img_aug=step.real_aug,
                                       outputs=self.D_outputs('real'))
            else:
                # R1 differentiates with respect to this leaf, the image before augmentation.
                # The terms' D outputs are asked for in R1-only passes too, so that every D
                # parameter takes part in each synced backward (DDP).
                leaf = real_img.detach().requires_grad_(r1)
                res = self._call_run_D(leaf, real_c, sync=sync, side='real', outputs=self.D_outputs('real'))
            self._report_scores('real', res.logits)
            total = _zero_tie(res)
            if adversarial:
                per_sample = self.D_adv_term_real(res.logits)
                _report_D_loss(fake_loss, per_sample)
                total = total + per_sample.mean() + self._extra_D_total('real', res, real_c)
            if r1:
                penalty = _r1_penalty(res.logits, leaf)
                weighted = penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/r1_penalty', penalty)
                training_stats.report('Loss/D/reg', weighted)
                total = total + weighted.mean()
            total.mul(gain).backward()

    def _extra_D_total(self, side, res, c):
        total = 0
        for name, value in self.extra_D_terms(side, res, c).items():
            training_stats.report('Loss/D/' + name, value)
            total = total + value.mean()
        return total


def resolve_precision(precision, device):
    """'fp32' or 'bf16' for `precision` in ('auto', 'fp32', 'bf16') on `device`."""
    if precision not in ('auto', 'fp32', 'bf16'):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != 'auto':
        return precision
    return 'bf16' if torch.device(device).type == 'cpu' and cpu_has_native_bf16() else 'fp32'


def cpu_has_native_bf16():
    """True when oneDNN computes bf16 natively on this CPU (AVX512-BF16 or AMX). Without it
    bf16 convolutions are emulated and far slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _to_fp32(value):
    """Floating tensors (also inside tuples, lists and dicts) cast to fp32; fp32 ones unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_fp32(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _to_fp32(v)) for k, v in value.items())
    return value


def _detached(value):
    """A tensor, or each tensor of an (img, img_small) pair, detached."""
    if isinstance(value, (tuple, list)):
        return tuple(v.detach() for v in value)
    return value.detach()


def _r1_penalty(logits, leaf):
    """|dD/dx|^2 per sample at the un-augmented reals `leaf`. The first derivative is
    taken with the custom convolutions' weight gradients off: only dx is needed, and
    the second backward still reaches the weights."""
    with conv2d_gradfix.no_weight_gradients():
        (img_grad,) = torch.autograd.grad(logits.sum(), leaf, create_graph=True)
    return img_grad.square().sum([1, 2, 3])


def _report_D_loss(fake_loss, real_loss):
    """Loss/D/loss per sample: fake plus real side, or both side by side when the
    batches differ in size (or the fake side did not run)."""
    if fake_loss is not None and fake_loss.shape == real_loss.shape:
        training_stats.report('Loss/D/loss', fake_loss + real_loss)
    else:
        parts = [t.flatten() for t in (fake_loss, real_loss) if t is not None]
        training_stats.report('Loss/D/loss', torch.cat(parts))


def _zero_tie(res):
    """0, but depending on every D output of `res`, so that each one is in the graph
    of the backward (DDP wants every parameter to take part)."""
    tie = res.logits.sum() * 0
    for value in (res.get('feat'), res.get('rec')):
        candidates = [value] if isinstance(value, torch.Tensor) else []
        if isinstance(value, dict):
            candidates = [v for v in value.values() if isinstance(v, torch.Tensor) and v.requires_grad]
        for extra in candidates:
            tie = tie + extra.sum() * 0
    return tie


def _checked_adversarial(adversarial, hinge_margin):
    if adversarial not in ('logistic', 'hinge'):
        raise ValueError(f"adversarial must be 'logistic' or 'hinge', got {adversarial!r}")
    margin = tuple(float(m) for m in hinge_margin)
    if len(margin) != 2 or margin[0] > margin[1]:
        raise ValueError(f'hinge_margin must be (low, high) with low <= high, got {hinge_margin}')
    return adversarial, margin


def _terms_module():
    """kdgan_plugins.losses.terms, imported on first use: plain StyleGAN2 runs never need it."""
    from kdgan_plugins.losses import terms
    return terms
