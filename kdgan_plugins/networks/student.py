"""KD-DLGAN's student: a projection head on D's penultimate feature, wrapped around any D.

`StudentHead(in_features, out_features=512, hidden=1024)`: two spectrally
normalised linear layers, in -> hidden -> out, with no activation between
them (the official head). Each layer has a bias; the spectral norm is the
usual one-step power iteration (as `torch.nn.utils.spectral_norm`: one
iteration per training-mode forward, the stored vectors as they are in eval
mode). The head runs in float32 whatever the feature's dtype.

`KDDiscriminator(c_dim, img_resolution, img_channels,
backbone_class_name='training.networks.Discriminator', student_dim=512,
student_hidden=1024, feature_source='auto', **backbone_kwargs)` builds the
backbone D by class name (`dnnlib.util.construct_class_by_name`, with the
harness D signature and the remaining keyword arguments) and adds the head.
Parameters and buffers are named `backbone.*` and `student.*`; both train
with D's optimiser and are saved in D's pickle (every class involved is
persistent). Attributes the wrapper does not have itself (`b4`,
`block_resolutions`, `num_logits`, `recon_resolution`, ...) are read from the
backbone; `c_dim`, `img_resolution`, `img_channels` are copied.

Return convention of `D(img, c, features=False, **kw)`
------------------------------------------------------
* `features=False`: exactly what `backbone(img, c, **kw)` returns (logits;
  for FastGAN with `recon=True`, `(logits, rec)`), so upstream losses work
  unchanged.
* `features=True`: a tuple `(logits, s, *extras)`: the logits as above, the
  student embedding `s` float32 [N, student_dim] ALWAYS at index 1, then
  whatever else the backbone returns, in its order. So `D(img, c,
  features=True)` -> `(logits, s)` and, for FastGAN, `D(img, c,
  features=True, recon=True)` -> `(logits, s, rec)`. The logits are the same
  tensor values as without `features`.

Where the penultimate feature comes from (`feature_source`)
-----------------------------------------------------------
* 'features': the backbone's forward takes a `features` argument and, given
  `features=True`, returns `(logits, feat, *extras)` with feat [N, F]; the
  backbone should expose `feature_dim` (F). FastGAN's D does this (feat = its
  last 8x8 map, mean-pooled) and any D following the same protocol works.
* a dotted sub-module path (e.g. 'b4.fc'): the output of that sub-module,
  flattened to [N, F], captured by a forward hook registered for the duration
  of one call and removed right after (so nothing of the hook is ever
  pickled or deep-copied, and the backbone's own forward runs untouched: the
  logits are bit-identical). F is read from the sub-module's `out_features`,
  else found by one dry run at construction.
* 'auto' (default): 'features' when the backbone's forward has a `features`
  parameter, else 'b4.fc' when it exists -- StyleGAN2's epilogue: the fc
  layer's (activated) output, the feature right before the `out` layer and
  the label projection -- else an error asking for `feature_source`.
"""
import inspect

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import persistence



def _unit(vec, eps=1e-12):
    return vec / vec.norm().clamp_min(eps)


@persistence.persistent_class
class SNLinear(torch.nn.Module):
    """Linear layer (with bias) whose weight is divided by its spectral norm (one power
    iteration per training-mode forward; eval mode uses the stored vectors)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        bound = 1 / np.sqrt(self.in_features)
        self.weight_orig = torch.nn.Parameter(torch.empty([self.out_features, self.in_features]).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.empty([self.out_features]).uniform_(-bound, bound)) if bias else None
        self.register_buffer('weight_u', _unit(torch.randn(self.out_features)))
        self.register_buffer('weight_v', _unit(torch.randn(self.in_features)))

    def normalized_weight(self):
        w = self.weight_orig
        if self.training:
            with torch.no_grad():
                v = _unit(w.t() @ self.weight_u)
                u = _unit(w @ v)
                self.weight_u.copy_(u)
                self.weight_v.copy_(v)
        else:
            # Copies: a later training-mode call may rewrite the buffers before this graph's backward.
            u = self.weight_u.clone()
            v = self.weight_v.clone()
        with torch.autocast(device_type=w.device.type, enabled=False):  # see fastgan.py: no mixed-dtype dot
            sigma = torch.dot(u, w @ v)
        return w / sigma

    def forward(self, x):
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}'



@persistence.persistent_class
class StudentHead(torch.nn.Module):
    """Penultimate D feature [N, in_features] -> student embedding float32 [N, out_features]:
    SNLinear(in, hidden) then SNLinear(hidden, out), no activation between (the official head)."""

    def __init__(self, in_features, out_features=512, hidden=1024):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.hidden = int(hidden)
        self.fc1 = SNLinear(self.in_features, self.hidden)
        self.fc2 = SNLinear(self.hidden, self.out_features)

    def forward(self, feat):
        if feat.ndim != 2 or feat.shape[1] != self.in_features:
            raise ValueError(f'StudentHead expects features [N, {self.in_features}], got {list(feat.shape)}')
        return self.fc2(self.fc1(feat.float()))



def _accepts_features(module) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return 'features' in params


def _get_submodule(root, path):
    module = root
    for part in path.split('.'):
        module = getattr(module, part, None)
        if not isinstance(module, torch.nn.Module):
            return None
    return module


@persistence.persistent_class
class KDDiscriminator(torch.nn.Module):
    """Any discriminator (built by class name) plus the distillation student head.
    See the module docstring for the return convention and `feature_source`."""

    def __init__(self, c_dim, img_resolution, img_channels, backbone_class_name='training.networks.Discriminator',
                 student_dim=512, student_hidden=1024, feature_source='auto', **backbone_kwargs):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.backbone_class_name = backbone_class_name
        self.student_dim = int(student_dim)
        self.backbone = dnnlib.util.construct_class_by_name(class_name=backbone_class_name, c_dim=c_dim,
                                                            img_resolution=img_resolution, img_channels=img_channels,
                                                            **backbone_kwargs)
        if feature_source == 'auto':
            if _accepts_features(self.backbone):
                feature_source = 'features'
            elif _get_submodule(self.backbone, 'b4.fc') is not None:
                feature_source = 'b4.fc'
            else:
                raise ValueError(f'KDDiscriminator: cannot tell where {backbone_class_name} keeps its penultimate '
                                 f'feature; pass feature_source="features" (forward(..., features=True) -> '
                                 f'(logits, feat, ...)) or the dotted name of a sub-module whose output it is')
        elif feature_source != 'features' and _get_submodule(self.backbone, feature_source) is None:
            raise ValueError(f'KDDiscriminator: {backbone_class_name} has no sub-module {feature_source!r}')
        self.feature_source = feature_source
        self.feature_dim = self._find_feature_dim()
        self.student = StudentHead(self.feature_dim, self.student_dim, student_hidden)

    def _find_feature_dim(self):
        if self.feature_source == 'features':
            dim = getattr(self.backbone, 'feature_dim', None)
        else:
            dim = getattr(_get_submodule(self.backbone, self.feature_source), 'out_features', None)
        if dim is not None:
            return int(dim)
        # One dry run in eval mode (no statistics updated) to measure the feature.
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                img = torch.zeros([2, self.img_channels, self.img_resolution, self.img_resolution])
                c = torch.zeros([2, self.c_dim])
                _logits, feat, _extras = self._backbone_forward(img, c, {})
        finally:
            self.backbone.train(was_training)
        return int(feat.shape[1])

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get('_modules')
            if name == 'backbone' or modules is None or 'backbone' not in modules:
                raise
            return getattr(modules['backbone'], name)

    def _backbone_forward(self, img, c, kwargs):
        """(logits, penultimate feature [N, F], extras tuple) from one backbone call."""
        if self.feature_source == 'features':
            out = self.backbone(img, c, features=True, **kwargs)
            if not isinstance(out, (tuple, list)) or len(out) < 2:
                raise TypeError(f'{self.backbone_class_name}.forward(features=True) must return (logits, feat, ...)')
            return out[0], out[1].flatten(1), tuple(out[2:])
        captured = []
        hook = _get_submodule(self.backbone, self.feature_source).register_forward_hook(
            lambda _module, _inputs, output: captured.append(output))
        try:
            out = self.backbone(img, c, **kwargs)
        finally:
            hook.remove()
        if len(captured) != 1:
            raise RuntimeError(f'KDDiscriminator: {self.feature_source} ran {len(captured)} times in one forward; '
                               f'expected once')
        if isinstance(out, (tuple, list)):
            return out[0], captured[0].flatten(1), tuple(out[1:])
        return out, captured[0].flatten(1), ()

    def forward(self, img, c, features=False, **kwargs):
        if not features:
            return self.backbone(img, c, **kwargs)
        logits, feat, extras = self._backbone_forward(img, c, kwargs)
        s = self.student(feat)
        return (logits, s) + extras

    def extra_repr(self):
        return (f'backbone={self.backbone_class_name}, feature_source={self.feature_source}, '
                f'feature_dim={self.feature_dim}, student_dim={self.student_dim}')

