"""A small classifier of `builtin:shapes` images: does a picture show one of the five shapes?

The demo (and the learning tests) need a number that says whether generated
images show recognisable shapes. This module trains a tiny CNN on many freshly
drawn scenes of the built-in set (seeds far from the 100-image training set's
seed 0) plus an explicit sixth class, 'other', of procedurally spoiled scenes:
two scenes of different shapes blended half and half, scenes whose 4x4-pixel
tiles are shuffled (the colours stay, the outline goes), scenes blurred into a
blob, noise from pixel-fine to smooth, saturated patterns (noise through a
steep tanh: what an untrained or diverged generator draws), scenes bent by a
smooth 3-5 px displacement (lumpy outlines) and irregular blobs of the shape's
colour. A confident shape answer therefore needs an outline of that shape, not
merely a coloured blob on a pastel background. Every training image, shape or
'other', also gets mild damage a person looks past (blur up to sigma 1.5 px,
pixel noise, lower contrast): the judge is "a person recognises the shape", not
"the drawing is pixel-perfect".

Images are read at 32x32 (larger inputs are area-averaged down), as NCHW
uint8 or floats in [-1, 1]; one channel is repeated to three.

    clf = load_classifier()                       # trained once, then cached
    share = confident_share(clf, images)          # fraction with p(shape) >= 0.9
    report = classify(clf, images)                # per-class counts and the share

The weights are cached under dnnlib's cache directory
(`shapes-classifier/<version>.pt`); pass `cache=False` to train afresh.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

from training import shapes

__all__ = ['CLASSES', 'RESOLUTION', 'ShapesClassifier', 'make_training_set', 'train_classifier', 'load_classifier',
           'classify', 'confident_share']

CLASSES = tuple(shapes.SHAPE_CLASSES) + ('other',)
OTHER = len(CLASSES) - 1
RESOLUTION = 32
# Bump when the drawing, the spoilers, the network or the schedule change: it names the cache file.
VERSION = 'v5'
_FIRST_SEED = 1000          # scene seeds 1000.. (the training set uses seed 0)
_SCENES_PER_SEED = 200


class ShapesClassifier(torch.nn.Module):
    """Three conv/BN/ReLU/max-pool stages (16, 32, 64 channels), global average pool, linear to 6."""

    def __init__(self, width=16):
        super().__init__()
        self.convs = torch.nn.ModuleList([
            torch.nn.Conv2d(3, width, 3, padding=1),
            torch.nn.Conv2d(width, width * 2, 3, padding=1),
            torch.nn.Conv2d(width * 2, width * 4, 3, padding=1),
        ])
        self.norms = torch.nn.ModuleList([torch.nn.BatchNorm2d(c) for c in (width, width * 2, width * 4)])
        self.head = torch.nn.Linear(width * 4, len(CLASSES))

    def forward(self, x):
        """x: [N, 3, 32, 32] floats in [-1, 1] -> logits [N, 6]."""
        assert x.ndim == 4 and x.shape[1:] == (3, RESOLUTION, RESOLUTION), x.shape
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        return self.head(x.mean(dim=[2, 3]))


def to_input(images):
    """uint8 [N, C, H, W] (0..255) or floats in [-1, 1] -> float [N, 3, 32, 32] in [-1, 1]."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 127.5 - 1
    x = x.to(torch.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f'expected images [N, 1 or 3, H, W], got {tuple(x.shape)}')
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[-1] != RESOLUTION or x.shape[-2] != RESOLUTION:
        x = F.adaptive_avg_pool2d(x, RESOLUTION)
    return x.clamp(-1, 1)


# Training data: clean scenes (labels 0..4) and spoiled ones (label 5).


def _scenes(count, seed_offset):
    chunks, labels = [], []
    seed = _FIRST_SEED + seed_offset
    while sum(len(c) for c in chunks) < count:
        imgs, lab, _names = shapes.make_shapes(num_images=_SCENES_PER_SEED, resolution=RESOLUTION, seed=seed)
        chunks.append(imgs)
        labels.append(lab)
        seed += 1
    imgs = torch.from_numpy(np.concatenate(chunks)[:count]).permute(0, 3, 1, 2)
    return to_input(imgs), torch.from_numpy(np.concatenate(labels)[:count])


def _smooth_field(n, cells, gen):
    """Smooth random values in [-1, 1] ([n, 1, 32, 32]): uniform noise on a cells x cells grid, bilinear."""
    coarse = torch.rand([n, 1, cells, cells], generator=gen) * 2 - 1
    return F.interpolate(coarse, size=RESOLUTION, mode='bilinear', align_corners=True)


def _warp(x, gen):
    """Bend each scene by a smooth displacement of 3-5.5 px: the shape keeps its colour and size but
    its outline turns lumpy (a blob that merely resembles the shape is not the shape)."""
    n = x.shape[0]
    amp = torch.rand([n, 1, 1, 1], generator=gen) * 0.15 + 0.2            # in [-1, 1] units: 0.2 = 3.2 px
    shift = torch.cat([_smooth_field(n, 4, gen), _smooth_field(n, 4, gen)], dim=1) * amp
    ramp = torch.linspace(-1, 1, RESOLUTION)
    base = torch.stack(torch.meshgrid(ramp, ramp, indexing='xy'), dim=-1)   # [32, 32, 2], (x, y)
    grid = base[None] + shift.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=True)


def _blob(x, gen):
    """Replace each scene's shape by an irregular blob of its colour on its background: a lumpy
    disc whose radius varies by 30-70 % around the outline."""
    n = x.shape[0]
    corners = x[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].median(dim=2).values   # a shape covers one corner at most
    far = (x - corners[:, :, None, None]).abs().sum(dim=1).flatten(1).argmax(dim=1)
    colour = x.flatten(2)[torch.arange(n), :, far][:, :, None, None]      # the most un-background pixel
    # Per row, the side column farther from the shape's colour (a shape never spans a whole row).
    sides = x[:, :, :, [0, -1]]
    pick = (sides - colour).abs().sum(dim=1, keepdim=True).argmax(dim=3, keepdim=True)
    background = sides.gather(3, pick.expand(-1, 3, -1, -1)).expand_as(x)
    ramp = (torch.arange(RESOLUTION, dtype=x.dtype) + 0.5) / RESOLUTION
    r = torch.rand([n, 1, 1, 1], generator=gen) * 0.12 + 0.17
    cx, cy = [0.5 + (torch.rand([n, 1, 1, 1], generator=gen) * 2 - 1) * (0.48 - r) for _ in range(2)]
    dist = ((ramp[None, None, None, :] - cx) ** 2 + (ramp[None, None, :, None] - cy) ** 2).sqrt() / r
    field = _smooth_field(n, 5, gen)
    field = field / field.flatten(1).abs().amax(dim=1)[:, None, None, None]
    lumps = (torch.rand([n, 1, 1, 1], generator=gen) * 0.4 + 0.3) * field
    cover = torch.sigmoid((1 + lumps - dist) * 12)
    return background * (1 - cover) + colour * cover


def _spoil(x, labels, gen):
    """Scenes with the outline destroyed, one of seven ways chosen per image."""
    n = x.shape[0]
    kind = torch.randint(7, [n], generator=gen)
    out = x.clone()
    # Blend with a scene of another class.
    partner = torch.randperm(n, generator=gen)
    blend = (kind == 0) & (labels != labels[partner])
    out[blend] = 0.5 * (x[blend] + x[partner][blend])
    # Shuffle 4x4 tiles.
    tiles = RESOLUTION // 4
    idx = (kind == 1).nonzero().flatten()
    if len(idx):
        t = x[idx].reshape(len(idx), 3, tiles, 4, tiles, 4).permute(0, 2, 4, 1, 3, 5).reshape(len(idx), tiles * tiles,
                                                                                                3, 4, 4)
        t = t[:, torch.randperm(tiles * tiles, generator=gen)]
        out[idx] = t.reshape(len(idx), tiles, tiles, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(len(idx), 3,
                                                                                                  RESOLUTION, RESOLUTION)
    # Blur into a blob (a 9x9 box filter, twice).
    blur = kind == 2
    if blur.any():
        b = x[blur]
        for _ in range(2):
            b = F.avg_pool2d(F.pad(b, [4] * 4, mode='replicate'), 9, stride=1)
        out[blur] = b
    # Noise, from pixel-fine to smooth (drawn at 4..32 pixels, upsampled).
    noise = (kind == 3).nonzero().flatten()
    for i in noise.tolist():
        size = 2 ** int(torch.randint(2, 6, [], generator=gen))
        coarse = torch.rand([1, 3, size, size], generator=gen) * 2 - 1
        out[i] = F.interpolate(coarse, size=RESOLUTION, mode='bilinear', align_corners=False)[0]
    # Saturated patterns (what an untrained or diverged generator draws): gained noise through tanh.
    for i in (kind == 4).nonzero().flatten().tolist():
        size = 2 ** int(torch.randint(1, 6, [], generator=gen))
        gain = float(torch.empty([]).uniform_(2, 30, generator=gen))
        coarse = torch.randn([1, 3, size, size], generator=gen) * gain
        out[i] = torch.tanh(F.interpolate(coarse, size=RESOLUTION, mode='bilinear', align_corners=False)[0])
    for k, spoiler in ((5, _warp), (6, _blob)):
        if (kind == k).any():
            out[kind == k] = spoiler(x[kind == k], gen)
    keep = blend | (kind != 0)   # a blend of two scenes of the same class is still that class: dropped
    return out[keep]


def _gaussian_blur(x, sigma):
    """Blur each image with its own Gaussian (sigma [N] in pixels; 0 leaves it as it is)."""
    n, c, h, w = x.shape
    taps = torch.arange(-4, 5, dtype=x.dtype)                        # 9 taps: enough up to sigma 1.5
    k = torch.exp(-taps[None] ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, 9]
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, [4, 4, 0, 0], mode='replicate'), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, [0, 0, 4, 4], mode='replicate'), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _degrade(x, gen):
    """Mild, class-neutral damage that leaves every shape plain to a person: Gaussian blur
    (sigma up to 1.5 px), pixel noise (std up to 0.15), lower contrast, a brightness shift.
    Without it the classifier wanted pixel-perfect drawings: a blur of sigma 1 px or noise of
    std 0.1 (both still obvious shapes) already dropped the real set's confident share to a few %."""
    n = x.shape[0]
    pick = lambda prob: (torch.rand([n], generator=gen) < prob).to(x.dtype)
    sigma = torch.rand([n], generator=gen) * 1.5 * pick(0.5)
    x = _gaussian_blur(x, sigma)
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    contrast = 1 - 0.4 * torch.rand([n], generator=gen) * pick(0.3)
    shift = (torch.rand([n], generator=gen) - 0.5) * 0.2 * pick(0.3)
    x = mean + (x - mean) * contrast[:, None, None, None] + shift[:, None, None, None]
    std = torch.rand([n], generator=gen) * 0.15 * pick(0.5)
    x = x + std[:, None, None, None] * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def make_training_set(num_scenes=3000, seed=0):
    """(x [M, 3, 32, 32], y [M]): `num_scenes` clean scenes and about num_scenes / 2 spoiled ones."""
    gen = torch.Generator().manual_seed(seed)
    x, y = _scenes(num_scenes, seed_offset=0)
    spoil_from = torch.randperm(num_scenes, generator=gen)[:num_scenes // 2]
    bad = _spoil(x[spoil_from], y[spoil_from], gen)
    x = torch.cat([x, bad])
    y = torch.cat([y, torch.full([bad.shape[0]], OTHER, dtype=y.dtype)])
    return x, y


def train_classifier(num_scenes=3000, epochs=14, batch=64, lr=3e-3, seed=0, verbose=False):
    """A freshly trained classifier (eval mode). About 60-80 s of one CPU thread at the defaults."""
    torch.manual_seed(seed)
    x, y = make_training_set(num_scenes, seed)
    net = ShapesClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb = x[idx]
            flip = torch.rand([len(idx)], generator=gen) < 0.5   # the data set may be mirrored
            xb = _degrade(torch.where(flip[:, None, None, None], xb.flip(3), xb), gen)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if verbose:
            print(f'shapes classifier: epoch {epoch + 1}/{epochs}, last batch loss {float(loss.detach()):.4f}')
    return net.eval().requires_grad_(False)


def _cache_path():
    import dnnlib
    return dnnlib.make_cache_dir_path('shapes-classifier', f'{VERSION}.pt')


def load_classifier(cache=True, verbose=False):
    """The default classifier: loaded from dnnlib's cache, or trained and cached there."""
    path = _cache_path()
    if cache and os.path.isfile(path):
        net = ShapesClassifier()
        net.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
        if verbose:
            print(f'shapes classifier: loaded from the cache, {path}')
        return net.eval().requires_grad_(False)
    if verbose:
        print(f'shapes classifier: training it (once; then cached as {path})')
    net = train_classifier(verbose=verbose)
    if cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f'{path}.{os.getpid()}.tmp'
        torch.save(net.state_dict(), tmp)
        os.replace(tmp, path)
    return net


@torch.no_grad()
def probabilities(net, images, batch=256):
    """Class probabilities [N, 6] of images (see to_input for the formats)."""
    x = to_input(images)
    return torch.cat([F.softmax(net(x[i:i + batch]), dim=1) for i in range(0, len(x), batch)])


def classify(net, images, threshold=0.9):
    """{'confident_share': fraction whose top class is a shape with p >= threshold,
    'counts': {class: confident images}, 'num_images': N}."""
    probs = probabilities(net, images)
    conf, top = probs.max(dim=1)
    confident = (conf >= threshold) & (top != OTHER)
    counts = {name: int(((top == k) & confident).sum()) for k, name in enumerate(CLASSES[:OTHER])}
    return dict(confident_share=float(confident.float().mean()), counts=counts, num_images=int(len(probs)),
                threshold=float(threshold))


def confident_share(net, images, threshold=0.9):
    """Fraction of images assigned to a shape class with probability >= threshold."""
    return classify(net, images, threshold)['confident_share']
