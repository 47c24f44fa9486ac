"""Perceptual Path Length (Karras et al. 2019), with the VGG16 LPIPS distance.

For random pairs of latents, the LPIPS distance between the images at t and
t + epsilon along the path (slerp in Z, lerp in W), divided by epsilon^2.
'full' samples t uniformly in [0, 1], 'end' uses t = 0. Values below the 1st
and above the 99th percentile are dropped before averaging.
"""
import copy

import numpy as np
import torch

from metrics import detectors, metric_utils

DETECTOR_URL = detectors.VGG16_URL


def slerp(a, b, t):
    """Spherical interpolation between the directions of a and b [N, D] at t [N, 1] (unit-length result)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    angle = torch.acos(cos) * t
    ortho = b - cos * a
    ortho = ortho / ortho.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return a * torch.cos(angle) + ortho * torch.sin(angle)


class PPLSampler(torch.nn.Module):
    """One batch of squared LPIPS differences / epsilon^2 (G and the VGG16 detector held inside)."""

    def __init__(self, G, G_kwargs, epsilon, space, sampling, crop, vgg16):
        if space not in ('z', 'w'):
            raise ValueError("space must be 'z' or 'w', got {!r}".format(space))
        if sampling not in ('full', 'end'):
            raise ValueError("sampling must be 'full' or 'end', got {!r}".format(sampling))
        super().__init__()
        self.G = copy.deepcopy(G)
        self.G_kwargs = G_kwargs
        self.epsilon = epsilon
        self.space = space
        self.sampling = sampling
        self.crop = crop
        self.vgg16 = vgg16

    def forward(self, c):
        n = c.shape[0]
        device = c.device
        t = torch.rand([n], device=device) * (1 if self.sampling == 'full' else 0)
        z0, z1 = torch.randn([n * 2, self.G.z_dim], device=device).chunk(2)

        if self.space == 'w':
            w0, w1 = self.G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
            wt0 = w0.lerp(w1, t.unsqueeze(1).unsqueeze(2))
            wt1 = w0.lerp(w1, t.unsqueeze(1).unsqueeze(2) + self.epsilon)
        else:
            zt0 = slerp(z0, z1, t.unsqueeze(1))
            zt1 = slerp(z0, z1, t.unsqueeze(1) + self.epsilon)
            wt0, wt1 = self.G.mapping(z=torch.cat([zt0, zt1]), c=torch.cat([c, c])).chunk(2)

        # Both images of a pair must see the same noise: fresh constant noise per batch.
        for name, buf in self.G.named_buffers():
            if name.endswith('.noise_const'):
                buf.copy_(torch.randn_like(buf))
        kwargs = dict(self.G_kwargs)
        kwargs['noise_mode'] = 'const'
        img = self.G.synthesis(ws=torch.cat([wt0, wt1]), force_fp32=True, **kwargs)

        if self.crop:
            # Face-centred crop of the legacy metrics (FFHQ-style framing).
            if img.shape[2] != img.shape[3]:
                raise ValueError('crop needs square images')
            s = img.shape[2] // 8
            img = img[:, :, s * 3:s * 7, s * 2:s * 6]
        factor = self.G.img_resolution // 256
        if factor > 1:
            img = img.reshape([-1, img.shape[1], img.shape[2] // factor, factor,
                               img.shape[3] // factor, factor]).mean([3, 5])
        img = (img + 1) * (255 / 2)
        if img.shape[1] == 1:
            img = img.repeat([1, 3, 1, 1])

        lpips_t0, lpips_t1 = self.vgg16(img, resize_images=False, return_lpips=True).chunk(2)
        return (lpips_t0 - lpips_t1).square().sum(1) / self.epsilon ** 2


def ppl_from_distances(dist):
    """Mean of the distances between the 1st and 99th percentiles (inclusive)."""
    dist = np.asarray(dist, dtype=np.float64)
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(np.extract(np.logical_and(dist >= lo, dist <= hi), dist).mean())


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size=2):
    """PPL of `opts.G`; NaN on ranks other than 0."""
    vgg16 = metric_utils.get_feature_detector(DETECTOR_URL, device=opts.device, detector_dir=opts.detector_dir)
    dataset = metric_utils.open_dataset(opts)
    sample_c = metric_utils._LabelSampler(dataset, opts.G.c_dim)
    sampler = PPLSampler(G=opts.G, G_kwargs=opts.G_kwargs, epsilon=epsilon, space=space, sampling=sampling,
                         crop=crop, vgg16=vgg16)
    sampler.eval().requires_grad_(False).to(opts.device)

    dist = []
    progress = opts.progress.sub(tag='ppl sampling', num_items=num_samples)
    done = 0
    with torch.no_grad():
        while done < num_samples:
            c = sample_c(batch_size, opts.device)
            x = sampler(c)
            if opts.num_gpus > 1:
                parts = [torch.empty_like(x) for _ in range(opts.num_gpus)]
                torch.distributed.all_gather(parts, x)
                x = torch.cat(parts)
            dist.append(x.cpu())
            done += x.shape[0]
            progress.update(done)
    if hasattr(dataset, 'close'):
        dataset.close()
    if opts.rank != 0:
        return float('nan')
    return ppl_from_distances(torch.cat(dist)[:num_samples].numpy())
