"""FastGAN networks (kdgan_plugins.networks.fastgan): official parameter counts,
forward/backward at 64 and 256, the harness interface (mapping/synthesis,
noise modes, SLE style mixing), conditioning, the discriminator's extra
outputs, BatchNorm re-estimation and self-contained pickles."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import dnnlib
from kdgan_plugins.networks import fastgan
from helpers import run_pickle_child, torch_threads
from kdgan_plugins.networks.fastgan import Discriminator, Generator


def count(module):
    # The official code's count: sum over .parameters() (weight_orig counted; SN u/v are buffers).
    return sum(p.numel() for p in module.parameters())


def small_G(res=64, c_dim=0, **kwargs):
    """Narrow networks (ngf = ndf = 16) keep the CPU tests quick; the architecture is the same."""
    return Generator(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=res, img_channels=3, ngf=16, **kwargs)


def small_D(res=64, c_dim=0, **kwargs):
    return Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, ndf=16, **kwargs)


def randomise_noise_and_stats(G, seed=0):
    """Non-zero noise strengths and BN running statistics estimated for these weights, so that
    noise modes and eval mode have visible, well-scaled effects."""
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, fastgan.NoiseInjection):
                m.weight.fill_(0.3)
    G.recompute_bn_stats(num_batches=2, batch_size=8, seed=seed)
    return G


@pytest.fixture()
def one_thread():
    with torch_threads(1):
        yield

# Done-when 1: the official code's parameter counts.


@pytest.mark.parametrize('res, g_params, d_params', [
    (256, 29_127_846, 11_526_160),
    (512, 29_174_392, 11_526_496),
    (1024, 29_176_512, 11_528_192),
])
def test_official_parameter_counts(res, g_params, d_params):
    G = Generator(z_dim=256, c_dim=0, w_dim=256, img_resolution=res, img_channels=3, ngf=64)
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, ndf=64)
    assert count(G) == g_params
    assert count(D) == d_params
    assert count(G.mapping) == 0 and count(G.synthesis) == g_params
    # Parameters are SN weights (no conv bias anywhere), BN affine weights/biases and noise strengths.
    for net in (G, D):
        by_kind = {}
        for m in net.modules():
            kind = type(m).__name__ if isinstance(m, (fastgan.SNConv2d, torch.nn.BatchNorm2d,
                                                      fastgan.NoiseInjection)) else None
            if kind:
                names = tuple(sorted(n for n, _ in m.named_parameters(recurse=False)))
                by_kind.setdefault(kind, set()).add(names)
                by_kind.setdefault('_count', [0])[0] += sum(p.numel() for p in m.parameters(recurse=False))
        assert by_kind['SNConv2d'] == {('weight_orig',)} and by_kind['BatchNorm2d'] == {('bias', 'weight')}
        assert by_kind['_count'][0] == count(net)
    sn_layers = [m for m in list(G.modules()) + list(D.modules()) if isinstance(m, fastgan.SNConv2d)]
    assert sn_layers and all(not hasattr(m, 'bias') for m in sn_layers)
    assert all({n for n, _ in m.named_buffers()} == {'weight_u', 'weight_v'} for m in sn_layers)


def test_parameter_counts_of_smaller_resolutions_are_truncations():
    """64 and 128 are the 256 trunk stopped early: fewer parameters, growing with resolution."""
    counts = {res: (count(Generator(256, 0, 256, res, 3)), count(Discriminator(0, res, 3))) for res in (64, 128, 256)}
    assert counts[64][0] < counts[128][0] < counts[256][0]
    assert counts[64][1] < counts[128][1] < counts[256][1]


def test_official_init():
    G = Generator(z_dim=256, c_dim=0, w_dim=256, img_resolution=256, img_channels=3)
    conv_w = torch.cat([m.weight_orig.flatten() for m in G.modules() if isinstance(m, fastgan.SNConv2d)])
    assert abs(conv_w.mean().item()) < 1e-3 and abs(conv_w.std().item() - 0.02) < 1e-3
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_w = torch.cat([m.weight.flatten() for m in bns])
    assert abs(bn_w.mean().item() - 1) < 2e-3 and abs(bn_w.std().item() - 0.02) < 2e-3
    assert all(torch.count_nonzero(m.bias) == 0 for m in bns)
    noise = [m.weight for m in G.modules() if isinstance(m, fastgan.NoiseInjection)]
    assert len(noise) == 2 * 3 and all(w.numel() == 1 and w.item() == 0 for w in noise)  # UpComp at 8, 32, 128.


@pytest.mark.parametrize('transposed', [False, True])
def test_spectral_norm_normalises_the_largest_singular_value(transposed):
    torch.manual_seed(0)
    conv = fastgan.SNConv2d(6, 10, 3, 1, 1, transposed=transposed).train()
    for _ in range(30):
        w = conv.normalized_weight()
    dim = 1 if transposed else 0
    mat = w.detach().movedim(dim, 0).reshape(w.shape[dim], -1)
    assert torch.linalg.matrix_norm(mat, ord=2).item() == pytest.approx(1.0, abs=1e-3)
    # Eval mode uses the stored vectors unchanged.
    u = conv.weight_u.clone()
    conv.eval()(torch.randn(1, 6, 5, 5))
    assert torch.equal(conv.weight_u, u)

# Forward and backward on CPU, full width.


@pytest.mark.parametrize('res', [64, 256])
def test_forward_backward_full_width(res):
    torch.manual_seed(res)
    G = Generator(z_dim=256, c_dim=0, w_dim=256, img_resolution=res, img_channels=3).train()
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3).train()
    z = torch.randn(2, 256)
    img, aux = G(z, None, return_aux=True)
    assert img.shape == (2, 3, res, res) and aux.shape == (2, 3, min(res, 128), min(res, 128))
    fake_logits = D(img, None, img_small=aux)
    assert fake_logits.shape == (2, 50)
    real = torch.rand(2, 3, res, res) * 2 - 1
    real_logits, rec = D(real, None, recon=True)
    assert real_logits.shape == (2, 50)
    loss = F.relu(0.8 + fake_logits).mean() + F.relu(0.8 - real_logits).mean()
    loss = loss + sum(F.mse_loss(rec[k], rec['target_' + k]) for k in ('big', 'small', 'part'))
    loss.backward()
    for name, net in (('G', G), ('D', D)):
        for pname, p in net.named_parameters():
            assert p.grad is not None, f'{name}.{pname} got no gradient'
            assert torch.isfinite(p.grad).all(), f'{name}.{pname}'
    assert any(p.grad.abs().sum() > 0 for p in G.parameters())

# Structure at every resolution.


@pytest.mark.parametrize('res', [64, 128, 256, 512, 1024])
def test_structure_by_resolution(res):
    G = small_G(res)
    D = small_D(res)
    sle = {64: 4, 128: 8, 256: 16, 512: 32}
    assert G.synthesis.sle_sizes == [s for s in sle if s <= res]
    comp = {s: getattr(G.synthesis, f'feat_{s}').comp for s in G.synthesis.block_sizes}
    assert comp == {s: s in (8, 32, 128, 512) for s in (8, 16, 32, 64, 128, 256, 512, 1024) if s <= res}
    assert G.synthesis.output_tanh == (res == 1024)
    assert D.small_resolution == D.recon_resolution == min(res, 128)
    assert D.sle_sources == [s for s in (256, 128, 64) if s <= min(res, 256)]
    assert D.down_sizes[-1] == 8 and D.num_logits == 50


def test_lite_generator_has_only_plain_up_blocks():
    full, lite = small_G(128), small_G(128, lite=True)
    assert not any(isinstance(m, fastgan.NoiseInjection) for m in lite.modules())
    assert count(lite) < count(full)
    assert small_G(128, synthesis_kwargs=dict(lite=True)).synthesis.lite
    assert lite(torch.randn(2, 32), None).shape == (2, 3, 128, 128)

# The harness interface.


def test_generator_attributes_and_mapping():
    G = small_G(64)
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels, G.num_ws) == (32, 0, 32, 64, 3, 2)
    assert G.synthesis.num_ws == G.mapping.num_ws == 2 and G.synthesis.w_dim == G.mapping.w_dim == 32
    z = torch.randn(3, 32)
    ws = G.mapping(z, None)
    assert ws.shape == (3, 2, 32)
    assert torch.equal(ws[:, 0], z) and torch.equal(ws[:, 1], z)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    # Truncation toward the zero w_avg; the cutoff limits it to the first slots.
    torch.testing.assert_close(G.mapping(z, None, truncation_psi=0.5), 0.5 * ws)
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=1)
    torch.testing.assert_close(cut[:, 0], 0.5 * z)
    torch.testing.assert_close(cut[:, 1], z)
    assert G.mapping(z, None, skip_w_avg_update=True).shape == (3, 2, 32)


def test_forward_equals_mapping_then_synthesis():
    torch.manual_seed(0)
    G = randomise_noise_and_stats(small_G(128)).eval()
    z = torch.randn(2, 32)
    ws = G.mapping(z, None, truncation_psi=0.7)
    img = G.synthesis(ws, noise_mode='const')
    torch.testing.assert_close(G(z, None, truncation_psi=0.7, noise_mode='const'), img)
    img2, aux = G.synthesis(ws, noise_mode='const', return_aux=True)
    torch.testing.assert_close(img2, img)
    assert aux.shape == (2, 3, 128, 128)
    # force_fp32 is accepted (the tools pass it); unknown arguments are not.
    torch.testing.assert_close(G.synthesis(ws, noise_mode='const', force_fp32=True), img)
    # What projector.py uses: [H, W] noise_const buffers, gradients to ws built by repeat().
    bufs = {n: b for n, b in G.synthesis.named_buffers() if 'noise_const' in n}
    assert bufs and all(b.ndim == 2 and b.shape[0] == b.shape[1] for b in bufs.values())
    w_opt = torch.zeros(1, 1, 32, requires_grad=True)
    G.synthesis(w_opt.repeat(1, G.num_ws, 1), noise_mode='const').square().mean().backward()
    assert w_opt.grad.abs().sum() > 0
    with pytest.raises(TypeError):
        G.synthesis(ws, bogus=1)
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode='loud')


def test_const_noise_is_deterministic_and_modes_differ():
    torch.manual_seed(0)
    G = randomise_noise_and_stats(small_G(64)).eval()
    z = torch.randn(2, 32)
    a = G(z, None, noise_mode='const')
    b = G(z, None, noise_mode='const')
    assert torch.equal(a, b)
    # Per-sample: the batch does not matter in eval mode (up to float32 kernel differences).
    torch.testing.assert_close(G(z[:1], None, noise_mode='const'), a[:1], atol=1e-3, rtol=1e-3)
    r1, r2 = G(z, None, noise_mode='random'), G(z, None, noise_mode='random')
    assert not torch.allclose(r1, r2)
    assert not torch.allclose(G(z, None, noise_mode='none'), a)
    # A deep copy (what the loop's G_ema is) and a fresh RNG state give the same const output.
    torch.manual_seed(123)
    assert torch.equal(copy.deepcopy(G)(z, None, noise_mode='const'), a)


def test_style_mixing_through_sle():
    torch.manual_seed(1)
    G = randomise_noise_and_stats(small_G(128)).eval()
    za, zb = torch.randn(1, 32), torch.randn(1, 32)
    wa, wb = G.mapping(za, None), G.mapping(zb, None)
    img_a = G.synthesis(wa, noise_mode='const')
    img_b = G.synthesis(wb, noise_mode='const')
    # What style_mixing.py does: start from the content latent's ws, copy style index 1.
    mixed_ws = wa.clone()
    mixed_ws[:, 1] = wb[:, 1]
    mix = G.synthesis(mixed_ws, noise_mode='const')
    assert mix.shape == img_a.shape
    assert (mix - img_a).abs().mean() > 1e-4 and (mix - img_b).abs().mean() > 1e-4
    assert torch.equal(G.synthesis(mixed_ws.clone(), noise_mode='const'), mix)
    # Contiguous ws with equal slots take the one-pass path and equal G(z).
    torch.testing.assert_close(G.synthesis(wa.clone(), noise_mode='const'), img_a)
    # The mixed image is the content trunk excited by the other latent's SLE inputs:
    # with SLE inputs from b, only the layers after the first SLE target see b.
    swapped_back = mixed_ws.clone()
    swapped_back[:, 1] = wa[:, 1]
    torch.testing.assert_close(G.synthesis(swapped_back, noise_mode='const'), img_a)


def test_sle_inputs_come_from_the_style_latent():
    """With ws = [content, style], every SLE module reads the style latent's low-res trunk maps
    and excites the content latent's trunk."""
    torch.manual_seed(2)
    G = randomise_noise_and_stats(small_G(256)).eval()
    seen = {}

    def hook(name):
        def fn(module, inputs, output):
            seen[name] = (inputs[0].clone(), inputs[1].clone())
        return fn
    for s in (64, 128, 256):
        getattr(G.synthesis, f'se_{s}').register_forward_hook(hook(s))
    wa, wb = G.mapping(torch.randn(2, 32), None), G.mapping(torch.randn(2, 32), None)
    G.synthesis(wa, noise_mode='const')
    content = {s: v[0] for s, v in seen.items()}
    trunk_64 = seen[64][1]
    G.synthesis(wb, noise_mode='const')
    style = {s: v[0] for s, v in seen.items()}
    mixed = torch.stack([wa[:, 0], wb[:, 1]], dim=1)
    G.synthesis(mixed, noise_mode='const')
    for s in (64, 128, 256):
        torch.testing.assert_close(seen[s][0], style[s])
        assert not torch.allclose(seen[s][0], content[s])
    torch.testing.assert_close(seen[64][1], trunk_64)      # the trunk before the first SLE is the content's


def test_harness_kwargs():
    # Precision keys that --fp32 / --nhwc add are accepted and ignored.
    G = small_G(64, synthesis_kwargs=dict(num_fp16_res=0, conv_clamp=None, fp16_channels_last=True))
    D = small_D(64, num_fp16_res=0, conv_clamp=None, block_kwargs=dict(fp16_channels_last=True),
                epilogue_kwargs=dict(mbstd_group_size=4))
    assert G.img_resolution == D.img_resolution == 64
    with pytest.raises(TypeError):
        small_G(64, synthesis_kwargs=dict(channel_base=16384))
    with pytest.raises(TypeError):
        small_G(64, mapping_kwargs=dict(num_layers=2))
    with pytest.raises(ValueError):
        Generator(z_dim=32, c_dim=0, w_dim=512, img_resolution=64, img_channels=3)
    with pytest.raises(ValueError):
        small_G(16)   # 32 is the smallest size (issue 14 added it)
    with pytest.raises(ValueError):
        small_D(64, block_kwargs=dict(freeze_layers=2))
    # Built by class name, as the training loop does.
    G2 = dnnlib.util.construct_class_by_name(class_name='kdgan_plugins.networks.fastgan.Generator', z_dim=32,
                                             c_dim=0, w_dim=32, img_resolution=64, img_channels=3,
                                             synthesis_kwargs=dict(ngf=16))
    assert count(G2) == count(small_G(64))

# Conditioning.


def test_conditional_generator_and_discriminator():
    torch.manual_seed(3)
    G = randomise_noise_and_stats(small_G(64, c_dim=4)).eval()
    D = small_D(64, c_dim=4).eval()
    assert G.w_dim == 32 + 4 and G.mapping(torch.randn(2, 32), torch.eye(4)[:2]).shape == (2, 2, 36)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for m in G.modules())
    z = torch.randn(1, 32).repeat(2, 1)
    c = torch.eye(4)[[0, 2]]
    img = G(z, c, noise_mode='const')
    assert (img[0] - img[1]).abs().mean() > 1e-4          # Same z, different class.
    with pytest.raises(ValueError):
        G(z, None)
    # The label travels in ws, so G.synthesis alone (what the losses call) is conditional too.
    torch.testing.assert_close(G.synthesis(G.mapping(z, c), noise_mode='const'), img)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        D.embed.weight_orig.normal_(0, 1)
    D64 = copy.deepcopy(D).double()
    la, lb = D64(x.double(), torch.eye(4)[[0, 0]].double()), D64(x.double(), torch.eye(4)[[1, 1]].double())
    diff = la - lb                                         # Projection adds one value to all 50 logits.
    assert diff.abs().max() > 1e-5
    torch.testing.assert_close(diff, diff[:, :1].expand(-1, 50))
    with pytest.raises(ValueError):
        D(x, None)
    # Train mode: gradients reach the class embeddings of both networks.
    G.train(), D.train()
    D(G(z, c), c).mean().backward()
    bn = next(m for m in G.modules() if isinstance(m, fastgan.CondBatchNorm))
    assert bn.embed_weight.grad is not None and bn.embed_weight.grad.abs().sum() > 0
    assert D.embed.weight_orig.grad.abs().sum() > 0

# The discriminator's extra outputs.


def test_discriminator_outputs_and_recon_targets():
    torch.manual_seed(4)
    D = small_D(256).eval()
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    logits = D(x, None)
    assert logits.shape == (2, 50)
    # img_small=None means the nearest 128 resize of the input.
    torch.testing.assert_close(D(x, None, img_small=F.interpolate(x, size=128, mode='nearest')), logits)
    out, feat = D(x, None, features=True)
    torch.testing.assert_close(out, logits)
    assert feat.shape == (2, D.feature_dim) and D.feature_dim == 8 * 16
    out, feat2, rec = D(x, None, features=True, recon=True, part=1)
    torch.testing.assert_close(feat2, feat)
    for key in ('big', 'small', 'part', 'target_big', 'target_small', 'target_part'):
        assert rec[key].shape == (2, 3, 128, 128), key
    assert rec['big'].abs().max() <= 1                                     # tanh decoders
    assert rec['part_index'] == 1
    torch.testing.assert_close(rec['target_big'], F.interpolate(x, size=128, mode='nearest'))
    torch.testing.assert_close(rec['target_small'], rec['target_big'])
    top_right = x[:, :, :128, 128:]
    torch.testing.assert_close(rec['target_part'], top_right)              # already 128 px


def test_discriminator_recon_at_64_and_quadrants():
    torch.manual_seed(5)
    D = small_D(64)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    logits, rec = D(x, None, recon=True, part=3)
    assert logits.shape == (2, 50)
    assert all(rec[k].shape == (2, 3, 64, 64) for k in ('big', 'small', 'part', 'target_big', 'target_part'))
    torch.testing.assert_close(rec['target_big'], x)
    corners = {0: x[:, :, :32, :32], 1: x[:, :, :32, 32:], 2: x[:, :, 32:, :32], 3: x[:, :, 32:, 32:]}
    for part, corner in corners.items():
        target = D(x[:1], None, recon=True, part=part)[1]['target_part']
        torch.testing.assert_close(target, F.interpolate(corner[:1], size=64, mode='nearest'))
    drawn = {D(x[:1], None, recon=True)[1]['part_index'] for _ in range(8)}
    assert drawn <= {0, 1, 2, 3} and len(drawn) > 1
    with pytest.raises(ValueError):
        D(x, None, recon=True, part=4)

# BatchNorm statistics for G_ema.


def test_recompute_bn_stats():
    torch.manual_seed(5)
    G = randomise_noise_and_stats(small_G(64)).train()
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in bns]
    rng = torch.random.get_rng_state()
    G.recompute_bn_stats(num_batches=2, batch_size=4, seed=7)
    assert torch.equal(torch.random.get_rng_state(), rng)                  # global stream untouched
    assert G.training and all(bn.training for bn in bns) and all(bn.momentum == 0.1 for bn in bns)
    after = [bn.running_mean.clone() for bn in bns]
    assert all(not torch.equal(a, b) for a, b in zip(after, before))
    G.recompute_bn_stats(num_batches=2, batch_size=4, seed=7)
    assert all(torch.equal(bn.running_mean, a) for bn, a in zip(bns, after))
    # With one batch, the first BN's running mean is that batch's mean (cumulative average).
    G.eval().recompute_bn_stats(num_batches=1, batch_size=4, seed=9)
    assert not G.training
    z = torch.randn([4, 32], generator=torch.Generator().manual_seed(9))
    pre = G.synthesis.init.conv(z.reshape(4, 32, 1, 1))
    torch.testing.assert_close(G.synthesis.init.norm.bn.running_mean, pre.mean(dim=[0, 2, 3]))
    Gc = small_G(64, c_dim=3)
    Gc.recompute_bn_stats(num_batches=1, batch_size=4)
    Gc.recompute_bn_stats(num_batches=1, batch_size=4, c=torch.eye(3)[:1])

# Pickles.


def test_pickles_are_self_contained_and_reproduce_outputs(tmp_path, one_thread):
    torch.manual_seed(6)
    G = randomise_noise_and_stats(small_G(64, c_dim=2)).eval().requires_grad_(False)
    D = small_D(64, c_dim=2).eval().requires_grad_(False)
    raw = pickle.dumps(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None))
    assert b'kdgan_plugins' not in raw                                      # source embedded, not imported
    (tmp_path / 'net.pkl').write_bytes(raw)
    z = torch.randn(3, 32)
    c = torch.eye(2)[[0, 1, 1]]
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    torch.save(dict(z=z, c=c, x=x), tmp_path / 'inputs.pt')
    img, aux = G(z, c, noise_mode='const', return_aux=True)
    logits, feat, rec = D(x, c, features=True, recon=True, part=2)

    proc = run_pickle_child(tmp_path, 'kdgan_plugins', '''
        G, D = data["G_ema"], data["D"]
        assert type(G).__module__.startswith("_imported_module_"), type(G).__module__
        t = torch.load("inputs.pt")
        img, aux = G(t["z"], t["c"], noise_mode="const", return_aux=True)
        logits, feat, rec = D(t["x"], t["c"], features=True, recon=True, part=2)
        torch.save(dict(img=img, aux=aux, logits=logits, feat=feat, part=rec["part"]), "out.pt")
    ''')
    assert proc.returncode == 0, proc.stderr
    out = torch.load(tmp_path / 'out.pt')
    assert torch.equal(out['img'], img) and torch.equal(out['aux'], aux)
    assert torch.equal(out['logits'], logits) and torch.equal(out['feat'], feat)
    assert torch.equal(out['part'], rec['part'])


def test_bf16_autocast_runs_forward_and_backward():
    """Spectral norm under autocast: the power-iteration dot product must not mix fp32 and bf16."""
    G = fastgan.Generator(z_dim=32, c_dim=0, w_dim=None, img_resolution=64, img_channels=3, ngf=8)
    D = fastgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3, ndf=8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        img = G(torch.randn(2, 32), torch.zeros(2, 0))
        logits = D(img, torch.zeros(2, 0))
    logits.float().mean().backward()
    assert img.dtype == torch.bfloat16
    grads = [p.grad for p in list(G.parameters()) + list(D.parameters()) if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)
