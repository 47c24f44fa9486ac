"""Pictures of the results: metric curves (kimg, wall-clock) and one sample row per method."""
import math
import os

from bench.comparison.evaluation import load_generator
from bench.comparison.grid import safe_name


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def nice_ticks(lo, hi, count=6):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    end = math.ceil(hi / step) * step
    ticks = []
    value = start
    while value <= end + step * 1e-6:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw, text, font):
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def draw_chart(path, series, xlabel, ylabel, title, size=(960, 600)):
    """A line chart: `series` = [dict(name, color, mean=[(x, y)], band=[(x, lo, hi)], seeds=[[(x, y)]])]."""
    from PIL import Image, ImageDraw
    font, small = _font(16), _font(13)
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    legend_w = max([_text_size(probe, s['name'], small)[0] for s in series] + [100])
    left, right, top, bottom = 90, legend_w + 70, 50, 70    # the legend column fits the longest name
    width, height = max(size[0], left + right + 500), size[1]
    img = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img, 'RGBA')
    xs, ys = [], []
    for s in series:
        for line in [s['mean']] + s['seeds']:
            xs += [p[0] for p in line]
            ys += [p[1] for p in line]
        for x, lo, hi in s['band']:
            xs.append(x)
            ys += [lo, hi]
    xs = [x for x in xs if x is not None and math.isfinite(x)] or [0.0, 1.0]
    ys = [y for y in ys if y is not None and math.isfinite(y)] or [0.0, 1.0]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x, y):
        return left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph

    for x in xt:
        X, _ = px(x, y0)
        draw.line([(X, top), (X, top + ph)], fill=(230, 230, 230), width=1)
        label = '{:g}'.format(x)
        tw, _ = _text_size(draw, label, small)
        draw.text((X - tw / 2, top + ph + 8), label, fill=(60, 60, 60), font=small)
    for y in yt:
        _, Y = px(x0, y)
        draw.line([(left, Y), (left + pw, Y)], fill=(230, 230, 230), width=1)
        label = '{:g}'.format(y)
        tw, th = _text_size(draw, label, small)
        draw.text((left - tw - 8, Y - th / 2 - 2), label, fill=(60, 60, 60), font=small)
    draw.rectangle([left, top, left + pw, top + ph], outline=(80, 80, 80), width=1)
    tw, _ = _text_size(draw, title, font)
    draw.text((left + (pw - tw) / 2, 15), title, fill=(0, 0, 0), font=font)
    tw, _ = _text_size(draw, xlabel, font)
    draw.text((left + (pw - tw) / 2, height - 35), xlabel, fill=(0, 0, 0), font=font)
    tw, th = _text_size(draw, ylabel, font)
    label_img = Image.new('RGBA', (tw + 4, th + 8), (255, 255, 255, 0))
    ImageDraw.Draw(label_img).text((2, 0), ylabel, fill=(0, 0, 0), font=font)
    label_img = label_img.rotate(90, expand=True)
    img.paste(label_img, (12, int(top + (ph - label_img.size[1]) / 2)), label_img)

    for s in series:
        color = s['color']
        if len(s['band']) >= 2:
            upper = [px(x, hi) for x, _, hi in s['band']]
            lower = [px(x, lo) for x, lo, _ in reversed(s['band'])]
            draw.polygon(upper + lower, fill=color + (45,))
        for line in s['seeds']:
            points = [px(x, y) for x, y in line]
            if len(points) >= 2:
                draw.line(points, fill=color + (110,), width=1)
        points = [px(x, y) for x, y in s['mean']]
        if len(points) >= 2:
            draw.line(points, fill=color + (255,), width=3, joint='curve')
        for X, Y in points:
            draw.ellipse([X - 4, Y - 4, X + 4, Y + 4], fill=color + (255,))
    ly = top + 5
    for s in series:
        lx = left + pw + 18
        draw.line([(lx, ly + 9), (lx + 28, ly + 9)], fill=s['color'] + (255,), width=3)
        draw.text((lx + 36, ly), s['name'], fill=(0, 0, 0), font=small)
        ly += 24
    img.save(path, format='PNG')

SAMPLES_FILE = 'samples.png'
SAMPLES_PER_METHOD = 12


def _image_row(G, count):
    """`count` images of G (uint8 HWC, RGB), z from seeds 0..count-1 as generate.py draws them;
    conditional networks cycle through the classes."""
    import numpy as np
    import torch
    images = []
    with torch.no_grad():
        for i in range(count):
            z = torch.from_numpy(np.random.RandomState(i).randn(1, G.z_dim)).to(torch.float32)
            c = torch.zeros([1, G.c_dim])
            if G.c_dim:
                c[0, i % G.c_dim] = 1
            img = G(z, c, noise_mode='const')
            img = (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
            images.append(np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[:, :, :3])
    return images


def draw_samples(cfg, summary, path, count=SAMPLES_PER_METHOD):
    """One row per method: images of the final snapshot of its first finished seed (G_ema), the same
    latents in every row, so the methods can be compared by eye. Returns the rows' descriptions."""
    from PIL import Image, ImageDraw
    rows = []
    for method in cfg.methods:
        run = next((r for r in summary['runs'] if r['method'] == method and 'final' in r), None)
        if run is None:
            continue
        snap = run['snapshots'][-1]
        pkl = os.path.join(cfg.run_dir(method, run['seed'], 'snapshots'), snap['name'])
        G, _ = load_generator(pkl, 'cpu')
        rows.append((dict(method=method, seed=run['seed'], kimg=snap['kimg'], snapshot=os.path.relpath(pkl, cfg.outdir)),
                     _image_row(G, count)))
    if not rows:
        return []
    res = max(img.shape[0] for _, images in rows for img in images)
    cell = max(64, min(res, 128))
    label_w, pad, font = 250, 4, _font(14)
    canvas = Image.new('RGB', (label_w + count * (cell + pad) + pad, len(rows) * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (info, images) in enumerate(rows):
        y = pad + r * (cell + pad)
        text = '{}\nseed {}, {:g} kimg'.format(info['method'], info['seed'], info['kimg'])
        draw.multiline_text((8, y + cell / 2 - 18), text, fill=(0, 0, 0), font=font, spacing=4)
        for i, img in enumerate(images):
            tile = Image.fromarray(img, 'RGB').resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (label_w + pad + i * (cell + pad), y))
    canvas.save(path, format='PNG')
    return [info for info, _ in rows]


def data_name(path):
    """A dataset's short name for titles: the file or folder name."""
    return os.path.basename(os.path.normpath(path)) if os.sep in str(path) else str(path)


def draw_plots(cfg, summary):
    plots = []
    runs_by_method = {}
    for run in summary['runs']:
        if 'final' in run:
            runs_by_method.setdefault(run['method'], []).append(run)
    for axis, xlabel, suffix in (('kimg', 'kimg', 'kimg'), ('seconds', 'training wall-clock (s)', 'time')):
        series = []
        for i, (method, summ) in enumerate(summary['methods'].items()):
            runs = runs_by_method.get(method, [])
            if not runs:
                continue
            curve = summ['curve']
            series.append(dict(
                name='{} (n={})'.format(method, len(runs)), color=PALETTE[i % len(PALETTE)],
                mean=[(c[axis], c['mean']) for c in curve],
                band=[(c[axis], c['mean'] - c['std'], c['mean'] + c['std']) for c in curve if c['std'] is not None],
                seeds=[[(s[axis], s['value']) for s in run['snapshots']] for run in runs] if len(runs) > 1 else []))
        if not series:
            continue
        name = '{}_vs_{}.png'.format(safe_name(cfg.metric), suffix)
        title = '{} vs {} on {} (mean over seeds)'.format(cfg.metric, xlabel.split(' (')[0], data_name(cfg.data))
        draw_chart(os.path.join(cfg.outdir, name), series, xlabel, cfg.metric, title)
        plots.append(dict(file=name, x=axis, title=title))
    return plots
