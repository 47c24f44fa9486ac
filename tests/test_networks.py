"""training.networks: sizes and names that official pickles rely on, every
train.py --cfg preset building and training on CPU, and the behaviours the
rest of the harness relies on (noise modes, truncation, conditioning,
Freeze-D, fp16-on-CPU, minibatch stddev)."""
import copy
import re

import numpy as np
import pytest
import torch

import dnnlib
from training import cfg_specs
from training import networks

# Published reference sizes (docs/CONTRACT.md).
PAPER256_G_PARAMS = 24_767_458
PAPER256_D_PARAMS = 24_001_089


def build(cfg, res, c_dim=0, img_channels=3, gpus=1):
    """Build G and D for a train.py preset exactly as train.py would."""
    spec = cfg_specs.resolve_cfg(cfg, res, gpus)
    kw = cfg_specs.network_kwargs(spec, cfg, c_dim=c_dim, img_resolution=res, img_channels=img_channels)
    G = dnnlib.util.construct_class_by_name(**kw.G_kwargs)
    D = dnnlib.util.construct_class_by_name(**kw.D_kwargs)
    return spec, kw, G, D


def tiny_G(res=32, c_dim=0, **synthesis_kwargs):
    synthesis_kwargs = {**dict(channel_base=512, channel_max=32), **synthesis_kwargs}
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=synthesis_kwargs)


def tiny_D(res=32, c_dim=0, **kwargs):
    kwargs = {**dict(channel_base=512, channel_max=32), **kwargs}
    return networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, **kwargs)


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def set_noise_strength(G, value):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(value)


@pytest.fixture(scope='module')
def paper256():
    torch.manual_seed(0)
    return build('paper256', 256)

# Reference sizes and names.

def test_paper256_parameter_counts(paper256):
    _spec, _kw, G, D = paper256
    assert num_params(G) == PAPER256_G_PARAMS
    assert num_params(D) == PAPER256_D_PARAMS
    assert G.num_ws == 14 and G.z_dim == 512 and G.w_dim == 512
    assert (G.img_resolution, G.img_channels, G.c_dim) == (256, 3, 0)


def test_paper256_parameter_names(paper256):
    _spec, _kw, G, D = paper256
    resolutions = [2 ** i for i in range(2, 9)]
    layer = ['weight', 'bias', 'affine.weight', 'affine.bias', 'noise_strength']
    rgb = ['weight', 'bias', 'affine.weight', 'affine.bias']
    expected = {f'mapping.fc{i}.{p}' for i in range(8) for p in ['weight', 'bias']}
    expected.add('synthesis.b4.const')
    for res in resolutions:
        convs = ['conv1'] if res == 4 else ['conv0', 'conv1']
        expected |= {f'synthesis.b{res}.{c}.{p}' for c in convs for p in layer}
        expected |= {f'synthesis.b{res}.torgb.{p}' for p in rgb}
    assert {n for n, _ in G.named_parameters()} == expected

    g_buffers = {n for n, _ in G.named_buffers()}
    assert 'mapping.w_avg' in g_buffers
    for res in resolutions:
        convs = ['conv1'] if res == 4 else ['conv0', 'conv1']
        for c in convs:
            assert f'synthesis.b{res}.{c}.noise_const' in g_buffers
            assert tuple(G.get_submodule(f'synthesis.b{res}.{c}').noise_const.shape) == (res, res)

    expected = {'b256.fromrgb.weight', 'b256.fromrgb.bias'}
    for res in resolutions[1:]:
        expected |= {f'b{res}.{c}.{p}' for c in ['conv0', 'conv1'] for p in ['weight', 'bias']}
        expected.add(f'b{res}.skip.weight')
    expected |= {f'b4.{l}.{p}' for l in ['conv', 'fc', 'out'] for p in ['weight', 'bias']}
    assert {n for n, _ in D.named_parameters()} == expected
    assert isinstance(D.b4.mbstd, networks.MinibatchStdLayer)
    assert D.b4.mbstd.group_size == 8
    assert tuple(D.b4.out.weight.shape) == (1, 512)


def test_conditional_D_has_mapping_and_projection():
    D = tiny_D(c_dim=5)
    names = {n for n, _ in D.named_parameters()}
    assert {'mapping.embed.weight', 'mapping.embed.bias', 'mapping.fc0.weight'} <= names
    cmap_dim = D.b4.out.out_features
    assert cmap_dim == D.b4.in_channels  # Default cmap_dim = channels at 4x4.
    assert not hasattr(D.mapping, 'w_avg')

    # The logit is the projection of the epilogue's output onto cmap.
    captured = {}
    D.b4.out.register_forward_hook(lambda m, i, o: captured.__setitem__('out', o))
    D.mapping.register_forward_hook(lambda m, i, o: captured.__setitem__('cmap', o))
    img = torch.randn(4, 3, 32, 32)
    c = torch.eye(5)[[0, 1, 2, 3]]
    logits = D(img, c)
    assert logits.shape == (4, 1)
    ref = (captured['out'] * captured['cmap']).sum(dim=1, keepdim=True) / np.sqrt(cmap_dim)
    torch.testing.assert_close(logits, ref)

    D2 = tiny_D(c_dim=5, cmap_dim=7)
    assert D2.b4.out.out_features == 7 and D2(img, c).shape == (4, 1)

# The train.py presets.

def test_resolve_cfg_auto_formulas():
    for res in [32, 64, 128, 256, 512, 1024]:
        for gpus in [1, 2, 8]:
            spec = cfg_specs.resolve_cfg('auto', res, gpus)
            assert all(v != -1 for v in spec.values())
            assert spec.ref_gpus == gpus
            assert gpus <= spec.mb <= max(64, gpus)
            assert spec.mbstd == min(spec.mb // gpus, 4)
            assert spec.fmaps == (1 if res >= 512 else 0.5)
            assert np.isclose(spec.gamma * spec.mb / res ** 2, 0.0002)
            assert np.isclose(spec.ema * 32 / spec.mb, 10)
    spec = cfg_specs.resolve_cfg('paper256', 64, 4)
    assert spec == cfg_specs.cfg_specs['paper256']
    spec.mb = 1  # resolve_cfg hands out copies.
    assert cfg_specs.cfg_specs['paper256']['mb'] != 1
    with pytest.raises(ValueError, match='unknown cfg'):
        cfg_specs.resolve_cfg('nope', 64)
    with pytest.raises(ValueError, match='power of two'):
        cfg_specs.resolve_cfg('auto', 48)


# (cfg, resolution, batch). Full-width networks are costly on CPU, so batches
# are tiny; auto at 256/512/1024 is covered by its paper twin (see below).
# paper1024's run (about a CPU-minute, more than all the others together) is `long`: in `make test`,
# test_paper1024_is_paper512_one_block_up builds its networks, checks them as below and shows that they
# are built from paper512's kwargs out of the same kinds of layer, so paper512's run goes through the
# same code.
FULL_RUNS = [
    ('auto', 32, 2), ('auto', 64, 2), ('auto', 128, 1), ('stylegan2', 32, 2), ('cifar', 32, 2),
    pytest.param('paper256', 256, 1, marks=pytest.mark.slow),
    pytest.param('paper512', 512, 1, marks=pytest.mark.slow),
    pytest.param('paper1024', 1024, 1, marks=pytest.mark.long),
]


def check_cfg_networks(cfg, res, spec, kw, G, D):
    """What a preset's spec says about its built G and D."""
    assert G.num_ws == 2 * int(np.log2(res)) - 2
    assert G.synthesis.get_submodule(f'b{res}').conv1.out_channels == min(int(spec.fmaps * 32768) // res, 512)
    assert sum(1 for n, _ in G.mapping.named_children() if n.startswith('fc')) == spec.map
    assert D.b4.mbstd.group_size == spec.mbstd
    assert D.b4.architecture == ('orig' if cfg == 'cifar' else 'resnet')
    if cfg == 'cifar':
        assert kw.loss_kwargs.pl_weight == 0 and kw.loss_kwargs.style_mixing_prob == 0
        assert hasattr(G.mapping, 'embed') and hasattr(D, 'mapping')


@pytest.mark.parametrize('cfg,res,batch', FULL_RUNS)
def test_cfg_forward_backward(cfg, res, batch):
    torch.manual_seed(1)
    c_dim = 10 if cfg == 'cifar' else 0
    spec, kw, G, D = build(cfg, res, c_dim=c_dim)
    check_cfg_networks(cfg, res, spec, kw, G, D)

    z = torch.randn(batch, G.z_dim)
    c = torch.eye(c_dim)[torch.arange(batch) % c_dim] if c_dim else torch.zeros(batch, 0)
    img = G(z, c)
    assert img.shape == (batch, 3, res, res) and img.dtype == torch.float32
    logits = D(img, c)
    assert logits.shape == (batch, 1) and logits.dtype == torch.float32
    logits.sum().backward()
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None, f'{name} got no gradient'
        assert torch.isfinite(p.grad).all(), name


def test_paper1024_is_paper512_one_block_up():
    """The default suite's part of paper1024 (its forward/backward above is `long`): its networks
    match its spec, and they are built from paper512's network kwargs but for the resolution and the
    minibatch-stddev group, out of the same kinds of layer (class and every flag that picks a code path:
    architecture, fp16, ...). So the paper512 forward/backward above runs the code that paper1024's
    would; the 1024 blocks are more of the same."""
    torch.manual_seed(1)
    spec, kw, G, D = build('paper1024', 1024)
    check_cfg_networks('paper1024', 1024, spec, kw, G, D)
    _spec, kw512, G512, D512 = build('paper512', 512)

    def differing(kwargs):
        out = copy.deepcopy(dict(kwargs))
        del out['img_resolution']
        out.get('epilogue_kwargs', {}).pop('mbstd_group_size', None)
        return out
    assert differing(kw.G_kwargs) == differing(kw512.G_kwargs)
    assert differing(kw.D_kwargs) == differing(kw512.D_kwargs)

    def kinds(net):
        """Every layer's class with its flags (bool and str attributes)."""
        return {(type(m).__name__,) + tuple(sorted((k, v) for k, v in vars(m).items()
                                                  if not k.startswith('_') and isinstance(v, (bool, str))))
                for m in net.modules()}
    assert kinds(G) == kinds(G512)
    assert kinds(D) == kinds(D512)


@pytest.mark.parametrize('res,twin', [(256, 'paper256'), (512, 'paper512'), (1024, 'paper1024')])
def test_auto_big_matches_paper_architecture(res, twin):
    """auto at 256/512/1024 differs from the paper preset only in mapping depth
    and mbstd group, so the full-size run above covers its synthesis and D;
    here: same tensor names/shapes elsewhere, and its own mapping runs."""
    _s, _k, G, D = build('auto', res)
    _s, _k, G2, D2 = build(twin, res)

    def shapes(m, skip_mapping):
        return {n: tuple(t.shape) for n, t in list(m.named_parameters()) + list(m.named_buffers())
                if not (skip_mapping and n.startswith('mapping.'))}
    assert shapes(G, True) == shapes(G2, True)
    assert shapes(D, False) == shapes(D2, False)
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    assert ws.shape == (2, G.num_ws, G.w_dim)
    ws.square().mean().backward()
    assert all(p.grad is not None for p in G.mapping.parameters())

# Generator behaviour.

def test_num_ws_and_shape_assertions():
    for res in [4, 8, 32]:
        G = tiny_G(res)
        assert G.num_ws == G.synthesis.num_ws == max(2 * int(np.log2(res)) - 2, 2)
    G = tiny_G(32)
    with pytest.raises(AssertionError):
        G.synthesis(torch.randn(2, G.num_ws + 1, G.w_dim))
    with pytest.raises(AssertionError):
        G.mapping(torch.randn(2, G.z_dim + 1), None)


def test_noise_modes():
    torch.manual_seed(2)
    G = tiny_G().eval()
    set_noise_strength(G, 0.5)
    z = torch.randn(2, G.z_dim)
    const_a = G(z, None, noise_mode='const')
    const_b = G(z, None, noise_mode='const')
    rand_a = G(z, None, noise_mode='random')
    rand_b = G(z, None, noise_mode='random')
    none = G(z, None, noise_mode='none')
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(const_a, none)
    set_noise_strength(G, 0.0)  # With zero strength every mode is the noiseless image.
    torch.testing.assert_close(G(z, None, noise_mode='random'), none)
    torch.testing.assert_close(G(z, None, noise_mode='const'), none)
    with pytest.raises(AssertionError):
        G(z, None, noise_mode='bogus')


def test_fused_and_unfused_modconv_agree():
    torch.manual_seed(3)
    G = tiny_G().eval()
    set_noise_strength(G, 0.3)
    z = torch.randn(3, G.z_dim)
    fused = G(z, None, noise_mode='const', fused_modconv=True)
    unfused = G(z, None, noise_mode='const', fused_modconv=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)


def test_truncation_and_w_avg():
    torch.manual_seed(4)
    G = tiny_G().eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    w_avg = G.mapping.w_avg.clone()
    z = torch.randn(3, G.z_dim)
    ws = G.mapping(z, None)
    torch.testing.assert_close(G.mapping(z, None, truncation_psi=0), w_avg.expand_as(ws))
    torch.testing.assert_close(G.mapping(z, None, truncation_psi=0.7), w_avg + 0.7 * (ws - w_avg))
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], w_avg + 0.5 * (ws[:, :2] - w_avg))
    torch.testing.assert_close(cut[:, 2:], ws[:, 2:])
    img = G(z, None, truncation_psi=0, noise_mode='const')  # Every sample collapses to the average.
    torch.testing.assert_close(img[0], img[1])
    assert torch.equal(G.mapping.w_avg, w_avg)  # Eval mode never updates w_avg.

    G.train()
    G.mapping(z, None, skip_w_avg_update=True)
    assert torch.equal(G.mapping.w_avg, w_avg)
    w = G.mapping(z, None)[:, 0].detach()
    beta = G.mapping.w_avg_beta
    torch.testing.assert_close(G.mapping.w_avg, beta * w_avg + (1 - beta) * w.mean(0))


def test_conditional_mapping():
    torch.manual_seed(5)
    G = tiny_G(c_dim=4).eval()
    assert tuple(G.mapping.embed.weight.shape) == (G.w_dim, 4)
    assert G.mapping.fc0.in_features == G.z_dim + G.w_dim
    with torch.no_grad():
        G.mapping.embed.bias.zero_()
    z = torch.randn(4, G.z_dim)
    c = torch.eye(4)
    ws = G.mapping(z, c)
    assert not torch.allclose(ws[0], G.mapping(z, c.roll(1, dims=0))[0])
    # z and the embedded c are both normalised, so their scale does not matter.
    torch.testing.assert_close(G.mapping(3 * z, 5 * c), ws, rtol=1e-5, atol=1e-5)
    img = G(z, c)
    assert img.shape == (4, 3, 32, 32)
    with pytest.raises(AssertionError):
        G.mapping(z, torch.zeros(4, 3))


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_generator_architectures(architecture):
    G = tiny_G(architecture=architecture)
    blocks = [G.synthesis.get_submodule(f'b{r}') for r in G.synthesis.block_resolutions]
    assert all(hasattr(b, 'torgb') == (architecture == 'skip' or b.is_last) for b in blocks)
    assert all(hasattr(b, 'skip') == (architecture == 'resnet' and b.in_channels > 0) for b in blocks)
    img = G(torch.randn(2, G.z_dim), None)
    img.square().mean().backward()
    assert img.shape == (2, 3, 32, 32)

# Discriminator behaviour.

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_discriminator_architectures(architecture):
    D = tiny_D(architecture=architecture)
    for res in D.block_resolutions:
        block = D.get_submodule(f'b{res}')
        assert hasattr(block, 'fromrgb') == (architecture == 'skip' or res == D.img_resolution)
        assert hasattr(block, 'skip') == (architecture == 'resnet')
    assert hasattr(D.b4, 'fromrgb') == (architecture == 'skip')
    img = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits = D(img, None)
    assert logits.shape == (4, 1)
    torch.autograd.grad(logits.sum(), [img])


def layer_order(D):
    """D's Conv2dLayers in input-to-output order, as Freeze-D counts them."""
    order = []
    for res in D.block_resolutions:
        for name in ['fromrgb', 'conv0', 'conv1', 'skip']:
            if hasattr(D.get_submodule(f'b{res}'), name):
                order.append(f'b{res}.{name}')
    return order


@pytest.mark.parametrize('freeze', [0, 1, 4, 6])
def test_freeze_d(freeze):
    torch.manual_seed(6)
    D_ref = tiny_D()
    D = tiny_D(block_kwargs=dict(freeze_layers=freeze))
    order = layer_order(D)
    frozen, live = order[:freeze], order[freeze:]
    params = {n for n, _ in D.named_parameters()}
    buffers = {n for n, _ in D.named_buffers()}
    for layer in frozen:
        assert not any(p.startswith(layer + '.') for p in params), layer
        assert f'{layer}.weight' in buffers
    for layer in live:
        assert f'{layer}.weight' in params
    assert {n for n, _ in D_ref.named_parameters()} - params == \
        {n for n, _ in D_ref.named_parameters() if any(n.startswith(l + '.') for l in frozen)}
    # Same tensors under the same names, so weights copy across either way.
    ref_tensors = dict(D_ref.named_parameters()) | dict(D_ref.named_buffers())
    assert set(ref_tensors) == params | buffers
    logits = D(torch.randn(4, 3, 32, 32), None)
    logits.sum().backward()
    assert all(p.grad is not None for p in D.parameters())
    assert all(b.grad is None and not b.requires_grad for n, b in D.named_buffers())


def reference_mbstd(x, group):
    """Loop-based minibatch stddev: sample i is in group i mod (N / group)."""
    N = x.shape[0]
    n_groups = N // group
    out = torch.empty(N, 1, *x.shape[2:])
    for g in range(n_groups):
        members = [i for i in range(N) if i % n_groups == g]
        std = x[members].std(dim=0, unbiased=False).mean()
        out[members] = std
    return torch.cat([x, out], dim=1)


def test_minibatch_std():
    torch.manual_seed(7)
    x = torch.randn(8, 6, 4, 4)
    torch.testing.assert_close(networks.MinibatchStdLayer(4)(x), reference_mbstd(x, 4), rtol=1e-5, atol=1e-4)
    # Group larger than the batch: the whole batch is one group; None means the same.
    torch.testing.assert_close(networks.MinibatchStdLayer(32)(x), reference_mbstd(x, 8), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(networks.MinibatchStdLayer(None)(x), reference_mbstd(x, 8), rtol=1e-5, atol=1e-4)
    # A group size that does not divide the batch falls back to a divisor of it.
    x6 = x[:6]
    torch.testing.assert_close(networks.MinibatchStdLayer(4)(x6), networks.MinibatchStdLayer(3)(x6))
    # Several stddev channels: one per channel group.
    y = networks.MinibatchStdLayer(4, num_channels=2)(x)
    assert y.shape == (8, 8, 4, 4)
    torch.testing.assert_close(y[:, 6:7], reference_mbstd(x[:, :3], 4)[:, 3:])
    torch.testing.assert_close(y[:, 7:8], reference_mbstd(x[:, 3:], 4)[:, 3:])
    # The epilogue works for odd batch sizes too.
    D = tiny_D(epilogue_kwargs=dict(mbstd_group_size=4))
    assert D(torch.randn(3, 3, 32, 32), None).shape == (3, 1)

# Precision.

def test_fp16_decision_is_cuda_only():
    assert networks._pick_dtype(True, torch.device('cpu')) == torch.float32
    assert networks._pick_dtype(True, torch.device('cuda')) == torch.float16
    assert networks._pick_dtype(True, torch.device('cuda'), force_fp32=True) == torch.float32
    assert networks._pick_dtype(False, torch.device('cuda')) == torch.float32


def block_dtypes(model, prefix):
    """Record the dtype of every block's feature output during the next forward."""
    seen = {}
    for name, module in model.named_modules():
        if re.fullmatch(prefix + r'b\d+', name) and not isinstance(module, networks.DiscriminatorEpilogue):
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o[0].dtype))
    return seen


def test_fp16_layers_run_fp32_on_cpu():
    torch.manual_seed(8)
    G16 = tiny_G(num_fp16_res=2, conv_clamp=256, fp16_channels_last=True).eval()
    G32 = tiny_G(num_fp16_res=0, conv_clamp=256).eval()
    G32.load_state_dict(G16.state_dict())
    assert [G16.synthesis.get_submodule(f'b{r}').use_fp16 for r in G16.synthesis.block_resolutions] == \
        [False, False, True, True]
    seen = block_dtypes(G16, 'synthesis.')
    z = torch.randn(2, G16.z_dim)
    img = G16(z, None, noise_mode='const')
    assert img.dtype == torch.float32
    assert set(seen.values()) == {torch.float32} and len(seen) == 4
    # Same numbers as an all-fp32 network (NHWC weights may pick another kernel).
    torch.testing.assert_close(img, G32(z, None, noise_mode='const'), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(G16(z, None, noise_mode='const', force_fp32=True), img, rtol=1e-5, atol=1e-5)

    D16 = tiny_D(num_fp16_res=2, conv_clamp=256, block_kwargs=dict(fp16_channels_last=True))
    D32 = tiny_D(num_fp16_res=0, conv_clamp=256)
    D32.load_state_dict(D16.state_dict())
    assert [D16.get_submodule(f'b{r}').use_fp16 for r in D16.block_resolutions] == [True, True, False]
    seen = block_dtypes(D16, '')
    logits = D16(img, None)
    assert logits.dtype == torch.float32 and set(seen.values()) == {torch.float32}
    torch.testing.assert_close(logits, D32(img, None), rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_fp16_layers_use_half_on_cuda():
    torch.manual_seed(9)
    G = tiny_G(num_fp16_res=2, conv_clamp=256).cuda().eval()
    D = tiny_D(num_fp16_res=2, conv_clamp=256).cuda()
    seen = block_dtypes(G, 'synthesis.')
    img = G(torch.randn(2, G.z_dim, device='cuda'), None)
    assert img.dtype == torch.float32
    assert seen['synthesis.b32'] == torch.float16 and seen['synthesis.b4'] == torch.float32
    assert D(img, None).dtype == torch.float32
    seen.clear()
    G(torch.randn(2, G.z_dim, device='cuda'), None, force_fp32=True)
    assert set(seen.values()) == {torch.float32}


def test_copy_between_configs_by_name():
    """Weights copy by name between differently configured networks."""
    torch.manual_seed(10)
    src = tiny_G()
    dst = tiny_G(num_fp16_res=4, conv_clamp=256)
    from torch_utils import misc
    misc.copy_params_and_buffers(src, dst, require_all=True)
    for (n1, t1), (n2, t2) in zip(sorted(src.state_dict().items()), sorted(dst.state_dict().items())):
        assert n1 == n2 and torch.equal(t1, t2)
    z = torch.randn(2, src.z_dim)
    torch.testing.assert_close(copy.deepcopy(src).eval()(z, None, noise_mode='const'),
                               dst.eval()(z, None, noise_mode='const'))
