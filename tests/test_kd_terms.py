"""KD-DLGAN's AGKD and CGKD terms (issue 6, done-when 1 and 2).

The formulas are recomputed here independently (loops over samples, the
distances written out) with a small randomly initialised open_clip teacher
(`random:` + a tiny config), then the terms run inside the loss core with a
StyleGAN2 D wrapped in KDDiscriminator: gradients reach D and the student head,
never the teacher or G; G's loss is unchanged unless the diversity term is on."""

import json
import math
import types

import pytest
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import training_stats
from training import networks
from training.loss import StyleGAN2Loss

from kdgan_plugins.augment.diffaugment import DiffAugment
from kdgan_plugins.losses import kd
from kdgan_plugins.networks.student import KDDiscriminator
from kdgan_plugins.teachers.clip_teacher import CLIPTeacher

EMB = 16
LABELS = ['neutral', 'happy', 'sad', 'cat']
TINY = {"embed_dim": EMB,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
AGKD = 'kdgan_plugins.losses.kd.AGKD'
CGKD = 'kdgan_plugins.losses.kd.CGKD'


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('teacher') / 'tiny.json'
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture(scope='module')
def teacher(tiny_config):
    torch.manual_seed(0)
    return CLIPTeacher('random:tiny', config=tiny_config, labels=LABELS)


def stub_loss(teacher):
    return types.SimpleNamespace(get_teacher=lambda: teacher, D_module=types.SimpleNamespace(student_dim=EMB),
                                 device=torch.device('cpu'))


def images(seed, n=4, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand([n, 3, size, size], generator=g) * 2 - 1


def vectors(seed, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn([n, EMB], generator=g) * 3


def ref_dist(a, b, dist):
    """The distances written out per sample: batch mean of l2 / l1 / mse, batch sum for sse."""
    per = []
    for x, y in zip(a.tolist(), b.tolist()):
        diffs = [xi - yi for xi, yi in zip(x, y)]
        if dist == 'l2':
            per.append(math.sqrt(sum(d * d for d in diffs)))
        elif dist == 'l1':
            per.append(sum(abs(d) for d in diffs))
        elif dist == 'mse':
            per.append(sum(d * d for d in diffs) / len(diffs))
        else:
            per.append(sum(d * d for d in diffs))
    return sum(per) if dist == 'sse' else sum(per) / len(per)


def run_agkd(term, x_real, x_fake, s_real, s_fake):
    """The term's hooks in the core's order; returns (sum of values as the core adds them, names, fired)."""
    step = dnnlib.EasyDict(real_aug=x_real)
    term.begin_D(step)
    out = dict(term.D_terms('gen', dnnlib.EasyDict(feat=s_fake, img_aug=x_fake), None, step))
    out.update(term.D_terms('real', dnnlib.EasyDict(feat=s_real, img_aug=x_real), None, step))
    return sum(float(v.detach().mean()) for v in out.values()), sorted(out), step[term.name].fired


# Done-when 1: each term equals its formula.


@pytest.mark.parametrize('dist', ['l2', 'l1', 'mse', 'sse'])
@pytest.mark.parametrize('weight', [1.0, 10.0])
def test_agkd_equals_formula(teacher, dist, weight):
    x_real, x_fake = images(1), images(2)
    s_real, s_fake = vectors(3), vectors(4)
    t_real = teacher.encode_image(x_real).detach()
    t_fake = teacher.encode_image(x_fake).detach()
    l_kd = ref_dist(t_real, s_real, dist) + ref_dist(t_fake, s_fake, dist)
    l_agg = ref_dist(t_real, s_fake, dist) + ref_dist(t_fake, s_real, dist)

    term = kd.AGKD(stub_loss(teacher), weight=weight, p=1.0, dist=dist)
    total, names, fired = run_agkd(term, x_real, x_fake, s_real, s_fake)
    assert fired and names == ['agkd_agg_fake', 'agkd_agg_real', 'agkd_kd_fake', 'agkd_kd_real']
    assert total == pytest.approx(weight * (l_kd + l_agg), rel=1e-4)

    term = kd.AGKD(stub_loss(teacher), weight=weight, p=0.0, dist=dist)
    total, names, fired = run_agkd(term, x_real, x_fake, s_real, s_fake)
    assert not fired and names == ['agkd_kd_fake', 'agkd_kd_real']
    assert total == pytest.approx(weight * l_kd, rel=1e-4)


def test_agkd_defaults_follow_official_code(teacher):
    term = kd.AGKD(stub_loss(teacher))
    assert (term.weight, term.p, term.dist) == (10.0, 0.7, 'l2')
    term = kd.CGKD(stub_loss(teacher))
    assert (term.weight, term.dist, term.diversity) == (10.0, 'sse', 0.0)
    with pytest.raises(ValueError, match='dist'):
        kd.AGKD(stub_loss(teacher), dist='cosine')


def test_agkd_p_gating(teacher):
    x_real, x_fake, s_real, s_fake = images(1), images(2), vectors(3), vectors(4)
    never = kd.AGKD(stub_loss(teacher), p=0.0)
    always = kd.AGKD(stub_loss(teacher), p=1.0)
    for _ in range(10):
        assert 'agkd_agg_real' not in run_agkd(never, x_real, x_fake, s_real, s_fake)[1]
        assert 'agkd_agg_fake' in run_agkd(always, x_real, x_fake, s_real, s_fake)[1]
    assert not any(never.draw() for _ in range(2000))
    assert all(always.draw() for _ in range(2000))
    term = kd.AGKD(stub_loss(teacher), p=0.7, seed=11)
    rate = sum(term.draw() for _ in range(2000)) / 2000
    assert abs(rate - 0.7) <= 0.03
    # Each step's gate is exactly what its cross terms show.
    for _ in range(20):
        _total, names, fired = run_agkd(term, x_real, x_fake, s_real, s_fake)
        assert ('agkd_agg_fake' in names) == fired == ('agkd_agg_real' in names)
    # The generator state is saved for an exact resume.
    state = term.state_dict()
    first = [term.draw() for _ in range(50)]
    term.load_state_dict(state)
    assert [term.draw() for _ in range(50)] == first


@pytest.mark.parametrize('dist', ['sse', 'l2', 'l1', 'mse'])
@pytest.mark.parametrize('weight', [1.0, 10.0])
def test_cgkd_equals_formula(teacher, dist, weight):
    T = teacher.text_embeddings
    assert T.shape == (len(LABELS), EMB)
    term = kd.CGKD(stub_loss(teacher), weight=weight, dist=dist)
    total = 0.0
    expect = 0.0
    for side, seed in (('real', 5), ('gen', 6)):
        x, s = images(seed), vectors(seed + 10)
        t = teacher.encode_image(x).detach()
        C_t = torch.stack([row / row.norm() for row in t @ T.t()])
        C_s = torch.stack([row / row.norm() for row in s @ T.t()])
        expect += ref_dist(C_t, C_s, dist)
        out = term.D_terms(side, dnnlib.EasyDict(feat=s, img_aug=x), None, {})
        assert list(out) == ['cgkd_' + ('fake' if side == 'gen' else 'real')]
        total += float(next(iter(out.values())).detach().mean())
    assert total == pytest.approx(weight * expect, rel=1e-4)
    assert term.G_terms(dnnlib.EasyDict(img_aug=images(7)), None) == {}   # diversity 0: nothing for G


def test_cgkd_diversity_equals_formula(teacher):
    term = kd.CGKD(stub_loss(teacher), diversity=0.3)
    x = images(8, n=5).requires_grad_(True)
    out = term.G_terms(dnnlib.EasyDict(img_aug=x), None)
    T = teacher.text_embeddings
    C_t = F.normalize(teacher.encode_image(x).detach() @ T.t(), dim=1)
    expect = sum(float(F.cosine_similarity(C_t[i], C_t[j], dim=0))
                 for i in range(5) for j in range(5) if i != j)
    assert float(out['cgkd_diversity'].detach()) == pytest.approx(0.3 * expect, rel=1e-4)
    out['cgkd_diversity'].backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0   # Through the frozen teacher to the image.
    assert all(p.grad is None for p in teacher.parameters())


# Done-when 2: inside the loss core, where the gradients go.

RES = 16
BATCH = 4
Z_DIM = 16


def make_setup(tiny_config, terms, seed=0, augment_pipe=None):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=Z_DIM, c_dim=0, w_dim=Z_DIM, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = KDDiscriminator(0, RES, 3, backbone_class_name='training.networks.Discriminator', student_dim=EMB,
                        student_hidden=32, channel_base=256, channel_max=16, epilogue_kwargs=dict(mbstd_group_size=2))
    G.train().requires_grad_(False)
    D.train().requires_grad_(False)
    teacher_kwargs = dict(spec='random:tiny', config=tiny_config, labels=','.join(LABELS))
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, augment_pipe, style_mixing_prob=0, r1_gamma=1, pl_weight=0,
                         terms=terms, teacher=teacher_kwargs if terms else None)
    return G, D, loss


def make_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand([BATCH, 3, RES, RES], generator=g) * 2 - 1
    z = torch.randn([BATCH, Z_DIM], generator=g)
    c = torch.zeros([BATCH, 0])
    return real, c, z, c


def run_phase(loss, modules, phase, seed=5):
    """As the loop: only the phase's module requires grad."""
    for m in modules.values():
        for p in m.parameters():
            p.grad = None
    trained = modules['G'] if phase.startswith('G') else modules['D']
    trained.requires_grad_(True)
    torch.manual_seed(seed)
    loss.accumulate_gradients(phase, *make_batch(), sync=True, gain=1)
    trained.requires_grad_(False)
    return {name: {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
            for name, m in modules.items()}


KD_TERMS = dict(agkd=dict(class_name=AGKD, p=1.0), cgkd=dict(class_name=CGKD))


def test_D_step_gradients_reach_D_and_student_not_teacher_or_G(tiny_config):
    G, D, loss = make_setup(tiny_config, KD_TERMS, augment_pipe=DiffAugment())
    teacher = loss.get_teacher()
    assert all(not p.requires_grad for p in teacher.parameters())
    for p in teacher.parameters():   # Even a teacher that could take gradients gets none in the D step.
        p.requires_grad_(True)
    seen = []
    encode = teacher.encode_image
    teacher.encode_image = lambda img: (seen.append(img.detach().clone()), encode(img))[1]
    d_inputs = []
    handle = D.backbone.register_forward_pre_hook(lambda _m, args: d_inputs.append(args[0].detach().clone()))
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    try:
        grads = run_phase(loss, dict(G=G, D=D, T=teacher), 'Dmain')
    finally:
        handle.remove()
        del teacher.encode_image
        for p in teacher.parameters():
            p.requires_grad_(False)
    assert grads['T'] == {} and grads['G'] == {}
    assert any(n.startswith('student.') and float(g.abs().sum()) > 0 for n, g in grads['D'].items())
    assert any(n.startswith('backbone.') and float(g.abs().sum()) > 0 for n, g in grads['D'].items())
    # The teacher saw exactly the augmented images D saw: real (before the gen pass), fake, fake again (CGKD), real.
    assert len(d_inputs) == 2 and len(seen) == 4
    torch.testing.assert_close(seen[0], d_inputs[1])   # t(x) computed up front, on the real pass's images
    torch.testing.assert_close(seen[1], d_inputs[0])
    torch.testing.assert_close(seen[2], d_inputs[0])
    torch.testing.assert_close(seen[3], d_inputs[1])
    assert not torch.allclose(d_inputs[1], make_batch()[0])   # ...and those were augmented.
    collector.update()
    for name in ('agkd_kd_fake', 'agkd_agg_fake', 'agkd_kd_real', 'agkd_agg_real', 'cgkd_fake', 'cgkd_real'):
        assert collector.num('Loss/D/' + name) > 0, name
    assert collector.mean('Loss/KD/agkd_fired') == 1.0


def test_KD_terms_change_D_gradients_and_only_KD_trains_the_head(tiny_config):
    G, D, plain = make_setup(tiny_config, None)
    base = run_phase(plain, dict(G=G, D=D), 'Dmain')['D']
    assert not any(n.startswith('student.') for n in base)
    _G, _D, with_kd = make_setup(tiny_config, KD_TERMS)
    got = run_phase(with_kd, dict(G=_G, D=_D), 'Dmain')['D']
    assert any(not torch.allclose(got[n], base[n]) for n in base)


def test_R1_with_up_front_augmentation(tiny_config):
    G, D, loss = make_setup(tiny_config, KD_TERMS)
    collector = training_stats.Collector(regex='Loss/(r1_penalty|D/agkd_kd_real)', keep_previous=False)
    grads = run_phase(loss, dict(G=G, D=D), 'Dboth')
    collector.update()
    assert collector.num('Loss/r1_penalty') == BATCH and collector.mean('Loss/r1_penalty') > 0
    assert collector.num('Loss/D/agkd_kd_real') == BATCH
    assert grads['G'] == {}


def test_G_step_unchanged_without_diversity_and_through_teacher_with_it(tiny_config):
    G, D, plain = make_setup(tiny_config, None)
    base = run_phase(plain, dict(G=G, D=D), 'Gmain')
    assert base['G'] and base['D'] == {}
    _G, _D, kd_loss = make_setup(tiny_config, KD_TERMS)
    same = run_phase(kd_loss, dict(G=_G, D=_D), 'Gmain')
    assert same['D'] == {} and sorted(same['G']) == sorted(base['G'])
    for name, value in base['G'].items():
        torch.testing.assert_close(same['G'][name], value, rtol=0, atol=0)

    terms = dict(KD_TERMS, cgkd=dict(class_name=CGKD, diversity=1.0))
    G2, D2, div_loss = make_setup(tiny_config, terms)
    teacher = div_loss.get_teacher()
    collector = training_stats.Collector(regex='Loss/G/.*', keep_previous=False)
    grads = run_phase(div_loss, dict(G=G2, D=D2, T=teacher), 'Gmain')
    collector.update()
    assert collector.num('Loss/G/cgkd_diversity') == 1
    assert grads['T'] == {} and grads['D'] == {}
    assert any(not torch.allclose(grads['G'][n], base['G'][n]) for n in base['G'])


def test_student_width_must_match_teacher(tiny_config):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=Z_DIM, c_dim=0, w_dim=Z_DIM, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = KDDiscriminator(0, RES, 3, student_dim=EMB * 2, student_hidden=32, channel_base=256, channel_max=16)
    with pytest.raises(ValueError, match=f'student_dim={EMB}'):
        StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, terms=dict(agkd=dict(class_name=AGKD)),
                      teacher=dict(spec='random:tiny', config=tiny_config))
    assert kd.teacher_embed_dim(dict(spec='random:tiny', config=tiny_config)) == EMB
    assert kd.teacher_embed_dim(dict(spec='ViT-B-32:openai')) == 512
