"""Loss terms that plug into the phase core of `training.loss.StyleGAN2Loss`.

A term is named in the loss's `terms` option as `{class_name: ..., **kwargs}`
and built once, with the loss as its first argument (so it can reach the
device, D, the augment pipe, G's parts and the shared teacher). The core calls
it at fixed points of the phases; every hook has a do-nothing default:

    D_outputs(side)          what the D phase needs from D for one side
                             ('gen' or 'real'): a subset of {'features', 'recon'}
    needs_real_first         True when the term needs the augmented real batch
                             *before* the gen pass (cross terms): the core then
                             augments the reals once, up front, and the real
                             pass reuses exactly those images
    begin_D(step)            once per Dmain call, before the gen pass;
                             `step` is a per-call EasyDict (real_aug, real_c, ...)
                             that the term may write its own entries into
    D_terms(side, res, c, step) -> {stat name: tensor}
                             values added to that side's D loss; `res` is the
                             core's `run_D` result (logits, img_aug, feat, rec)
    G_outputs()              like D_outputs, for the Gmain pass (default none)
    G_terms(res, c) -> {stat name: tensor}
                             values added to G's main loss
    state_dict() / load_state_dict(state)
                             tensors to carry across an exact resume
    check_assets(kwargs, **opts)   (classmethod) resolve the files the term
                             needs BEFORE training; raise when unavailable

Each returned value is either per sample ([N] or [N, ...], averaged by the
core) or an already reduced scalar (e.g. a batch sum). The core reports it as
`Loss/D/<name>` (`Loss/G/<name>`) and adds its mean to the side's loss, so a
term is back-propagated with the adversarial term of its side.

This module also holds the one implementation of the hinge adversarial terms
(with FastGAN's random margin), of the distances the KD terms use, and of the
AE reconstruction term of FastGAN's discriminator.
"""

import torch
import torch.nn.functional as F

import dnnlib

__all__ = ['LossTerm', 'Reconstruction', 'hinge_D_real', 'hinge_D_gen', 'hinge_G', 'distance', 'DISTANCES',
           'build_terms', 'term_specs']

# Term specs: a dict {name: spec or None} (what presets use: dicts deep-merge,
# so a loss preset can add a term to the terms a cfg already has, and None
# switches a term off) or a list of specs (names from the spec or the class).


def term_specs(terms):
    """Normalise the `terms` option into a list of (name, spec dict) with class_name set."""
    if terms is None:
        return []
    if isinstance(terms, dict):
        items = [(str(name), spec) for name, spec in terms.items()]
    elif isinstance(terms, (list, tuple)):
        items = []
        for i, spec in enumerate(terms):
            if spec is None:
                continue
            if not isinstance(spec, dict):
                raise TypeError(f'terms[{i}] must be a dict with class_name, got {type(spec).__name__}')
            items.append((spec.get('name'), spec))
    else:
        raise TypeError(f'terms must be a dict {{name: spec}} or a list of specs, got {type(terms).__name__}')
    out = []
    for name, spec in items:
        if spec is None or spec is False:
            continue
        if not isinstance(spec, dict) or not spec.get('class_name'):
            raise ValueError(f'loss term {name!r} needs a dict with a class_name, got {spec!r}')
        spec = dict(spec)
        if name is None:
            name = spec['class_name'].rsplit('.', 1)[-1].lower()
        spec['name'] = name
        out.append((name, spec))
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f'loss term names must be unique, got {names}')
    return out


def build_terms(loss, terms):
    """Construct each term once with `loss` as its first argument; returns a list."""
    built = []
    for _name, spec in term_specs(terms):
        spec = dict(spec)
        class_name = spec.pop('class_name')
        built.append(dnnlib.util.construct_class_by_name(loss, class_name=class_name, **spec))
    return built


class LossTerm:
    """Base class of the loss terms; see the module docstring for the hooks."""

    needs_teacher = False
    needs_real_first = False

    def __init__(self, loss, name):
        self.loss = loss
        self.name = str(name)

    def D_outputs(self, side):
        return ()

    def G_outputs(self):
        return ()

    def begin_D(self, step):
        pass

    def D_terms(self, side, res, c, step):
        return {}

    def G_terms(self, res, c):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        if state:
            raise KeyError(f'loss term {self.name!r} holds no state, got {sorted(state)}')

    @classmethod
    def check_assets(cls, kwargs, **opts):
        """Resolve what the term needs before training; returns a list of lines for the log."""
        return []

    def __repr__(self):
        return f'{type(self).__name__}({self.name!r})'


# Hinge adversarial terms. FastGAN's margin is random: for every element of the
# logit map m = low + (high - low) * U(0, 1), drawn afresh per call from torch's
# RNG on the logits' device (the official code draws rand_like(pred), i.e. per
# element, and uses low = 0.8, high = 1.0). low = high = 1 is the plain hinge.


def _margin(logits, margin):
    low, high = float(margin[0]), float(margin[1])
    if low == high:
        return low
    return torch.rand_like(logits) * (high - low) + low


def hinge_D_real(logits, margin=(0.8, 1.0)):
    """relu(m - D(x)), elementwise."""
    return F.relu(_margin(logits, margin) - logits)


def hinge_D_gen(logits, margin=(0.8, 1.0)):
    """relu(m + D(G(z))), elementwise."""
    return F.relu(_margin(logits, margin) + logits)


def hinge_G(logits):
    """-D(G(z)), elementwise (averaged by the core)."""
    return -logits


# Distances between batches of vectors a, b of shape [N, D].
#   'l2'  per-sample Euclidean norm ||a_i - b_i||_2      -> [N] (averaged over the batch)
#   'l1'  per-sample sum |a_i - b_i|                     -> [N] (averaged over the batch)
#   'mse' per-sample mean (a_i - b_i)^2                  -> [N] (averaged over the batch:
#         the mean squared error over all elements)
#   'sse' summed squared difference over the batch and all dimensions -> scalar
# The core averages per-sample values, so 'l2', 'l1' and 'mse' are batch means,
# while 'sse' is a batch sum.

DISTANCES = ('l2', 'l1', 'mse', 'sse')


def distance(a, b, dist):
    if a.shape != b.shape:
        raise ValueError(f'distance between tensors of different shapes {tuple(a.shape)} and {tuple(b.shape)}')
    diff = (a - b).flatten(1)
    if dist == 'l2':
        return diff.square().sum(dim=1).sqrt()
    if dist == 'l1':
        return diff.abs().sum(dim=1)
    if dist == 'mse':
        return diff.square().mean(dim=1)
    if dist == 'sse':
        return diff.square().sum()
    raise ValueError(f'unknown distance {dist!r}; choose from {", ".join(DISTANCES)}')


# AE reconstruction (FastGAN's self-supervised discriminator).

RECON_KINDS = ('lpips', 'mse', 'l1')
RECON_PARTS = ('big', 'small', 'part')


def _vgg16_url():
    from metrics import detectors
    return detectors.VGG16_URL


class Reconstruction(LossTerm):
    """FastGAN's reconstruction loss on real images, added to D's real side.

    D is asked for `recon=True` on the real side and returns its decoders'
    outputs and targets (see kdgan_plugins.networks.fastgan): the whole image
    from the 8x8 map ('big'), the whole image from the small path ('small')
    and one quadrant from the 16x16 map ('part'), each against the augmented
    real image (or its quadrant) nearest-resized to the decoder size.

    kind       'lpips': LPIPS-VGG16 (the official choice) through NVIDIA's
               vgg16.pt detector, resolved like the metric detectors
               (`detector_dir`, $KDGAN_DETECTOR_DIR, dnnlib's cache, download);
               'mse': per-image mean squared error; 'l1': per-image mean
               absolute error (what popular re-implementations use).
    weight     multiplies each of the three terms (default 1, as official).
    reduction  over the batch: 'sum' (the official code sums LPIPS over the
               batch while averaging the hinge terms, so at batch 8 the
               reconstruction weighs 8x what a mean would) or 'mean'. None
               (default) = 'sum' for lpips (official) and 'mean' for mse/l1
               (as the re-implementations that use them). The sum is over the
               per-process batch of one accumulation round.
    parts      which decoders to train (default all three).
    detector   optional: a detector path or a loaded callable with NVIDIA's
               calling convention (tests pass small stand-ins); default: the
               vgg16.pt asset.
    detector_dir  where to look for vgg16.pt first (train.py's --detector-dir).

    Stats: Loss/D/<name>_big, <name>_small, <name>_part (weighted, reduced).
    """

    def __init__(self, loss, kind='lpips', weight=1.0, reduction=None, parts=RECON_PARTS, detector=None,
                 detector_dir=None, name='recon'):
        super().__init__(loss, name)
        if kind not in RECON_KINDS:
            raise ValueError(f'recon kind must be one of {", ".join(RECON_KINDS)}, got {kind!r}')
        if reduction is None:
            reduction = 'sum' if kind == 'lpips' else 'mean'
        if reduction not in ('sum', 'mean'):
            raise ValueError(f"recon reduction must be 'sum' or 'mean', got {reduction!r}")
        parts = tuple(parts)
        if not parts or any(p not in RECON_PARTS for p in parts):
            raise ValueError(f'recon parts must be a non-empty subset of {RECON_PARTS}, got {parts}')
        if getattr(loss.D_module, 'recon_resolution', None) is None:
            raise TypeError(f'loss term {name!r} needs a discriminator with decoders (D(img, c, recon=True), '
                            f'e.g. kdgan_plugins.networks.fastgan.Discriminator); got '
                            f'{type(loss.D_module).__name__}')
        self.kind = kind
        self.weight = float(weight)
        self.reduction = reduction
        self.parts = parts
        self.detector = None
        if kind == 'lpips':
            self.detector = self._load_detector(detector, detector_dir)

    def _load_detector(self, detector, detector_dir):
        if detector is not None and not isinstance(detector, (str, bytes)):
            det = detector
        else:
            from metrics import detectors
            det = detectors.load_detector(detector or _vgg16_url(), self.loss.device, detector_dir=detector_dir)
        if isinstance(det, torch.nn.Module):
            for param in det.parameters():   # Frozen: gradients flow through it to D's decoders only.
                param.requires_grad_(False)      # (per parameter: ScriptModules refuse requires_grad_)
        return det

    @classmethod
    def check_assets(cls, kwargs, detector_dir=None, quick=True, **_opts):
        if kwargs.get('kind', 'lpips') != 'lpips':
            return []
        detector = kwargs.get('detector')
        if detector is not None and not isinstance(detector, (str, bytes)):
            return []
        from metrics import detectors
        path = detectors.resolve_asset(detector or _vgg16_url(), detector_dir=kwargs.get('detector_dir') or detector_dir,
                                       quick=quick, verbose=False)
        return [f'{kwargs.get("name", "recon")}: LPIPS detector {path}']

    def D_outputs(self, side):
        return ('recon',) if side == 'real' else ()

    def per_sample(self, rec, target):
        """Per-image distance [N] between a reconstruction and its target (both in [-1, 1])."""
        if self.kind == 'mse':
            return (rec - target).square().flatten(1).mean(dim=1)
        if self.kind == 'l1':
            return (rec - target).abs().flatten(1).mean(dim=1)
        if rec.shape[1] == 1:   # VGG wants RGB.
            rec, target = rec.repeat(1, 3, 1, 1), target.repeat(1, 3, 1, 1)
        # NVIDIA's detector takes uint8-range images; LPIPS = squared difference of its vectors, summed.
        fa = self.detector((rec.float() + 1) * 127.5, resize_images=False, return_lpips=True)
        fb = self.detector((target.float() + 1) * 127.5, resize_images=False, return_lpips=True)
        return (fa - fb).square().sum(dim=1)

    def D_terms(self, side, res, c, step):
        if side != 'real':
            return {}
        rec = res.get('rec')
        if rec is None:
            raise RuntimeError(f'loss term {self.name!r} needs a discriminator that returns reconstructions '
                               f'(D(img, c, recon=True), e.g. kdgan_plugins.networks.fastgan.Discriminator)')
        out = {}
        for part in self.parts:
            value = self.per_sample(rec[part], rec['target_' + part].detach()) * self.weight
            out[f'{self.name}_{part}'] = value.sum() if self.reduction == 'sum' else value
        return out
