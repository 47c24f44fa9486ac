"""training.augment: the ADA augment pipe (transforms, statistics, gradients, pickles)."""
import ast
import inspect
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import persistence
from training import augment
from training.augment import AugmentPipe, augpipe_specs

GROUPS = dict(
    blit={'xflip', 'rotate90', 'xint'},
    geom={'scale', 'rotate', 'aniso', 'xfrac'},
    color={'brightness', 'contrast', 'lumaflip', 'hue', 'saturation'},
    filter={'imgfilter'},
    noise={'noise'},
    cutout={'cutout'},
)
SINGLE = sorted(set().union(*GROUPS.values()))


def make_pipe(p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.copy_(torch.as_tensor(p))
    return pipe


def rand_images(n, c=3, h=16, w=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand([n, c, h, w], generator=g, dtype=dtype) * 2 - 1)


def normal_quantile(q):
    return math.sqrt(2) * float(torch.erfinv(torch.tensor(2 * q - 1, dtype=torch.float64)))


def blob(h=32, w=32, sx=2.0, sy=2.0, cx=None, cy=None):
    """A Gaussian bump on a -1 background, centred on the image centre by default
    (between the middle pixels for even sizes)."""
    cx = w / 2 if cx is None else cx
    cy = h / 2 if cy is None else cy
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    bump = torch.exp(-((xs[None, :] - cx) ** 2) / (2 * sx ** 2) - ((ys[:, None] - cy) ** 2) / (2 * sy ** 2))
    return bump * 2 - 1


def moments(img):
    """Centroid and second central moments of (img + 1) for [N, 1, H, W] images."""
    m = (img[:, 0] + 1).clamp(min=0)
    h, w = m.shape[1:]
    xs = torch.arange(w, dtype=m.dtype) + 0.5
    ys = torch.arange(h, dtype=m.dtype) + 0.5
    mass = m.sum(dim=(1, 2))
    mx = (m * xs[None, None, :]).sum(dim=(1, 2)) / mass
    my = (m * ys[None, :, None]).sum(dim=(1, 2)) / mass
    vx = (m * (xs[None, None, :] - mx[:, None, None]) ** 2).sum(dim=(1, 2)) / mass
    vy = (m * (ys[None, :, None] - my[:, None, None]) ** 2).sum(dim=(1, 2)) / mass
    return mx, my, vx, vy

# Filters


def test_sym6_is_orthonormal_with_six_vanishing_moments():
    h = np.array(augment.SYM6_LOWPASS)
    assert len(h) == 12
    assert h.sum() == pytest.approx(np.sqrt(2), abs=1e-10)
    assert np.square(h).sum() == pytest.approx(1, abs=1e-10)
    for shift in range(1, 6):                      # orthogonal to its even shifts
        assert abs(np.dot(h[:-2 * shift], h[2 * shift:])) < 1e-10
    k = np.arange(12, dtype=np.float64)
    g = h[::-1] * (-1) ** k                        # matching high-pass
    for m in range(6):
        assert abs(np.dot(g, (k - 5.5) ** m)) < 1e-7 * 6 ** m
    assert abs(np.dot(g, (k - 5.5) ** 6)) > 1.0    # exactly six, so this is a 6-moment wavelet
    # Least asymmetric, unlike db6: its energy sits near the middle taps.
    assert np.argmax(np.abs(h)) in (5, 6)


def test_db2_closed_form():
    h = augment.daubechies2_lowpass()
    assert h.sum() == pytest.approx(np.sqrt(2))
    assert np.square(h).sum() == pytest.approx(1)
    assert np.dot(h[:2], h[2:]) == pytest.approx(0, abs=1e-12)
    g = h[::-1] * np.array([1, -1, 1, -1])
    assert np.dot(g, np.arange(4.0)) == pytest.approx(0, abs=1e-12)


def test_octave_filter_bank_partitions_the_spectrum():
    bank = augment.octave_filter_bank(augment.daubechies2_lowpass())
    assert bank.shape[0] == 4 and bank.shape[1] % 2 == 1
    centre = bank.shape[1] // 2
    delta = np.zeros(bank.shape[1])
    delta[centre] = 1
    np.testing.assert_allclose(bank.sum(axis=0), delta, atol=1e-12)      # bands sum to identity
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-12)          # zero phase
    taps = np.arange(bank.shape[1]) - centre
    freqs = np.array([0.0, 3 * np.pi / 16, 3 * np.pi / 8, 3 * np.pi / 4, np.pi])  # octave centres
    response = np.real(np.exp(-1j * np.outer(freqs, taps)) @ bank.T)    # [freq, band]
    assert response[0, 0] == pytest.approx(1) and response[-1, 3] == pytest.approx(1)
    assert list(np.argmax(response[:4], axis=1)) == [0, 1, 2, 3]         # each octave has its band
    assert np.allclose(response.sum(axis=1), 1)

# Presets, construction


def test_presets_resolve_to_upstream_groups():
    assert set(augpipe_specs) == {'blit', 'geom', 'color', 'filter', 'noise', 'cutout',
                                  'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc'}
    for name, keys in GROUPS.items():
        assert augpipe_specs[name] == {k: 1 for k in keys}
    expect = set()
    for name, group in [(None, 'blit'), ('bg', 'geom'), ('bgc', 'color'), ('bgcf', 'filter'),
                        ('bgcfn', 'noise'), ('bgcfnc', 'cutout')]:
        expect |= GROUPS[group]
        if name is not None:
            assert augpipe_specs[name] == {k: 1 for k in expect}, name
    sig = inspect.signature(AugmentPipe.__init__)
    for spec in augpipe_specs.values():
        assert set(spec) <= set(sig.parameters)
        pipe = AugmentPipe(**spec)
        assert pipe.p.shape == () and float(pipe.p) == 1


def test_constructor_signature_matches_contract():
    sig = inspect.signature(AugmentPipe.__init__)
    defaults = {k: v.default for k, v in sig.parameters.items() if k != 'self'}
    assert defaults == dict(
        xflip=0, rotate90=0, xint=0, xint_max=0.125, scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2,
        rotate_max=1, aniso_std=0.2, xfrac_std=0.125, brightness=0, contrast=0, lumaflip=0, hue=0,
        saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1, imgfilter=0,
        imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1, noise=0, cutout=0, noise_std=0.1, cutout_size=0.5)
    assert list(defaults) == list(sig.parameters)[1:]


def test_p_is_a_buffer_the_loop_can_set():
    pipe = AugmentPipe(**augpipe_specs['bgc'])
    assert 'p' in dict(pipe.named_buffers())
    pipe.p.copy_(torch.as_tensor(0.25))
    assert float(pipe.state_dict()['p']) == 0.25

# Identity


@pytest.mark.parametrize('channels', [1, 3])
def test_p_zero_is_exact_identity(channels):
    pipe = make_pipe(0.0, **augpipe_specs['bgcfnc'])
    x = rand_images(8, c=channels)
    torch.manual_seed(1)
    assert torch.equal(pipe(x), x)


def test_neutral_percentile_is_identity_for_non_blit_transforms():
    # At the median every magnitude is neutral (no shift, unit gains, zero angles).
    names = ['scale', 'rotate', 'aniso', 'xfrac', 'brightness', 'contrast', 'saturation', 'hue', 'imgfilter']
    pipe = make_pipe(1.0, **{k: 1 for k in names})
    x = rand_images(4)
    assert torch.equal(pipe(x, debug_percentile=0.5), x)


def test_resampling_path_reconstructs_an_untransformed_image():
    pipe = make_pipe(1.0, scale=1)
    x = rand_images(2, h=16, w=20)
    mats = torch.eye(3).expand(2, 3, 3)
    out = pipe._resample(x, mats, [7, 7, 7, 7], 3)
    assert (out - x).abs().max() < 1e-4

# Pixel blitting


@pytest.mark.parametrize('p, expect', [(1.0, 0.5), (0.5, 0.25)])
def test_xflip_mirrors_exactly_with_probability_half_p(p, expect):
    torch.manual_seed(2)
    x = rand_images(400)
    out = make_pipe(p, xflip=1)(x)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert mirrored.float().mean().item() == pytest.approx(expect, abs=0.08)


def test_rotate90_gives_exact_quarter_turns():
    torch.manual_seed(3)
    x = rand_images(400)
    out = make_pipe(1.0, rotate90=1)(x)
    counts = torch.zeros(4)
    for k in range(4):
        match = (out == torch.rot90(x, k, dims=(2, 3))).flatten(1).all(1)
        counts[k] = match.float().sum()
    assert counts.sum() == 400
    assert ((counts / 400 - 0.25).abs() < 0.08).all(), counts


def test_xint_is_an_integer_shift_of_the_reflect_padded_image():
    torch.manual_seed(4)
    n, size = 64, 16
    x = rand_images(n, h=size, w=size)
    out = make_pipe(1.0, xint=1)(x)
    r = round(0.125 * size)
    padded = F.pad(x, [r, r, r, r], mode='reflect')
    shifts = []
    for i in range(n):
        found = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
                 if torch.equal(out[i], padded[i, :, r - dy:r - dy + size, r - dx:r - dx + size])]
        assert len(found) == 1, i
        shifts.append(found[0])
    shifts = np.array(shifts)
    assert (np.abs(shifts) > 0).any(axis=1).mean() > 0.6      # most images actually move
    assert set(shifts[:, 0]) >= {-r, r} and set(shifts[:, 1]) >= {-r, r}
    # Content moves towards +x for the top percentile.
    out = make_pipe(1.0, xint=1)(x[:1], debug_percentile=1.0)
    assert torch.equal(out[0, :, r:, r:], x[0, :, :-r, :-r])

# General geometry


def test_geometry_keeps_a_centred_blob_centred():
    torch.manual_seed(5)
    x = blob(sx=2.5, sy=2.5)[None, None].repeat(16, 1, 1, 1)
    out = make_pipe(1.0, scale=1, rotate=1, aniso=1)(x)
    assert (out - x).abs().amax(dim=(1, 2, 3)).min() > 1e-2        # every image was transformed
    mx, my, _, _ = moments(out)
    assert (mx - 16).abs().max() < 0.05 and (my - 16).abs().max() < 0.05


def test_scale_magnifies_by_the_lognormal_quantile():
    x = blob(sx=2.5, sy=2.5)[None, None]
    _, _, vx0, vy0 = moments(x)
    for q in (0.1, 0.9):
        out = make_pipe(1.0, scale=1)(x, debug_percentile=q)
        _, _, vx, vy = moments(out)
        factor = 2 ** (normal_quantile(q) * 0.2)
        assert (vx / vx0).sqrt().item() == pytest.approx(factor, rel=0.03)
        assert (vy / vy0).sqrt().item() == pytest.approx(factor, rel=0.03)


def test_rotation_turns_an_elongated_blob():
    x = blob(sx=4.0, sy=1.5)[None, None]
    _, _, vx0, vy0 = moments(x)
    # Each of the two rotations turns by (2q - 1) * pi: a quarter turn in total at q = 0.625.
    out = make_pipe(1.0, rotate=1)(x, debug_percentile=0.625)
    mx, my, vx, vy = moments(out)
    assert vx.item() == pytest.approx(vy0.item(), rel=0.05) and vy.item() == pytest.approx(vx0.item(), rel=0.05)
    assert abs(mx.item() - 16) < 0.05 and abs(my.item() - 16) < 0.05
    # A full turn in total is the identity up to resampling.
    out = make_pipe(1.0, rotate=1)(x, debug_percentile=1.0)
    assert (out - x).abs().max() < 1e-3


def test_aniso_stretches_x_and_squeezes_y():
    x = blob(sx=2.5, sy=2.5)[None, None]
    _, _, vx0, vy0 = moments(x)
    out = make_pipe(1.0, aniso=1)(x, debug_percentile=0.9)
    _, _, vx, vy = moments(out)
    factor = 2 ** (normal_quantile(0.9) * 0.2)
    assert (vx / vx0).sqrt().item() == pytest.approx(factor, rel=0.03)
    assert (vy / vy0).sqrt().item() == pytest.approx(1 / factor, rel=0.03)


def test_xfrac_moves_content_by_the_normal_quantile():
    x = blob(sx=2.0, sy=2.0)[None, None]
    out = make_pipe(1.0, xfrac=1)(x, debug_percentile=0.8)
    mx, my, _, _ = moments(out)
    shift = normal_quantile(0.8) * 0.125 * 32
    assert mx.item() == pytest.approx(16 + shift, abs=0.05)
    assert my.item() == pytest.approx(16 + shift, abs=0.05)


def test_geometry_reflects_instead_of_leaking_black_borders():
    # A constant image stays constant under any transform thanks to reflect padding.
    torch.manual_seed(6)
    x = torch.full([8, 3, 16, 16], 0.7)
    out = make_pipe(1.0, **augpipe_specs['bg'])(x)
    assert (out - 0.7).abs().max() < 1e-4

# Colour


def test_brightness_shift_has_the_configured_std():
    torch.manual_seed(7)
    x = torch.zeros([4000, 3, 4, 4])
    out = make_pipe(1.0, brightness=1)(x)
    shift = out[:, 0, 0, 0]
    assert torch.allclose(out, shift[:, None, None, None].expand_as(out), atol=1e-6)  # uniform per image
    assert shift.std().item() == pytest.approx(0.2, rel=0.06)
    assert abs(shift.mean().item()) < 0.02


def test_contrast_scales_deviations_by_a_lognormal():
    torch.manual_seed(8)
    x = rand_images(2000, h=4, w=4)
    out = make_pipe(1.0, contrast=1)(x)
    ratio = out.flatten(1) / x.flatten(1)
    ratio_per_image = ratio.median(dim=1).values
    assert torch.allclose(ratio, ratio_per_image[:, None].expand_as(ratio), rtol=1e-4, atol=1e-4)
    log_gain = torch.log2(ratio_per_image)
    assert log_gain.std().item() == pytest.approx(0.5, rel=0.06)
    assert abs(log_gain.mean().item()) < 0.04


def test_lumaflip_negates_luma_and_keeps_chroma():
    torch.manual_seed(9)
    x = rand_images(400)
    out = make_pipe(1.0, lumaflip=1)(x)
    luma_in, luma_out = x.mean(1, keepdim=True), out.mean(1, keepdim=True)
    assert torch.allclose(out - luma_out, x - luma_in, atol=1e-5)
    flipped = torch.isclose(luma_out, -luma_in, atol=1e-5).flatten(1).all(1)
    kept = torch.equal
    assert all(flipped[i] or kept(out[i], x[i]) for i in range(400))
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.08)


def test_hue_and_saturation_keep_luma():
    torch.manual_seed(10)
    x = rand_images(64)
    luma_in = x.mean(1)
    chroma_in = x - x.mean(1, keepdim=True)

    out = make_pipe(1.0, hue=1)(x)
    chroma_out = out - out.mean(1, keepdim=True)
    assert torch.allclose(out.mean(1), luma_in, atol=1e-5)
    assert torch.allclose(chroma_out.norm(dim=1), chroma_in.norm(dim=1), atol=1e-5)   # a rotation
    assert (out - x).abs().amax(dim=(1, 2, 3)).median() > 0.1

    out = make_pipe(1.0, saturation=1)(x)
    chroma_out = out - out.mean(1, keepdim=True)
    assert torch.allclose(out.mean(1), luma_in, atol=1e-5)
    gain = chroma_out.norm(dim=1).flatten(1).sum(1) / chroma_in.norm(dim=1).flatten(1).sum(1)
    assert torch.allclose(chroma_out, chroma_in * gain[:, None, None, None], atol=1e-4)
    assert (gain - 1).abs().max() > 0.1


def test_saturation_gain_is_lognormal():
    torch.manual_seed(11)
    x = rand_images(2000, h=2, w=2)
    out = make_pipe(1.0, saturation=1)(x)
    chroma_in = x - x.mean(1, keepdim=True)
    chroma_out = out - out.mean(1, keepdim=True)
    gain = chroma_out.flatten(1).norm(dim=1) / chroma_in.flatten(1).norm(dim=1)
    assert torch.log2(gain).std().item() == pytest.approx(1.0, rel=0.06)


def test_colour_on_grey_images():
    x = rand_images(4, c=1)
    # Hue and saturation do nothing to grey.
    out = make_pipe(1.0, hue=1, saturation=1)(x, debug_percentile=0.9)
    assert torch.allclose(out, x, atol=1e-5)
    # Luma flip negates it; brightness adds the same offset as for RGB.
    assert torch.allclose(make_pipe(1.0, lumaflip=1)(x, debug_percentile=0.9), -x, atol=1e-5)
    offset = normal_quantile(0.9) * 0.2
    assert torch.allclose(make_pipe(1.0, brightness=1)(x, debug_percentile=0.9), x + offset, atol=1e-5)
    with pytest.raises(ValueError):
        make_pipe(1.0, brightness=1)(rand_images(2, c=2))

# Filtering and corruptions


def test_imgfilter_is_a_per_image_separable_filter():
    torch.manual_seed(12)
    pipe = make_pipe(1.0, imgfilter=1)
    x = rand_images(8)
    out = pipe(x)
    assert (out - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    # Constant images stay constant (each filter is a scaled low-pass at DC).
    const = torch.full([8, 3, 16, 16], 0.5)
    out = pipe(const)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out), atol=1e-5)
    # Boosting only the top band leaves low frequencies relatively weaker than high ones.
    pipe = make_pipe(1.0, imgfilter=1, imgfilter_bands=[0, 0, 0, 1])
    checker = (torch.arange(16)[None, :] + torch.arange(16)[:, None]) % 2 * 2.0 - 1
    img = torch.stack([checker * 0.5 + 0.3] * 3)[None]
    out = pipe(img, debug_percentile=0.9)
    gain = 2 ** normal_quantile(0.9)
    norm = math.sqrt((13 - 1 + gain ** 2) / 13)
    # The 1-D filter runs along x and along y: the checkerboard (top band on both axes)
    # is scaled by (gain / norm)^2, the mean (bottom band) by norm^-2.
    hi = (out - out.mean()).abs().mean() / 0.5
    lo = out.mean() / 0.3
    assert hi.item() == pytest.approx((gain / norm) ** 2, rel=0.02)
    assert lo.item() == pytest.approx(norm ** -2, rel=0.02)


def test_noise_adds_the_configured_std():
    torch.manual_seed(13)
    x = torch.full([2000, 3, 8, 8], 0.2)
    out = make_pipe(1.0, noise=1)(x)
    resid = out - x
    per_image = resid.flatten(1).std(dim=1)
    # sigma_i = |N(0, 0.1)|: E[sigma^2] = 0.01 and E[sigma] = 0.1 * sqrt(2 / pi).
    assert per_image.square().mean().sqrt().item() == pytest.approx(0.1, rel=0.06)
    assert per_image.mean().item() == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.06)
    assert abs(resid.mean().item()) < 1e-3


def test_cutout_zeros_a_rectangle_of_the_configured_size():
    x = torch.ones([1, 3, 16, 16])
    out = make_pipe(1.0, cutout=1)(x, debug_percentile=0.5)
    expect = torch.ones_like(x)
    expect[:, :, 4:12, 4:12] = 0
    assert torch.equal(out, expect)

    torch.manual_seed(14)
    x = torch.ones([200, 1, 16, 16])
    out = make_pipe(1.0, cutout=1, cutout_size=0.25)(x)
    zero = out[:, 0] == 0
    rows, cols = zero.any(2), zero.any(1)
    assert torch.equal(zero, rows[:, :, None] & cols[:, None, :])          # an axis-aligned rectangle
    h, w = rows.sum(1), cols.sum(1)
    assert (h <= 4).all() and (w <= 4).all() and (h >= 2).all() and (w >= 2).all()
    assert (h == 4).float().mean() > 0.5                                    # full size unless clipped

# Gradients


@pytest.mark.parametrize('name', SINGLE)
def test_gradients_flow_to_the_input(name):
    torch.manual_seed(15)
    x = rand_images(4).requires_grad_()
    weights = torch.randn([4, 3, 16, 16])
    out = make_pipe(1.0, **{name: 1})(x)
    (out * weights).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.abs().flatten(1).sum(1) > 0).all()


class TinyD(torch.nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        y = F.softplus(self.conv(x))
        return self.fc(y.mean(dim=(2, 3)))


def test_r1_through_bgc_has_second_derivatives():
    torch.manual_seed(16)
    pipe = make_pipe(0.8, **augpipe_specs['bgc'])
    d = TinyD()
    x = rand_images(6).requires_grad_()
    logits = d(pipe(x))
    (grad,) = torch.autograd.grad(logits.sum(), [x], create_graph=True)
    penalty = grad.square().sum(dim=(1, 2, 3)).mean()
    penalty.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Every D parameter that shapes the input gradient gets a finite, non-zero gradient
    # (the output bias does not shape it).
    for param in [d.conv.weight, d.conv.bias, d.fc.weight]:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_double_backward_matches_finite_differences():
    # Fixed draws (a percentile) make the pipe a deterministic linear map; composed with a
    # smooth D, gradgradcheck compares autograd's second derivatives with finite differences.
    torch.manual_seed(17)
    pipe = make_pipe(1.0, **augpipe_specs['bgc'])
    d = TinyD().double()
    x = rand_images(1, h=8, w=8, dtype=torch.float64).requires_grad_()

    def f(img):
        return d(pipe(img, debug_percentile=0.3))

    # fast_mode compares random projections of the Jacobians (full ones take minutes on CPU).
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x,), eps=1e-6, atol=1e-5, fast_mode=True)

# Pickles


def test_pickle_roundtrip_through_persistence():
    pipe = make_pipe(0.3, **augpipe_specs['bgcfnc'])
    assert persistence.is_persistent(pipe)
    data = pickle.dumps(pipe)
    assert b'_reconstruct_persistent_obj' in data
    loaded = pickle.loads(data)
    assert type(loaded).__name__ == 'AugmentPipe'
    assert float(loaded.p) == pytest.approx(0.3)
    assert loaded.init_kwargs == augpipe_specs['bgcfnc']
    x = rand_images(2)
    torch.manual_seed(18)
    a = pipe(x, debug_percentile=0.7)
    torch.manual_seed(18)
    b = loaded(x, debug_percentile=0.7)
    assert torch.equal(a, b)


def test_embedded_source_runs_as_a_fresh_module():
    src = type(AugmentPipe())._orig_module_src
    module = persistence._src_to_module(src + '\n# a distinct copy\n')
    assert module is not augment
    fresh = module.AugmentPipe(**augpipe_specs['bgc'])
    x = rand_images(2)
    ref = AugmentPipe(**augpipe_specs['bgc'])
    assert torch.equal(fresh(x, debug_percentile=0.2), ref(x, debug_percentile=0.2))


def test_module_imports_only_what_pickles_may_need():
    tree = ast.parse(inspect.getsource(augment))
    allowed = {'numpy', 'scipy.signal', 'torch', 'torch_utils', 'torch_utils.ops'}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= allowed
        elif isinstance(node, ast.ImportFrom):
            assert node.module in allowed and node.level == 0
            if node.module == 'torch_utils':
                assert {a.name for a in node.names} <= {'persistence', 'misc'}
            if node.module == 'torch_utils.ops':
                assert {a.name for a in node.names} <= {'upfirdn2d', 'grid_sample_gradfix', 'conv2d_gradfix'}
