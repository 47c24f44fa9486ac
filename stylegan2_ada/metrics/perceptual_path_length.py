"""Perceptual Path Length (Karras et al. 2019), with the VGG16 LPIPS distance.

For random pairs of latents, the LPIPS distance between the images at t and
t + epsilon along the path (slerp in Z, lerp in W), divided by epsilon^2.
'full' samples t uniformly in [0, 1], 'end' uses t = 0. Values below the 1st
and above the 99th percentile are dropped before averaging.

One batch is a pipeline of small steps (`path_batch`): path positions, the
two ends of each short segment as ws, fresh constant noise, rendering, the
crop and scaling VGG16 expects, and the scaled squared LPIPS distance.
"""
import copy

import numpy as np
import torch

from metrics import detectors, metric_utils

DETECTOR_URL = detectors.VGG16_URL

SPACES = ('z', 'w')
SAMPLINGS = ('full', 'end')


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def slerp(a, b, t):
    """Spherical interpolation between the directions of a and b [N, D] at t [N, 1] (unit-length result)."""
    a, b = _unit(a), _unit(b)
    cos_ab = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    # The unit vector in the plane of a and b, at right angles to a and on b's side.
    side = b - cos_ab * a
    side = side / side.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    turn = torch.acos(cos_ab) * t
    return a * torch.cos(turn) + side * torch.sin(turn)


def _positions(n, sampling, device):
    """Where on each path the segment starts. Drawn for 'end' too (then zeroed) so
    both samplings consume the same random numbers."""
    t = torch.rand([n], device=device)
    return t if sampling == 'full' else t * 0


def _segment_ws(G, c, t, epsilon, space):
    """ws [2N, num_ws, w_dim]: the N paths at t, then the same paths at t + epsilon."""
    n = c.shape[0]
    z = torch.randn([2 * n, G.z_dim], device=c.device)
    both_c = torch.cat([c, c])
    if space == 'z':
        here = slerp(z[:n], z[n:], t.unsqueeze(1))
        there = slerp(z[:n], z[n:], t.unsqueeze(1) + epsilon)
        return G.mapping(z=torch.cat([here, there]), c=both_c)
    w = G.mapping(z=z, c=both_c)
    weight = t.reshape([n, 1, 1])
    return torch.cat([torch.lerp(w[:n], w[n:], weight), torch.lerp(w[:n], w[n:], weight + epsilon)])


def _refresh_const_noise(G):
    """New constant noise for this batch: both ends of a segment must see the same noise."""
    buffers = [buf for name, buf in G.named_buffers() if name.endswith('.noise_const')]
    for buf in buffers:
        buf.copy_(torch.randn_like(buf))


def _face_crop(img):
    """The legacy metrics' FFHQ-style framing: rows 3/8..7/8, columns 2/8..6/8."""
    if img.shape[2] != img.shape[3]:
        raise ValueError('crop needs square images')
    eighth = img.shape[2] // 8
    rows, cols = slice(3 * eighth, 7 * eighth), slice(2 * eighth, 6 * eighth)
    return img[:, :, rows, cols]


def _for_vgg(img, crop, resolution):
    """G's images as VGG16 takes them: cropped if asked, box-downsampled to at most
    256 by G's resolution, in [0, 255], three channels."""
    if crop:
        img = _face_crop(img)
    factor = resolution // 256
    if factor > 1:
        h, w = img.shape[2] // factor, img.shape[3] // factor
        img = img.unflatten(3, (w, factor)).unflatten(2, (h, factor)).mean([3, 5])
    img = (img + 1) * 127.5
    return metric_utils.to_rgb(img)


def path_batch(G, vgg16, c, G_kwargs, epsilon, space, sampling, crop):
    """Squared LPIPS distance / epsilon^2 for one batch of paths, one per label row of `c`."""
    t = _positions(c.shape[0], sampling, c.device)
    ws = _segment_ws(G, c, t, epsilon, space)
    _refresh_const_noise(G)
    img = G.synthesis(ws=ws, force_fp32=True, **dict(G_kwargs, noise_mode='const'))
    lpips = vgg16(_for_vgg(img, crop, G.img_resolution), resize_images=False, return_lpips=True)
    start, end = lpips.split(c.shape[0])
    return (start - end).square().sum(1) / epsilon ** 2


def ppl_from_distances(dist):
    """Mean of the distances between the 1st and 99th percentiles (inclusive)."""
    dist = np.asarray(dist, dtype=np.float64)
    low = np.percentile(dist, 1, method='lower')
    high = np.percentile(dist, 99, method='higher')
    return float(dist[(low <= dist) & (dist <= high)].mean())


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size=2):
    """PPL of `opts.G`; NaN on ranks other than 0."""
    if space not in SPACES or sampling not in SAMPLINGS:
        raise ValueError('space must be one of {} and sampling one of {}, got {!r} and {!r}'.format(
            SPACES, SAMPLINGS, space, sampling))
    vgg16 = metric_utils.get_feature_detector(DETECTOR_URL, device=opts.device, detector_dir=opts.detector_dir)
    dataset = metric_utils.open_dataset(opts)
    draw_c = metric_utils.make_label_sampler(dataset, opts.G.c_dim)
    # A private copy: the constant-noise buffers are overwritten every batch.
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    vgg16.eval()
    for param in vgg16.parameters():
        param.requires_grad_(False)

    progress = opts.progress.sub(tag='ppl sampling', num_items=num_samples)
    parts, count = [], 0
    with torch.no_grad():
        while count < num_samples:
            dist = path_batch(G, vgg16, draw_c(batch_size, opts.device), opts.G_kwargs, epsilon=epsilon,
                              space=space, sampling=sampling, crop=crop)
            dist = metric_utils.gather_across_ranks(dist, opts.num_gpus)
            parts.append(dist.cpu())
            count += len(dist)
            progress.update(count)
    if hasattr(dataset, 'close'):
        dataset.close()
    if opts.rank != 0:
        return float('nan')
    return ppl_from_distances(torch.cat(parts)[:num_samples].numpy())
