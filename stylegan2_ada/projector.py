"""Find the w whose image looks most like a given picture (LPIPS on NVIDIA's VGG16).

Examples:
    python projector.py --outdir=out --target=face.png --network=ffhq.pkl
    python projector.py --outdir=out --target=face.png --network=snapshot.pkl --num-steps=500 --save-video=false
    python generate.py --outdir=out --projected-w=out/projected_w.npz --network=snapshot.pkl

A single w, shared by all layers, is fitted with Adam; the synthesis noise
inputs are fitted alongside it, and a penalty on their spatial
autocorrelation stops them from carrying the picture themselves. The start
is the mean of many mapped latents; early steps jitter w by a shrinking
amount so the fit does not settle in the first basin it meets. Outputs:
`target.png` (the picture, center-cropped and resized to the generator),
`proj.png`, `projected_w.npz` (`w`: [1, num_ws, w_dim]) and, when imageio can
write MP4, `proj.mp4` with target and fit side by side at every step.
"""

import copy
import dataclasses
import inspect
import math
import os
import time

import click
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

import generate
from generate import load_generator
from metrics import detectors


@dataclasses.dataclass(frozen=True)
class ProjectionSchedule:
    """Step-size and jitter schedules of `project`, as functions of progress t in [0, 1).

    The field names are the keyword arguments `project` has always accepted.
    """
    initial_learning_rate: float = 0.1
    lr_rampup_length: float = 0.05       # linear warm-up, as a fraction of the steps
    lr_rampdown_length: float = 0.25     # half-cosine cool-down over the last fraction
    initial_noise_factor: float = 0.05   # w jitter at t = 0, in units of the spread of w
    noise_ramp_length: float = 0.75      # jitter falls quadratically to zero by this t
    regularize_noise_weight: float = 1e5

    def learning_rate(self, t):
        cool = min(1.0, (1.0 - t) / self.lr_rampdown_length)
        factor = 0.5 - 0.5 * math.cos(cool * math.pi)
        if self.lr_rampup_length > 0:
            factor = factor * min(1.0, t / self.lr_rampup_length)
        return self.initial_learning_rate * factor

    def jitter(self, t, w_std):
        remaining = max(0.0, 1.0 - t / self.noise_ramp_length)
        return w_std * self.initial_noise_factor * remaining ** 2


def _synthesis_kwargs(G):
    """noise_mode='const' for synthesis networks that take it (plug-ins may not)."""
    try:
        params = inspect.signature(G.synthesis.forward).parameters.values()
    except (TypeError, ValueError):
        return dict(noise_mode='const')
    takes_it = any(p.name == 'noise_mode' or p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
    return dict(noise_mode='const') if takes_it else {}


def _noise_buffers(G):
    """{name: buffer} of the synthesis network's `noise_const` inputs; empty when it has none."""
    synthesis = getattr(G, 'synthesis', G)
    return {name: buf for name, buf in synthesis.named_buffers() if name.rsplit('.', 1)[-1] == 'noise_const'}


def _pyramid(buf):
    """The buffer as [1, C, H, W], then halved by 2x2 averages while both sides exceed 8."""
    level = buf.reshape(1, -1, buf.shape[-2], buf.shape[-1])
    yield level
    while min(level.shape[2], level.shape[3]) > 8:
        level = F.avg_pool2d(level, kernel_size=2)
        yield level


def _noise_regularizer(bufs):
    """Squared mean products of each pixel with its neighbour (x, then y), summed over buffers and scales.

    Close to 0 for white noise; large once the noise inputs hold image structure.
    """
    penalty = 0.0
    for buf in bufs:
        for level in _pyramid(buf):
            for axis in (3, 2):
                penalty = penalty + (level * torch.roll(level, shifts=1, dims=axis)).mean().square()
    return penalty


def _lpips_input(images, size):
    """[N, C, H, W] in [0, 255] as the detector wants it: three channels, at most size x size (area)."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    too_big = images.shape[2] > size or images.shape[3] > size
    return F.interpolate(images, size=(size, size), mode='area') if too_big else images


def _latent_stats(G, num_samples, seed, device, batch=1000):
    """Mean [1, 1, w_dim] and scalar spread of w over `num_samples` seeded z (labels cycle over classes)."""
    z_all = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim).astype(np.float32))
    chunks = []
    for start in range(0, num_samples, batch):
        z = z_all[start:start + batch].to(device)
        c = torch.zeros([len(z), G.c_dim], device=device)
        if G.c_dim > 0:
            rows = torch.arange(len(z))
            c[rows, (rows + start) % G.c_dim] = 1
        chunks.append(G.mapping(z, c)[:, :1, :].to(torch.float32))
    w = torch.cat(chunks)
    centre = w.mean(dim=0, keepdim=True)
    spread = float(((w - centre).square().sum() / num_samples) ** 0.5)
    return centre, spread


class _Fit:
    """The optimisation state of one projection: a private copy of G, w, the noise inputs, Adam."""

    def __init__(self, G, target, vgg16, schedule, w_avg_samples, w_avg_seed, lpips_size, device, log):
        self.G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
        self.vgg16, self.schedule, self.lpips_size = vgg16, schedule, lpips_size
        self.synth_kwargs = _synthesis_kwargs(self.G)
        log(f'Computing W midpoint and stddev using {w_avg_samples} samples...')
        with torch.no_grad():
            w_avg, self.w_std = _latent_stats(self.G, w_avg_samples, w_avg_seed, device)
        self.noise = list(_noise_buffers(self.G).values())
        with torch.no_grad():
            for buf in self.noise:
                buf.copy_(torch.randn_like(buf))
            goal = target.to(device=device, dtype=torch.float32).unsqueeze(0)
            self.goal_features = self._features(goal)
        for buf in self.noise:
            buf.requires_grad_(True)
        self.w = w_avg.clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.w] + self.noise, betas=(0.9, 0.999),
                                          lr=schedule.initial_learning_rate)

    def _features(self, images):
        return self.vgg16(_lpips_input(images, self.lpips_size), resize_images=False, return_lpips=True)

    def step(self, t):
        """One Adam step at progress t; returns (LPIPS distance, total loss) as floats."""
        for group in self.optimizer.param_groups:
            group['lr'] = self.schedule.learning_rate(t)
        shaken = self.w + torch.randn_like(self.w) * self.schedule.jitter(t, self.w_std)
        img = self.G.synthesis(shaken.repeat([1, self.G.num_ws, 1]), **self.synth_kwargs)
        dist = (self.goal_features - self._features((img.to(torch.float32) + 1) * (255 / 2))).square().sum()
        penalty = _noise_regularizer(self.noise) if self.noise else torch.zeros([], device=dist.device)
        loss = dist + penalty * self.schedule.regularize_noise_weight
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(dist.detach()), float(loss.detach())

    @torch.no_grad()
    def renormalise_noise(self):
        """Adam drifts the noise inputs; pull each back to zero mean and unit variance."""
        for buf in self.noise:
            buf -= buf.mean()
            buf *= buf.square().mean().rsqrt()


def project(G, target, *, vgg16, num_steps=1000, w_avg_samples=10000, lpips_size=256, w_avg_seed=123,
            device=torch.device('cpu'), verbose=False, log_every=1, return_dists=False, **schedule):
    """Fit one w so that G.synthesis(w on every layer) matches `target` ([C, H, W], 0-255, G's size).

    `schedule` takes the fields of ProjectionSchedule. Returns the w after each
    step, [num_steps, num_ws, w_dim] (the last is the answer), and with
    `return_dists=True` also the LPIPS distance of each step (numpy). G itself
    is left as it was: a copy is optimised.
    """
    if num_steps < 1:
        raise ValueError('num_steps must be at least 1')
    size = G.img_resolution
    if tuple(target.shape) != (G.img_channels, size, size):
        raise ValueError(f'target must be [{G.img_channels}, {size}, {size}], got {list(target.shape)}')
    device = torch.device(device)
    log = print if verbose else (lambda *args, **kwargs: None)
    fit = _Fit(G, target, vgg16, ProjectionSchedule(**schedule), w_avg_samples, w_avg_seed, lpips_size, device, log)

    history = torch.zeros([num_steps, fit.w.shape[-1]], dtype=torch.float32, device=device)
    dists = np.zeros([num_steps], dtype=np.float64)
    every = max(1, log_every)
    for step in range(num_steps):
        dists[step], loss = fit.step(step / num_steps)
        history[step] = fit.w.detach()[0, 0]
        if step % every == 0 or step + 1 == num_steps:
            log(f'step {step + 1:>4d}/{num_steps}: dist {dists[step]:<8.5g} loss {loss:<8.5g}')
        fit.renormalise_noise()

    ws = history.unsqueeze(1).repeat([1, fit.G.num_ws, 1])
    return (ws, dists) if return_dists else ws


def load_target(path, resolution, channels):
    """Image file -> [C, resolution, resolution] uint8: the largest centred square, Lanczos-resized."""
    try:
        img = PIL.Image.open(path)
        img.load()
    except (OSError, ValueError) as err:
        raise click.ClickException(f'cannot read target image {path}: {err}')
    img = img.convert('L' if channels == 1 else 'RGB')
    side = min(img.size)
    left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), PIL.Image.LANCZOS)
    pixels = np.array(img, dtype=np.uint8)
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def load_vgg16(device, detector_dir=None):
    """NVIDIA's VGG16 detector through the shared resolver (path, cache, download), with one clear error."""
    try:
        path = detectors.resolve_asset(detectors.VGG16_URL, detector_dir=detector_dir, quick=True)
        return detectors.load_detector_file(path, device)
    except detectors.AssetUnavailableError as err:
        raise click.ClickException(str(err))


def _open_video_writer(path):
    try:
        import imageio
    except ImportError:
        print('Skipping proj.mp4: imageio is not installed (pip install imageio imageio-ffmpeg).')
        return None
    try:
        return imageio.get_writer(path, mode='I', fps=10, codec='libx264', bitrate='16M')
    except Exception as err:  # no ffmpeg backend, unknown codec...
        print(f'Skipping proj.mp4: imageio cannot write MP4 here ({err}); pip install imageio-ffmpeg.')
        return None


def _render(G, w):
    """[num_ws, w_dim] -> HWC uint8 with the stored noise, as generate.py --projected-w renders it."""
    with torch.no_grad():
        return generate.image_to_uint8(G.synthesis(w.unsqueeze(0), **_synthesis_kwargs(G)))[0]


def _write_video(path, G, ws, target_hwc):
    writer = _open_video_writer(path)
    if writer is None:
        return
    print(f'Saving optimization progress video "{path}"')
    for w in ws:
        frame = np.concatenate([target_hwc, _render(G, w)], axis=1)
        writer.append_data(np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame)
    writer.close()


@click.command()
@click.option('--network', 'network_pkl', required=True, metavar='PATH',
              help='Model file (.safetensors) or pickle (file or URL)')
@click.option('--target', 'target_fname', required=True, metavar='FILE', help='Picture to find in the latent space')
@click.option('--outdir', required=True, metavar='DIR', help='Folder for the results (created if needed)')
@click.option('--num-steps', type=click.IntRange(min=1), default=1000, show_default=True, help='Adam steps')
@click.option('--seed', type=int, default=303, show_default=True, help='Seed of numpy and torch before the fit')
@click.option('--save-video', type=bool, default=True, show_default=True,
              help='Also write proj.mp4, one frame per step')
@click.option('--detector-dir', metavar='DIR', help=f'Folder holding vgg16.pt (also ${detectors.DEFAULT_ENV_VAR})')
def run_projection(network_pkl, target_fname, num_steps, seed, save_video, outdir, detector_dir):
    """Find the latent of a picture in a network pickle's generator.

    Writes target.png, proj.png and projected_w.npz (and proj.mp4 with --save-video and imageio).
    """
    generate.require_file(target_fname, '--target')
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = generate.pick_device()
    G = load_generator(network_pkl, device)
    vgg16 = load_vgg16(device, detector_dir)
    target = load_target(target_fname, G.img_resolution, G.img_channels)

    started = time.time()
    ws = project(G, torch.from_numpy(target), vgg16=vgg16, num_steps=num_steps, device=device, verbose=True)
    print(f'Elapsed: {time.time() - started:.1f} s')

    os.makedirs(outdir, exist_ok=True)
    target_hwc = target.transpose(1, 2, 0)
    if save_video:
        _write_video(os.path.join(outdir, 'proj.mp4'), G, ws, target_hwc)
    generate.save_png(target_hwc, os.path.join(outdir, 'target.png'))
    generate.save_png(_render(G, ws[-1]), os.path.join(outdir, 'proj.png'))
    np.savez(os.path.join(outdir, 'projected_w.npz'), w=ws[-1:].cpu().numpy().astype(np.float32))
    print(f'Wrote target.png, proj.png and projected_w.npz to {outdir}')


if __name__ == '__main__':
    run_projection()
