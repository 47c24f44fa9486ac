"""The distillation student: StudentHead and the KDDiscriminator wrapper around StyleGAN2's and
FastGAN's discriminators (logits unchanged, features, gradients, pickles, names)."""
import copy
import os
import pickle
import subprocess
import sys

import pytest
import torch

import dnnlib
from kdgan_plugins.networks.student import KDDiscriminator, SNLinear, StudentHead

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KD_CLASS = 'kdgan_plugins.networks.student.KDDiscriminator'
SG2_CLASS = 'training.networks.Discriminator'
FASTGAN_CLASS = 'kdgan_plugins.networks.fastgan.Discriminator'

# name -> (backbone class, resolution, backbone kwargs, feature width of the backbone)
BACKBONES = {
    'stylegan2': (SG2_CLASS, 32, dict(channel_base=512, channel_max=32), 32),
    'fastgan': (FASTGAN_CLASS, 64, dict(ndf=4), 32),
}


def _build(name, c_dim=0, seed=0, student_dim=24, student_hidden=40):
    cls, res, kwargs, _ = BACKBONES[name]
    torch.manual_seed(seed)
    kd = dnnlib.util.construct_class_by_name(class_name=KD_CLASS, c_dim=c_dim, img_resolution=res, img_channels=3,
                                             backbone_class_name=cls, student_dim=student_dim,
                                             student_hidden=student_hidden, **kwargs)
    torch.manual_seed(seed)
    plain = dnnlib.util.construct_class_by_name(class_name=cls, c_dim=c_dim, img_resolution=res, img_channels=3,
                                                **kwargs)
    return kd, plain


def _inputs(name, c_dim=0, n=4, seed=1):
    res = BACKBONES[name][1]
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn([n, 3, res, res], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(n) % c_dim, c_dim).float() if c_dim else torch.zeros([n, 0])
    return img, c

# StudentHead.


def test_student_head_shapes_defaults_and_formula():
    head = StudentHead(64)
    assert (head.in_features, head.hidden, head.out_features) == (64, 1024, 512)
    shapes = {name: tuple(p.shape) for name, p in head.named_parameters()}
    assert shapes == {'fc1.weight_orig': (1024, 64), 'fc1.bias': (1024,),
                      'fc2.weight_orig': (512, 1024), 'fc2.bias': (512,)}
    assert {name for name, _ in head.named_buffers()} == {'fc1.weight_u', 'fc1.weight_v', 'fc2.weight_u', 'fc2.weight_v'}
    # Eval mode: two affine maps with spectrally normalised weights, no activation between.
    small = StudentHead(8, out_features=5, hidden=6).eval()
    x = torch.randn(7, 8)

    def sn(layer):
        return layer.weight_orig / torch.dot(layer.weight_u, layer.weight_orig @ layer.weight_v)

    want = (x @ sn(small.fc1).t() + small.fc1.bias) @ sn(small.fc2).t() + small.fc2.bias
    assert torch.allclose(small(x), want, atol=1e-6)
    with pytest.raises(ValueError):
        small(torch.randn(7, 9))


def test_spectral_norm_converges_to_unit_largest_singular_value():
    layer = SNLinear(20, 30)
    with torch.no_grad():
        layer.weight_orig.mul_(5)
    layer.train()
    x = torch.randn(3, 20)
    for _ in range(100):
        layer(x)
    sigma = torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2)
    assert abs(float(sigma) - 1) < 1e-3
    assert abs(float(torch.linalg.matrix_norm(layer.weight_orig.detach(), ord=2)) - 1) > 0.5


def test_student_head_runs_in_float32():
    head = StudentHead(8, out_features=4, hidden=6)
    out = head(torch.randn(3, 8, dtype=torch.float16))
    assert out.dtype == torch.float32

# KDDiscriminator.


@pytest.mark.parametrize('name', ['stylegan2', 'fastgan'])
@pytest.mark.parametrize('c_dim', [0, 3])
def test_logits_equal_the_backbone_bitwise(name, c_dim):
    kd, plain = _build(name, c_dim=c_dim)
    img, c = _inputs(name, c_dim)
    for mode in ['train', 'eval']:
        kd.train(mode == 'train')
        plain.train(mode == 'train')
        logits = kd(img, c)
        assert isinstance(logits, torch.Tensor)
        assert torch.equal(logits, plain(img, c)), mode
        # Second calls (in train mode spectral norm advances its power iteration on both alike).
        with_features = kd(img, c, features=True)
        assert isinstance(with_features, tuple) and len(with_features) == 2
        assert torch.equal(with_features[0], plain(img, c)), mode


@pytest.mark.parametrize('name', ['stylegan2', 'fastgan'])
def test_feature_source_and_student_embedding(name):
    kd, _ = _build(name, c_dim=3, student_dim=24)
    kd.eval()
    img, c = _inputs(name, 3)
    logits, s = kd(img, c, features=True)
    assert s.shape == (4, 24) and s.dtype == torch.float32
    assert kd.feature_dim == BACKBONES[name][3] and kd.student.in_features == kd.feature_dim
    if name == 'stylegan2':
        assert kd.feature_source == 'b4.fc'
        captured = []
        handle = kd.backbone.b4.fc.register_forward_hook(lambda m, i, o: captured.append(o))
        kd.backbone(img, c)
        handle.remove()
        feat = captured[0]
    else:
        assert kd.feature_source == 'features'
        feat = kd.backbone(img, c, features=True)[1]
    assert torch.equal(s, kd.student(feat))
    # The temporary hook is gone after every call.
    assert all(len(m._forward_hooks) == 0 for m in kd.modules())


def test_fastgan_recon_passthrough_and_order():
    kd, plain = _build('fastgan')
    kd.eval()
    plain.eval()
    img, c = _inputs('fastgan')
    logits, rec = kd(img, c, recon=True, part=2)
    want_logits, want_rec = plain(img, c, recon=True, part=2)
    assert torch.equal(logits, want_logits) and torch.equal(rec['big'], want_rec['big'])
    out = kd(img, c, features=True, recon=True, part=2)
    assert len(out) == 3
    assert torch.equal(out[0], want_logits) and out[1].shape == (4, 24)
    assert isinstance(out[2], dict) and out[2]['part_index'] == 2 and torch.equal(out[2]['part'], want_rec['part'])


@pytest.mark.parametrize('name', ['stylegan2', 'fastgan'])
def test_gradients_from_the_student_loss_reach_backbone_and_head(name):
    kd, _ = _build(name)
    img, c = _inputs(name)
    _, s = kd(img, c, features=True)
    s.square().sum().backward()
    for pname, p in kd.student.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    grads = {pname: p.grad for pname, p in kd.backbone.named_parameters()}
    if name == 'stylegan2':
        reached = ['b4.fc.weight', 'b32.fromrgb.weight', 'b16.conv1.weight']
        assert grads['b4.out.weight'] is None  # after the penultimate feature
    else:
        reached = ['stem.0.weight_orig', 'down_8.conv1.weight_orig']
        assert grads['rf_small.weight_orig'] is None  # the small path is not under the feature
    for pname in reached:
        assert grads[pname] is not None and grads[pname].abs().sum() > 0, pname


@pytest.mark.parametrize('name', ['stylegan2', 'fastgan'])
def test_parameter_name_layout(name):
    kd, plain = _build(name, c_dim=2)
    names = [n for n, _ in kd.named_parameters()]
    assert all(n.startswith(('backbone.', 'student.')) for n in names)
    assert [n[len('backbone.'):] for n in names if n.startswith('backbone.')] == [n for n, _ in plain.named_parameters()]
    assert [n for n in names if n.startswith('student.')] == [
        'student.fc1.weight_orig', 'student.fc1.bias', 'student.fc2.weight_orig', 'student.fc2.bias']
    buffers = [n for n, _ in kd.named_buffers()]
    assert [n[len('backbone.'):] for n in buffers if n.startswith('backbone.')] == [n for n, _ in plain.named_buffers()]
    # One optimiser over D's parameters trains the head too.
    assert len(list(kd.parameters())) == len(list(plain.parameters())) + 4


def test_construction_by_class_name_and_attribute_passthrough():
    kd, plain = _build('stylegan2', c_dim=2)
    assert type(kd).__name__ == 'KDDiscriminator' and isinstance(kd, KDDiscriminator)
    assert (kd.c_dim, kd.img_resolution, kd.img_channels) == (2, 32, 3)
    assert kd.block_resolutions == plain.block_resolutions == [32, 16, 8]
    assert kd.b4 is kd.backbone.b4
    fast, _ = _build('fastgan')
    assert fast.num_logits == 50 and fast.recon_resolution == 64
    with pytest.raises(AttributeError):
        _ = kd.no_such_attribute
    with pytest.raises(ValueError, match='no sub-module'):
        KDDiscriminator(0, 32, 3, feature_source='b4.nope', channel_base=512, channel_max=32)


def test_explicit_feature_module_measures_its_width():
    """A sub-module without `out_features` (a conv) is measured by one dry run; its output is flattened."""
    torch.manual_seed(0)
    kd = KDDiscriminator(0, 32, 3, feature_source='b4.conv', student_dim=8, student_hidden=16,
                         channel_base=512, channel_max=32)
    assert kd.feature_dim == 32 * 4 * 4
    img, c = _inputs('stylegan2')
    _, s = kd(img, c, features=True)
    assert s.shape == (4, 8)


@pytest.mark.parametrize('name', ['stylegan2', 'fastgan'])
def test_deepcopy_keeps_outputs(name):
    kd, _ = _build(name)
    kd.eval()
    img, c = _inputs(name)
    twin = copy.deepcopy(kd).eval()
    for a, b in zip(kd(img, c, features=True), twin(img, c, features=True)):
        assert torch.equal(a, b)


def test_pickle_round_trip_in_a_fresh_process_without_the_plugins(tmp_path):
    """D's pickle carries the wrapper, the head and the backbone: a fresh process that cannot import
    kdgan_plugins at all loads it and reproduces the outputs bit for bit (both backbones)."""
    for name in BACKBONES:
        kd, _ = _build(name, c_dim=3)
        kd.eval()
        img, c = _inputs(name, 3)
        logits, s = kd(img, c, features=True)
        with open(tmp_path / f'{name}.pkl', 'wb') as f:
            pickle.dump(kd, f)
        torch.save(dict(img=img, c=c, logits=logits, s=s), tmp_path / f'{name}.pt')
    code = (
        'import sys, pickle, torch\n'
        'sys.path.insert(0, {harness!r})\n'
        'sys.modules["kdgan_plugins"] = None  # not importable here\n'
        'for name in {names!r}:\n'
        '    with open(name + ".pkl", "rb") as f:\n'
        '        D = pickle.load(f)\n'
        '    io = torch.load(name + ".pt")\n'
        '    logits, s = D(io["img"], io["c"], features=True)\n'
        '    assert type(D).__name__ == "KDDiscriminator", type(D)\n'
        '    assert torch.equal(logits, io["logits"]) and torch.equal(s, io["s"]), name\n'
        '    assert torch.equal(D(io["img"], io["c"]), io["logits"]), name\n'
        '    print("ROUNDTRIP_OK", name, D.feature_source, sorted(D.state_dict())[-1])\n'
    ).format(harness=os.path.join(ROOT, 'stylegan2_ada'), names=list(BACKBONES))
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'ROUNDTRIP_OK stylegan2 b4.fc student.fc2.weight_v' in res.stdout
    assert 'ROUNDTRIP_OK fastgan features student.fc2.weight_v' in res.stdout
