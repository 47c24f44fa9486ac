"""DiffAugment (Zhao et al., 2020) as an augment pipe the training loop holds like ADA's.

`DiffAugment(policy='color,translation,cutout', translation_ratio=0.125,
cutout_ratio=0.5)` is a persistent module; `forward(images)` takes NCHW
float images in about [-1, 1] and returns augmented images of the same shape,
differentiable with respect to the input. Every transform draws its
parameters independently per sample, from torch's global RNG on the images'
device (seed with `torch.manual_seed` for reproducibility), and every
transform is applied to every sample:

* brightness: x + (U(0, 1) - 0.5)
* saturation: (x - mean over channels) * U(0, 2) + mean over channels
* contrast:   (x - mean over C, H, W) * U(0.5, 1.5) + mean over C, H, W
* translation: an integer shift per axis, drawn uniformly from [-s, s] with
  s = int(size * translation_ratio + 0.5) (size = H for the vertical shift,
  W for the horizontal one); pixels shifted in from outside are zero.
  Output pixel (i, j) is input pixel (i + dy, j + dx).
* cutout: a rectangle of int(H * cutout_ratio + 0.5) x int(W * cutout_ratio
  + 0.5) pixels (half the image side by default) set to zero. Its centre
  (cy, cx) is uniform over the integers 0 .. H - (h mod 2) (likewise for x),
  rows cy - h // 2 .. cy - h // 2 + h - 1; the parts outside the image are
  clipped, so a square touching an edge is partly visible.

`forward` also accepts ADA's `debug_percentile` argument, for call
compatibility, and ignores it.

`policy` is a comma-separated list of groups applied in the order given:
'color' (= brightness, saturation, contrast, in that order), 'translation',
'cutout', or the single colour transforms 'brightness', 'saturation',
'contrast'. An empty policy is the identity.

The buffer `p` exists so that the loop's logging, checkpointing and ADA code
treat this pipe like ADA's AugmentPipe. DiffAugment always applies its
policy: `p` starts at 1.0 and its value has no effect on `forward`, so the
loop setting it (`--p`) or ADA adjusting it changes nothing but the logged
number.
"""

import torch

from torch_utils import persistence

_COLOR = ('brightness', 'saturation', 'contrast')
_GROUPS = {
    'color': _COLOR,
    'brightness': ('brightness',),
    'saturation': ('saturation',),
    'contrast': ('contrast',),
    'translation': ('translation',),
    'cutout': ('cutout',),
}


def parse_policy(policy):
    """'color,translation' -> ('brightness', 'saturation', 'contrast', 'translation')."""
    if policy is None:
        return ()
    if isinstance(policy, (list, tuple)):
        names = [str(p).strip() for p in policy]
    else:
        names = [p.strip() for p in str(policy).split(',')]
    ops = []
    for name in names:
        if not name:
            continue
        if name not in _GROUPS:
            raise ValueError(f'unknown DiffAugment policy {name!r}; choose from {sorted(_GROUPS)}')
        ops.extend(_GROUPS[name])
    return tuple(ops)


def _uniform(x, low, high):
    """One value per sample, shaped [N, 1, 1, 1], uniform in [low, high)."""
    return torch.rand([x.shape[0], 1, 1, 1], device=x.device, dtype=x.dtype) * (high - low) + low


def brightness(x):
    return x + _uniform(x, -0.5, 0.5)


def saturation(x):
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x, 0.0, 2.0) + mean


def contrast(x):
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


def translation(x, ratio=0.125):
    n, _, h, w = x.shape
    sh = int(h * ratio + 0.5)
    sw = int(w * ratio + 0.5)
    if sh == 0 and sw == 0:
        return x
    dy = torch.randint(-sh, sh + 1, [n, 1, 1], device=x.device)
    dx = torch.randint(-sw, sw + 1, [n, 1, 1], device=x.device)
    rows = torch.arange(h, device=x.device).reshape(1, h, 1) + dy          # [N, H, 1]
    cols = torch.arange(w, device=x.device).reshape(1, 1, w) + dx          # [N, 1, W]
    # Index a copy padded with one ring of zeros; out-of-range sources land on the ring.
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1])
    rows = (rows + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (cols + 1).clamp(0, w + 1).expand(n, h, w)
    batch = torch.arange(n, device=x.device).reshape(n, 1, 1).expand(n, h, w)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]                    # [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)


def cutout(x, ratio=0.5):
    n, _, h, w = x.shape
    ch = int(h * ratio + 0.5)
    cw = int(w * ratio + 0.5)
    if ch == 0 or cw == 0:
        return x
    cy = torch.randint(0, h + 1 - ch % 2, [n, 1, 1], device=x.device)
    cx = torch.randint(0, w + 1 - cw % 2, [n, 1, 1], device=x.device)
    top = cy - ch // 2
    left = cx - cw // 2
    rows = torch.arange(h, device=x.device).reshape(1, h, 1)
    cols = torch.arange(w, device=x.device).reshape(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)   # [N, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


@persistence.persistent_class
class DiffAugment(torch.nn.Module):
    """Differentiable augmentation with per-sample parameters; see the module docstring."""

    def __init__(self, policy='color,translation,cutout', translation_ratio=0.125, cutout_ratio=0.5):
        super().__init__()
        self.policy = policy
        self.ops = parse_policy(policy)
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.register_buffer('p', torch.ones([]))

    def forward(self, images, debug_percentile=None):
        if images.ndim != 4:
            raise ValueError(f'DiffAugment expects NCHW images, got shape {tuple(images.shape)}')
        x = images
        for op in self.ops:
            if op == 'brightness':
                x = brightness(x)
            elif op == 'saturation':
                x = saturation(x)
            elif op == 'contrast':
                x = contrast(x)
            elif op == 'translation':
                x = translation(x, self.translation_ratio)
            elif op == 'cutout':
                x = cutout(x, self.cutout_ratio)
        return x

    def extra_repr(self):
        return (f'policy={self.policy!r}, translation_ratio={self.translation_ratio}, '
                f'cutout_ratio={self.cutout_ratio}')
