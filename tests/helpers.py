"""Helpers shared by several test modules (pytest puts tests/ on sys.path).

Pixel-space Frechet distance: the training tests' measure of "the generator
learned the data". Images are box-downsampled to 8x8 and the Frechet distance
between the Gaussians fitted to two sets of those pixel vectors is computed;
no detector network is needed, so it runs offline on the CPU.
"""
import numpy as np
import scipy.linalg
import torch


def pixel_features(images):
    """[N, C, H, W] in [-1, 1] -> 8x8 box-downsampled pixels, float64 [N, C*64]."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    return torch.nn.functional.avg_pool2d(x, x.shape[-1] // 8).flatten(1).numpy()


def frechet_distance(a, b):
    """Frechet distance between the Gaussians fitted to the rows of `a` and of `b`."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(np.square(mu_a - mu_b).sum() + np.trace(cov_a + cov_b - 2 * root))


def fake_features(G, num=256, seed=123, c=None):
    """pixel_features of `num` images of G (fixed latents, constant noise). `c`: [num, c_dim]
    labels for a conditional G (default: zeros)."""
    z = torch.randn([num, G.z_dim], generator=torch.Generator().manual_seed(seed))
    c = torch.zeros([num, G.c_dim]) if c is None else torch.as_tensor(c, dtype=torch.float32)
    with torch.no_grad():
        return pixel_features(G(z, c, noise_mode='const'))
