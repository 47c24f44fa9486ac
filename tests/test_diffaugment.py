"""DiffAugment (kdgan_plugins.augment.diffaugment): each transform alone does what
docs/METHODS.md specifies, with parameters drawn per sample, gradients reach the
input (twice, for R1), `p` does not matter, and the pipe pickles."""
import io
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import dnnlib
from kdgan_plugins.augment.diffaugment import DiffAugment, parse_policy

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')
N = 16


def images(n=N, size=32, channels=3, seed=0, low=-1.0, high=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand([n, channels, size, size], generator=gen) * (high - low) + low


def run(policy, x, seed=1, **kwargs):
    torch.manual_seed(seed)
    return DiffAugment(policy, **kwargs)(x)


def test_policy_parsing():
    assert parse_policy('color,translation,cutout') == ('brightness', 'saturation', 'contrast', 'translation',
                                                         'cutout')
    assert parse_policy('') == () and parse_policy(None) == ()
    assert parse_policy(['translation', 'brightness']) == ('translation', 'brightness')
    with pytest.raises(ValueError):
        parse_policy('color,rotate')
    x = images()
    assert torch.equal(DiffAugment('')(x), x)


def test_brightness_adds_one_offset_per_sample_in_range():
    x = images()
    y = run('brightness', x)
    delta = y - x
    per_sample = delta.mean(dim=[1, 2, 3])
    torch.testing.assert_close(delta, per_sample.reshape(-1, 1, 1, 1).expand_as(delta))   # constant per image
    assert per_sample.min() >= -0.5 and per_sample.max() <= 0.5
    assert per_sample.unique().numel() == N                                              # per-sample draws
    assert per_sample.min() < -0.2 and per_sample.max() > 0.2                            # spans the range


def _factor(x, y, dims):
    """Least-squares f with y - m = f (x - m), m the mean over `dims`; also the fit residual."""
    m = x.mean(dim=dims, keepdim=True)
    xc = x - m
    f = (xc * (y - m)).sum(dim=[1, 2, 3]) / xc.square().sum(dim=[1, 2, 3])
    resid = (y - m - f.reshape(-1, 1, 1, 1) * xc).abs().max()
    return f, resid


def test_saturation_scales_around_the_channel_mean():
    x = images()
    y = run('saturation', x)
    torch.testing.assert_close(y.mean(dim=1), x.mean(dim=1))                 # channel mean kept per pixel
    f, resid = _factor(x, y, dims=[1])
    assert resid < 1e-5
    assert f.min() >= 0 and f.max() <= 2 and f.unique().numel() == N
    assert f.min() < 0.5 and f.max() > 1.5
    # A grey image has nothing to saturate.
    grey = images(channels=1).expand(-1, 3, -1, -1)
    torch.testing.assert_close(run('saturation', grey), grey)


def test_contrast_scales_around_the_image_mean():
    x = images()
    y = run('contrast', x)
    torch.testing.assert_close(y.mean(dim=[1, 2, 3]), x.mean(dim=[1, 2, 3]))
    f, resid = _factor(x, y, dims=[1, 2, 3])
    assert resid < 1e-5
    assert f.min() >= 0.5 and f.max() <= 1.5 and f.unique().numel() == N
    assert f.min() < 0.75 and f.max() > 1.25


def _find_shift(x, y, s):
    """The (dy, dx) in [-s, s]^2 with y[i, j] = x[i + dy, j + dx] inside and 0 outside, or None."""
    h, w = x.shape[-2:]
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            expected = torch.zeros_like(x)
            r0, r1 = max(0, -dy), min(h, h - dy)
            c0, c1 = max(0, -dx), min(w, w - dx)
            expected[:, r0:r1, c0:c1] = x[:, r0 + dy:r1 + dy, c0 + dx:c1 + dx]
            if torch.equal(expected, y):
                return dy, dx
    return None


@pytest.mark.parametrize('size', [32, 20])
def test_translation_is_an_integer_shift_of_at_most_an_eighth_with_zero_fill(size):
    x = images(n=24, size=size, low=0.1, high=1.0)           # no zeros in the content
    y = run('translation', x)
    s = int(size * 0.125 + 0.5)
    shifts = []
    for i in range(x.shape[0]):
        found = _find_shift(x[i], y[i], s)
        assert found is not None, f'sample {i} is not a zero-filled shift within +-{s}'
        shifts.append(found)
        # Content preserved: every non-zero output pixel is an input pixel of the same sample.
        assert torch.isin(y[i][y[i] != 0], x[i]).all()
    assert len(set(shifts)) > 5                               # per-sample shifts
    assert max(max(abs(dy), abs(dx)) for dy, dx in shifts) == s
    assert any(dy != dx for dy, dx in shifts)                 # independent axes
    # A larger ratio allows larger shifts.
    y_big = run('translation', x, translation_ratio=0.25)
    assert all(_find_shift(x[i], y_big[i], int(size * 0.25 + 0.5)) is not None for i in range(4))


@pytest.mark.parametrize('size', [32, 33])
def test_cutout_zeroes_a_half_size_square_clipped_at_the_border(size):
    x = images(n=48, size=size, low=0.1, high=1.0)
    y = run('cutout', x)
    side = int(size * 0.5 + 0.5)
    full, clipped, tops = 0, 0, set()
    for i in range(x.shape[0]):
        zero = (y[i] == 0).all(dim=0)                          # [H, W]
        assert torch.equal(zero, (y[i] == 0).any(dim=0))       # same square in every channel
        assert torch.equal(y[i][:, ~zero], x[i][:, ~zero])     # the rest untouched
        rows = zero.any(dim=1).nonzero().flatten()
        cols = zero.any(dim=0).nonzero().flatten()
        assert rows.numel() > 0 and cols.numel() > 0
        # A solid axis-aligned rectangle...
        assert zero[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert zero.sum() == rows.numel() * cols.numel()
        h, w = rows.numel(), cols.numel()
        assert h <= side and w <= side
        # ...of the full side unless it touches the border, and at least half visible.
        assert h == side or rows[0] == 0 or rows[-1] == size - 1
        assert w == side or cols[0] == 0 or cols[-1] == size - 1
        assert h >= side // 2 and w >= side // 2
        full += (h == side and w == side)
        clipped += (h < side or w < side)
        tops.add((int(rows[0]), int(cols[0])))
    assert full > 0 and clipped > 0 and len(tops) > 20


def test_full_policy_changes_every_sample_and_keeps_shape():
    x = images()
    y = run('color,translation,cutout', x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert ((y - x).abs().flatten(1).max(dim=1).values > 0.1).all()
    # Same seed, same output; another seed, another output.
    assert torch.equal(run('color,translation,cutout', x, seed=3), run('color,translation,cutout', x, seed=3))
    assert not torch.equal(run('color,translation,cutout', x, seed=3), run('color,translation,cutout', x, seed=4))


def test_gradients_reach_the_input_including_second_order():
    x = images(n=4).requires_grad_(True)
    pipe = DiffAugment()
    torch.manual_seed(0)
    y = pipe(x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Translation alone: each input pixel's gradient counts how often it is copied (0 or 1).
    x.grad = None
    torch.manual_seed(0)
    DiffAugment('translation')(x).sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() > 0
    # R1 needs the gradient of D(aug(x)) with respect to x, differentiated again.
    conv = torch.nn.Conv2d(3, 1, 3)
    torch.manual_seed(1)
    score = conv(pipe(x)).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    grad.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_p_is_kept_for_the_loop_but_does_not_change_behaviour():
    pipe = DiffAugment()
    assert 'p' in dict(pipe.named_buffers()) and pipe.p.shape == () and float(pipe.p) == 1.0
    x = images()
    torch.manual_seed(5)
    a = pipe(x)
    pipe.p.copy_(torch.as_tensor(0.0))                          # what the loop does with --p / ADA
    torch.manual_seed(5)
    assert torch.equal(pipe(x), a)
    assert 'p' in pipe.state_dict()


def test_pickles_and_builds_by_name(tmp_path):
    pipe = dnnlib.util.construct_class_by_name(class_name='kdgan_plugins.augment.diffaugment.DiffAugment',
                                               policy='color,translation', translation_ratio=0.25)
    raw = pickle.dumps(pipe)
    assert b'_reconstruct_persistent_obj' in raw and b'kdgan_plugins' not in raw
    loaded = pickle.load(io.BytesIO(raw))
    assert loaded.policy == 'color,translation' and loaded.translation_ratio == 0.25
    assert loaded.init_kwargs == dict(policy='color,translation', translation_ratio=0.25)
    x = images()
    torch.manual_seed(2)
    expected = pipe(x)
    torch.manual_seed(2)
    assert torch.equal(loaded(x), expected)

    # In a fresh interpreter where kdgan_plugins cannot be imported, the embedded source runs.
    (tmp_path / 'pipe.pkl').write_bytes(raw)
    torch.save(x, tmp_path / 'x.pt')
    (tmp_path / 'kdgan_plugins').mkdir()
    (tmp_path / 'kdgan_plugins' / '__init__.py').write_text('raise ImportError("kdgan_plugins is shadowed")\n')
    child = textwrap.dedent('''
        import pickle, torch
        with open("pipe.pkl", "rb") as f:
            pipe = pickle.load(f)
        assert type(pipe).__module__.startswith("_imported_module_"), type(pipe).__module__
        torch.manual_seed(2)
        torch.save(pipe(torch.load("x.pt")), "y.pt")
    ''')
    env = dict(os.environ, PYTHONPATH=HARNESS)
    proc = subprocess.run([sys.executable, '-c', child], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert torch.equal(torch.load(tmp_path / 'y.pt'), expected)
