"""Project an image into the W space of a generator (LPIPS distance on VGG16).

Examples:
    python projector.py --outdir=out --target=face.png --network=ffhq.pkl
    python projector.py --outdir=out --target=face.png --network=snapshot.pkl --num-steps=500 --save-video=false
    python generate.py --outdir=out --projected-w=out/projected_w.npz --network=snapshot.pkl

One w (the same for every layer) is optimised with Adam so that the generated
image matches the target under the LPIPS distance of NVIDIA's VGG16 detector;
the noise inputs of the synthesis layers are optimised alongside it, kept
uncorrelated by a regulariser. Writes `target.png` (the target, center-cropped
and resized to the generator's resolution), `proj.png`, `projected_w.npz`
(`w`: [1, num_ws, w_dim]) and, when imageio with ffmpeg is installed,
`proj.mp4` showing target and projection side by side over the steps.
"""

import copy
import inspect
import math
import os
import time

import click
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from generate import load_generator
from metrics import detectors

# The optimisation.


def _accepts_kwarg(fn, name):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def _noise_buffers(G):
    """The synthesis network's per-layer noise inputs (`*.noise_const`), by name; {} if it has none."""
    synthesis = getattr(G, 'synthesis', G)
    return {name: buf for name, buf in synthesis.named_buffers() if name.split('.')[-1] == 'noise_const'}


def _noise_regularizer(bufs):
    """Sum over buffers and scales of squared one-pixel autocorrelations (x and y).

    White noise scores ~0; any spatial structure smuggled into the noise
    inputs raises it. Each buffer is halved by average pooling until it is
    8 pixels or less."""
    total = 0.0
    for buf in bufs:
        v = buf.reshape(1, -1, buf.shape[-2], buf.shape[-1])
        while True:
            total = total + (v * torch.roll(v, shifts=1, dims=3)).mean().square()
            total = total + (v * torch.roll(v, shifts=1, dims=2)).mean().square()
            if min(v.shape[2], v.shape[3]) <= 8:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return total


def _lpips_input(images, size):
    """[N, C, H, W] in [0, 255] -> RGB at most size x size, the way the detector receives it."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    if images.shape[2] > size or images.shape[3] > size:
        images = F.interpolate(images, size=(size, size), mode='area')
    return images


def _latent_stats(G, num_samples, seed, device, batch=1000):
    """Mean and spread of w over `num_samples` mapped z (labels cycle through the classes)."""
    rnd = np.random.RandomState(seed)
    z_all = torch.from_numpy(rnd.randn(num_samples, G.z_dim).astype(np.float32))
    ws = []
    for start in range(0, num_samples, batch):
        z = z_all[start:start + batch].to(device)
        c = torch.zeros([len(z), G.c_dim], device=device)
        if G.c_dim > 0:
            c[torch.arange(len(z)), (torch.arange(len(z)) + start) % G.c_dim] = 1
        ws.append(G.mapping(z, c)[:, :1, :].to(torch.float32))   # [n, 1, w_dim]
    w = torch.cat(ws)
    w_avg = w.mean(dim=0, keepdim=True)                            # [1, 1, w_dim]
    w_std = float(((w - w_avg).square().sum() / num_samples) ** 0.5)
    return w_avg, w_std


def project(
    G,
    target,                          # [C, H, W] in [0, 255] at G's resolution.
    *,
    vgg16,                           # NVIDIA's VGG16 detector (or one with its interface).
    num_steps=1000,
    w_avg_samples=10000,
    initial_learning_rate=0.1,
    initial_noise_factor=0.05,
    lr_rampdown_length=0.25,
    lr_rampup_length=0.05,
    noise_ramp_length=0.75,
    regularize_noise_weight=1e5,
    lpips_size=256,                  # Images larger than this are area-resized for LPIPS.
    w_avg_seed=123,
    device=torch.device('cpu'),
    verbose=False,
    log_every=1,
    return_dists=False,
):
    """Optimise one w so that G.synthesis(w broadcast to num_ws) matches `target` under LPIPS.

    Returns the w of every step, [num_steps, num_ws, w_dim] (the last is the
    result); with `return_dists=True`, also the LPIPS distance measured at
    each step (numpy, [num_steps]). G is not modified: a copy is optimised.
    """
    if num_steps < 1:
        raise ValueError('num_steps must be at least 1')
    res = G.img_resolution
    if tuple(target.shape) != (G.img_channels, res, res):
        raise ValueError(f'target must be [{G.img_channels}, {res}, {res}], got {list(target.shape)}')
    device = torch.device(device)
    log = print if verbose else (lambda *args, **kwargs: None)

    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    synth_kwargs = dict(noise_mode='const') if _accepts_kwarg(G.synthesis.forward, 'noise_mode') else {}

    log(f'Computing W midpoint and stddev using {w_avg_samples} samples...')
    with torch.no_grad():
        w_avg, w_std = _latent_stats(G, w_avg_samples, w_avg_seed, device)

    # Noise inputs become free variables, started as normalised white noise.
    noise_bufs = list(_noise_buffers(G).values())
    for buf in noise_bufs:
        with torch.no_grad():
            buf.copy_(torch.randn_like(buf))
        buf.requires_grad_(True)

    with torch.no_grad():
        target_img = target.to(device=device, dtype=torch.float32).unsqueeze(0)
        target_features = vgg16(_lpips_input(target_img, lpips_size), resize_images=False, return_lpips=True)

    w_opt = w_avg.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt] + noise_bufs, betas=(0.9, 0.999), lr=initial_learning_rate)
    w_out = torch.zeros([num_steps, w_avg.shape[-1]], dtype=torch.float32, device=device)
    dists = np.zeros([num_steps], dtype=np.float64)

    for step in range(num_steps):
        # Schedules: w jitter decays quadratically to 0 over noise_ramp_length; lr ramps up
        # linearly, then follows a half cosine down over the last lr_rampdown_length.
        t = step / num_steps
        w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
        ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp = ramp * min(1.0, t / lr_rampup_length) if lr_rampup_length > 0 else ramp
        for group in optimizer.param_groups:
            group['lr'] = initial_learning_rate * ramp

        w_jittered = w_opt + torch.randn_like(w_opt) * w_noise_scale
        ws = w_jittered.repeat([1, G.num_ws, 1])
        synth = G.synthesis(ws, **synth_kwargs)
        synth = (synth.to(torch.float32) + 1) * (255 / 2)
        synth_features = vgg16(_lpips_input(synth, lpips_size), resize_images=False, return_lpips=True)
        dist = (target_features - synth_features).square().sum()
        reg = _noise_regularizer(noise_bufs) if noise_bufs else torch.zeros([], device=device)
        loss = dist + reg * regularize_noise_weight

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        dists[step] = float(dist.detach())
        w_out[step] = w_opt.detach()[0, 0]
        if step % max(1, log_every) == 0 or step == num_steps - 1:
            log(f'step {step + 1:>4d}/{num_steps}: dist {dists[step]:<8.5g} loss {float(loss.detach()):<8.5g}')

        # Keep the noise inputs zero-mean with unit variance.
        with torch.no_grad():
            for buf in noise_bufs:
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()

    ws_all = w_out.unsqueeze(1).repeat([1, G.num_ws, 1])
    return (ws_all, dists) if return_dists else ws_all

# Command line.


def load_target(path, resolution, channels):
    """Image file -> center-cropped square at `resolution`, as a [C, H, W] uint8 array."""
    try:
        img = PIL.Image.open(path)
        img.load()
    except (OSError, ValueError) as err:
        raise click.ClickException(f'cannot read target image {path}: {err}')
    img = img.convert('L' if channels == 1 else 'RGB')
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), PIL.Image.LANCZOS)
    arr = np.array(img, dtype=np.uint8)
    return arr[np.newaxis] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _to_pil(chw_uint8):
    if chw_uint8.shape[0] == 1:
        return PIL.Image.fromarray(chw_uint8[0], 'L')
    return PIL.Image.fromarray(chw_uint8.transpose(1, 2, 0), 'RGB')


def _synth_uint8(G, w, synth_kwargs):
    img = G.synthesis(w.unsqueeze(0), **synth_kwargs)
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()


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


@click.command()
@click.option('--network', 'network_pkl', help='Network pickle filename or URL', required=True, metavar='PATH')
@click.option('--target', 'target_fname', help='Target image file to project to', required=True, metavar='FILE')
@click.option('--num-steps', help='Number of optimization steps', type=click.IntRange(min=1), default=1000,
              show_default=True)
@click.option('--seed', help='Random seed', type=int, default=303, show_default=True)
@click.option('--save-video', help='Save an mp4 video of the optimization progress', type=bool, default=True,
              show_default=True)
@click.option('--outdir', help='Where to save the output images', required=True, metavar='DIR')
@click.option('--detector-dir', help=f'Folder holding vgg16.pt (also ${detectors.DEFAULT_ENV_VAR})', metavar='DIR')
def run_projection(network_pkl, target_fname, num_steps, seed, save_video, outdir, detector_dir):
    """Project a target image into the latent space of a pretrained network pickle.

    Writes target.png, proj.png and projected_w.npz (and proj.mp4 with --save-video and imageio).
    """
    if not os.path.isfile(target_fname):
        raise click.BadParameter(f'file not found: {target_fname}', param_hint="'--target'")
    np.random.seed(seed)
    torch.manual_seed(seed)

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    print(f'Using device: {device}' + ('' if device.type == 'cuda' else ' (no CUDA device found; this is slower)'))
    G = load_generator(network_pkl, device)
    vgg16 = load_vgg16(device, detector_dir)
    target = load_target(target_fname, G.img_resolution, G.img_channels)

    start = time.time()
    ws = project(G, torch.from_numpy(target), vgg16=vgg16, num_steps=num_steps, device=device, verbose=True)
    print(f'Elapsed: {time.time() - start:.1f} s')

    os.makedirs(outdir, exist_ok=True)
    synth_kwargs = dict(noise_mode='const') if _accepts_kwarg(G.synthesis.forward, 'noise_mode') else {}
    if save_video:
        writer = _open_video_writer(os.path.join(outdir, 'proj.mp4'))
        if writer is not None:
            print(f'Saving optimization progress video "{outdir}/proj.mp4"')
            with torch.no_grad():
                for w in ws:
                    frame = np.concatenate([target, _synth_uint8(G, w, synth_kwargs)], axis=2)
                    frame = np.repeat(frame, 3, axis=0) if frame.shape[0] == 1 else frame
                    writer.append_data(frame.transpose(1, 2, 0))
            writer.close()

    _to_pil(target).save(os.path.join(outdir, 'target.png'))
    with torch.no_grad():
        _to_pil(_synth_uint8(G, ws[-1], synth_kwargs)).save(os.path.join(outdir, 'proj.png'))
    np.savez(os.path.join(outdir, 'projected_w.npz'), w=ws[-1:].cpu().numpy().astype(np.float32))
    print(f'Wrote target.png, proj.png and projected_w.npz to {outdir}')


if __name__ == '__main__':
    run_projection()
