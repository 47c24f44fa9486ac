"""The CLIP teacher: spec parsing, labels, loading through --teacher-weights / --teacher-config and
the asset resolver, freezing, input conversion, cached text embeddings and the start-up check.

No pretrained weights exist offline, so every network here is an open_clip model of a real
architecture with random weights, saved to a file and loaded back through the same code as
real weights."""
import copy
import json
import logging
import os
import pickle
import subprocess
import sys
import time

import pytest
import torch

import dnnlib
from kdgan_plugins.teachers import clip_teacher as ct
from kdgan_plugins.teachers import (CLIPTeacher, FACE_EXPRESSIONS, RANDOM_WARNING, TeacherSpecError,
                                    TeacherUnavailableError, check_teacher_available, parse_teacher_spec,
                                    resolve_labels, teacher_embed_dim)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small but real open_clip architecture (ViT image tower, transformer text tower).
TINY_CFG = {
    'embed_dim': 32,
    'vision_cfg': {'image_size': 32, 'layers': 2, 'width': 64, 'patch_size': 8, 'head_width': 32},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 2, 'layers': 2},
}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """(config path, random tiny teacher, weights path of its state dict)."""
    folder = tmp_path_factory.mktemp('tiny_clip')
    cfg = folder / 'tiny_clip.json'
    cfg.write_text(json.dumps(TINY_CFG))
    torch.manual_seed(123)
    teacher = CLIPTeacher('random:tiny_clip', config=str(cfg))
    weights = folder / 'tiny_clip.pt'
    torch.save(teacher.model.state_dict(), weights)
    return str(cfg), teacher, str(weights)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty dnnlib cache and no teacher/detector folders from the environment."""
    cache = tmp_path / 'dnnlib-cache'
    cache.mkdir()
    monkeypatch.setattr(dnnlib.util, '_dnnlib_cache_dir', str(cache))
    monkeypatch.delenv('KDGAN_TEACHER_DIR', raising=False)
    monkeypatch.delenv('KDGAN_DETECTOR_DIR', raising=False)
    return cache


def _images(n=3, channels=3, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand([n, channels, size, size], generator=gen) * 2 - 1

# Specs and labels.


def test_parse_teacher_spec():
    assert parse_teacher_spec('ViT-B-32:openai') == ('ViT-B-32', 'openai')
    assert parse_teacher_spec(' ViT-B-16:laion2b_s34b_b88k ') == ('ViT-B-16', 'laion2b_s34b_b88k')
    assert parse_teacher_spec('ViT-B-32') == ('ViT-B-32', None)
    assert parse_teacher_spec('random:ViT-B-32') == ('ViT-B-32', 'random')
    assert parse_teacher_spec('RANDOM:tiny') == ('tiny', 'random')
    for bad in ['', 'random:', 'a:b:c', ':openai', 'hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K']:
        with pytest.raises(TeacherSpecError):
            parse_teacher_spec(bad)


def test_unknown_architecture_and_tag_are_spec_errors(isolated_cache):
    with pytest.raises(TeacherSpecError, match='unknown open_clip architecture'):
        check_teacher_available('ViT-Nope-7:openai', download=False)
    with pytest.raises(TeacherSpecError, match='no pretrained tag'):
        check_teacher_available('ViT-B-32:no_such_tag', download=False)
    with pytest.raises(TeacherSpecError, match='names no pretrained tag'):
        check_teacher_available('ViT-B-32', download=False)


def test_teacher_embed_dim_without_building(tiny):
    cfg, teacher, _ = tiny
    assert teacher_embed_dim('ViT-B-32:openai') == 512
    assert teacher_embed_dim('random:ViT-L-14') == 768
    assert teacher_embed_dim('anything', config=cfg) == teacher.embed_dim == 32
    with pytest.raises(TeacherSpecError):
        teacher_embed_dim('ViT-Nope-7')


def test_resolve_labels(tmp_path, caplog):
    assert resolve_labels('auto') == list(FACE_EXPRESSIONS)
    assert resolve_labels(None) == ['neutral', 'happy', 'sad', 'surprise', 'disgust', 'anger', 'fear']
    assert resolve_labels('auto', dataset_class_names=['cat', 'dog']) == ['cat', 'dog']
    assert resolve_labels('auto', dataset_class_names={'1': 'dog', '0': 'cat', '10': 'eel'}) == ['cat', 'dog', 'eel']
    with caplog.at_level(logging.WARNING, logger='kdgan.teacher'):
        assert resolve_labels('auto', dataset_class_names=None, conditional=True) == list(FACE_EXPRESSIONS)
    assert 'no class names' in caplog.text
    assert resolve_labels('cat, dog ,,bird') == ['cat', 'dog', 'bird']
    assert resolve_labels('zebra') == ['zebra']
    assert resolve_labels(['a', ' b ']) == ['a', 'b']
    path = tmp_path / 'labels.txt'
    path.write_text('# comment\nred car\n\nblue bus\n')
    assert resolve_labels(str(path)) == ['red car', 'blue bus']
    with pytest.raises(FileNotFoundError):
        resolve_labels(str(tmp_path / 'missing.txt'))
    with pytest.raises(ValueError):
        resolve_labels(' , ')

# Loading.


def test_weights_and_config_round_trip_all_checkpoint_formats(tiny, tmp_path):
    cfg, teacher, plain = tiny
    img = _images()
    want_img = teacher.encode_image(img)
    want_txt = teacher.text_embeddings
    state = torch.load(plain, weights_only=True)
    wrapped = tmp_path / 'wrapped.pt'
    torch.save({'epoch': 3, 'name': 'tiny', 'state_dict': state}, wrapped)
    prefixed = tmp_path / 'ddp.pt'
    torch.save({'state_dict': {'module.' + k: v for k, v in state.items()}}, prefixed)
    for path in [plain, str(wrapped), str(prefixed)]:
        loaded = CLIPTeacher('tiny_clip', weights=path, config=cfg)
        assert loaded.weights_path == path and not loaded.is_random
        assert torch.equal(loaded.encode_image(img), want_img), path
        assert torch.equal(loaded.text_embeddings, want_txt), path
        assert loaded.embed_dim == 32


def test_start_up_line_names_the_custom_config_not_the_default_spec(tiny):
    """With --teacher-config the spec's model name (ViT-B-32 by default) is not what gets built: the log
    line a comparison prints names the config file."""
    from kdgan_plugins.losses import kd
    cfg, _teacher, weights = tiny
    line = kd.check_teacher_assets(dict(weights=weights, config=cfg))
    assert line == 'teacher {}: {}'.format(cfg, weights)
    assert 'ViT-B-32' not in line


def test_config_in_open_clip_config_json_form(tiny, tmp_path):
    cfg, teacher, weights = tiny
    hub_style = tmp_path / 'open_clip_config.json'
    hub_style.write_text(json.dumps({'model_cfg': TINY_CFG, 'preprocess_cfg': {'interpolation': 'bilinear'}}))
    loaded = CLIPTeacher(weights=weights, config=str(hub_style))
    assert loaded.interpolation == 'bilinear'
    x = loaded.preprocess(_images())
    assert torch.equal(loaded.model.encode_image(x), teacher.model.encode_image(x))


def test_mismatched_weights_are_a_clear_error(tiny, tmp_path):
    cfg, _, weights = tiny
    other = dict(TINY_CFG, embed_dim=16)
    other_cfg = tmp_path / 'other.json'
    other_cfg.write_text(json.dumps(other))
    with pytest.raises(RuntimeError, match='Cannot load teacher weights'):
        CLIPTeacher(weights=weights, config=str(other_cfg))


def test_tag_resolves_through_the_asset_resolver(tiny, tmp_path, monkeypatch, isolated_cache):
    """A pretrained tag's file is found in --teacher-dir under the hub's file name and loaded
    (the tag registry is patched to know a tag for the tiny architecture)."""
    from safetensors.torch import save_file
    cfg, teacher, weights = tiny
    name = ct._register_config(TINY_CFG, 'tagged')
    monkeypatch.setattr(ct, '_builtin_config', lambda arch: TINY_CFG if arch == name else None)
    registry = ct._pretrained_registry()
    fake = {'hf_hub': 'kdgan-test/tiny-clip/', 'mean': ct.OPENAI_MEAN, 'std': ct.OPENAI_STD}
    monkeypatch.setattr(registry, 'get_pretrained_cfg', lambda arch, tag: fake if tag == 'testtag' else {})
    folder = tmp_path / 'teachers'
    folder.mkdir()
    state = {k: v.contiguous() for k, v in torch.load(weights, weights_only=True).items()}
    save_file(state, str(folder / 'open_clip_model.safetensors'))
    spec = name + ':testtag'
    assert check_teacher_available(spec, teacher_dir=str(folder), download=False) == str(
        folder / 'open_clip_model.safetensors')
    loaded = CLIPTeacher(spec, teacher_dir=str(folder), download=False)
    assert loaded.pretrained == 'testtag'
    img = _images()
    assert torch.equal(loaded.encode_image(img), teacher.encode_image(img))
    # The same file through the environment variable and through the detector folder.
    monkeypatch.setenv('KDGAN_TEACHER_DIR', str(folder))
    assert check_teacher_available(spec, download=False).startswith(str(folder))
    monkeypatch.delenv('KDGAN_TEACHER_DIR')
    assert check_teacher_available(spec, detector_dir=str(folder), download=False).startswith(str(folder))


def test_openai_tag_resolution_candidates():
    registry = ct._pretrained_registry()
    files = ct.weight_files_for_tag(registry.get_pretrained_cfg('ViT-B-32', 'openai'))
    names = [name for name, _ in files]
    assert names == ['open_clip_model.safetensors', 'open_clip_pytorch_model.bin', 'ViT-B-32.pt']
    assert files[0][1].endswith('/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors')
    assert files[2][1].startswith('https://openaipublic') and files[2][1].endswith('/ViT-B-32.pt')
    plan = ct.TeacherPlan('ViT-B-32', 'openai', None, None)
    assert plan.quick_gelu  # OpenAI's weights were trained with QuickGELU; the tag says so and we honour it


def test_missing_tag_file_names_the_file_and_the_flags(isolated_cache, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    start = time.time()
    with pytest.raises(TeacherUnavailableError) as info:
        check_teacher_available('ViT-B-32:openai', teacher_dir=str(empty), download=False)
    assert time.time() - start < 5
    text = str(info.value)
    assert '\n' not in text
    for part in ['open_clip_model.safetensors', 'ViT-B-32.pt', '--teacher-dir', '$KDGAN_TEACHER_DIR',
                 '--teacher-weights', str(isolated_cache)]:
        assert part in text, part
    # The constructor fails the same way, before building anything.
    with pytest.raises(TeacherUnavailableError, match='open_clip_model.safetensors'):
        CLIPTeacher('ViT-B-32', 'openai', teacher_dir=str(empty), download=False)


def test_offline_download_fails_fast_with_the_url(isolated_cache, monkeypatch):
    """With downloads allowed but no network (the probe simulates it), one quick error naming the URL."""
    from metrics import detectors
    probed = []
    monkeypatch.setattr(detectors, '_probe', lambda url, timeout: probed.append(url) or 'cannot resolve host')
    with pytest.raises(TeacherUnavailableError) as info:
        check_teacher_available('ViT-B-32:openai', download=True, quick=True)
    assert len(probed) == 1  # no network: the other candidate URLs are not tried
    assert 'downloading https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/' \
           'open_clip_model.safetensors failed (cannot resolve host)' in str(info.value)


def test_missing_weights_file_is_a_fast_clear_error(tiny, tmp_path):
    cfg, _, _ = tiny
    missing = str(tmp_path / 'nope' / 'teacher.pt')
    start = time.time()
    with pytest.raises(TeacherUnavailableError) as info:
        check_teacher_available('tiny_clip', weights=missing, config=cfg)
    assert time.time() - start < 5
    assert missing in str(info.value) and '--teacher-weights' in str(info.value)
    with pytest.raises(TeacherUnavailableError, match='--teacher-weights'):
        CLIPTeacher('tiny_clip', weights=missing, config=cfg)
    with pytest.raises(TeacherUnavailableError, match='--teacher-config'):
        check_teacher_available('tiny_clip', weights=missing, config=str(tmp_path / 'nope.json'))
    with pytest.raises(TeacherSpecError, match='--teacher-weights'):
        check_teacher_available('tiny_clip', config=cfg)  # a custom architecture has no tags


def test_start_up_check_is_fast_and_does_not_import_open_clip(tmp_path):
    """The check train.py runs: in a fresh process, well under 5 s and without importing open_clip."""
    code = (
        'import sys, time\n'
        'sys.path.insert(0, {harness!r})\n'
        'import torch\n'
        'from kdgan_plugins.teachers import check_teacher_available, TeacherUnavailableError\n'
        'start = time.time()\n'
        'try:\n'
        '    check_teacher_available("ViT-B-32:openai", teacher_dir={empty!r}, download=False)\n'
        'except TeacherUnavailableError as err:\n'
        '    print("ERROR", err)\n'
        'print("SECONDS", time.time() - start)\n'
        'print("OPEN_CLIP_IMPORTED", "open_clip" in sys.modules)\n'
    ).format(harness=os.path.join(ROOT, 'stylegan2_ada'), empty=str(tmp_path))
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
    env.pop('KDGAN_TEACHER_DIR', None)
    env.pop('KDGAN_DETECTOR_DIR', None)
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(' ', 1) for line in res.stdout.splitlines())
    assert 'open_clip_model.safetensors' in lines['ERROR']
    assert float(lines['SECONDS']) < 5.0
    assert lines['OPEN_CLIP_IMPORTED'] == 'False'


def test_random_teacher_only_when_asked_and_warns(tiny, caplog):
    cfg, _, weights = tiny
    with caplog.at_level(logging.WARNING, logger='kdgan.teacher'):
        teacher = CLIPTeacher('random:tiny_clip', config=cfg)
    assert teacher.is_random and teacher.pretrained == 'random'
    assert RANDOM_WARNING in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='kdgan.teacher'):
        assert check_teacher_available('random:ViT-B-32') == 'random'
    assert RANDOM_WARNING in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='kdgan.teacher'):
        loaded = CLIPTeacher('tiny_clip', weights=weights, config=cfg)
    assert not loaded.is_random and RANDOM_WARNING not in caplog.text
    with pytest.raises(TeacherSpecError):
        CLIPTeacher('random:tiny_clip', weights=weights, config=cfg)

# Behaviour.


def test_frozen_and_gradient_reaches_the_input(tiny):
    _, teacher, _ = tiny
    params = list(teacher.parameters())
    assert params and all(not p.requires_grad for p in params)
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    img = _images().requires_grad_(True)
    emb = teacher.encode_image(img)
    assert emb.dtype == torch.float32 and emb.shape == (3, teacher.embed_dim)
    emb.square().sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    assert all(p.grad is None for p in params)
    # Without an input that needs gradients no graph is built at all.
    assert not teacher.encode_image(_images()).requires_grad


def test_not_picklable(tiny):
    _, teacher, _ = tiny
    with pytest.raises(TypeError, match='never travel in a network pickle'):
        pickle.dumps(teacher)
    with pytest.raises(TypeError, match='never travel in a network pickle'):
        copy.deepcopy(teacher)


def test_input_conversion_matches_a_direct_computation(tiny):
    import torchvision.transforms.functional as TF
    _, teacher, _ = tiny
    img = _images(size=16)
    direct = TF.resize((img + 1) / 2, [32, 32], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    direct = TF.normalize(direct, mean=list(ct.OPENAI_MEAN), std=list(ct.OPENAI_STD))
    assert teacher.input_size == (32, 32)
    assert torch.allclose(teacher.preprocess(img), direct, atol=1e-5)
    assert torch.allclose(teacher.encode_image(img), teacher.model.encode_image(direct), atol=1e-5)
    # Already at the input size: only the affine maps.
    same = _images(size=32)
    want = (((same + 1) / 2) - torch.tensor(ct.OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(ct.OPENAI_STD).view(1, 3, 1, 1)
    assert torch.allclose(teacher.preprocess(same), want, atol=1e-6)
    # Grayscale is repeated to RGB.
    gray = _images(channels=1)
    assert torch.equal(teacher.encode_image(gray), teacher.encode_image(gray.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError):
        teacher.encode_image(torch.zeros([2, 4, 16, 16]))


def test_vit_b_32_architecture_input_224():
    """The paper's teacher architecture (random weights): 224 input, OpenAI statistics, 512-d."""
    import torchvision.transforms.functional as TF
    teacher = CLIPTeacher('random:ViT-B-32')
    assert teacher.input_size == (224, 224) and teacher.embed_dim == 512 and teacher.interpolation == 'bicubic'
    assert torch.allclose(teacher.mean.flatten(), torch.tensor([0.48145466, 0.4578275, 0.40821073]))
    assert torch.allclose(teacher.std.flatten(), torch.tensor([0.26862954, 0.26130258, 0.27577711]))
    img = _images(n=2, size=32)
    direct = TF.resize((img + 1) / 2, [224, 224], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    direct = TF.normalize(direct, mean=list(ct.OPENAI_MEAN), std=list(ct.OPENAI_STD))
    assert torch.allclose(teacher.preprocess(img), direct, atol=1e-5)
    assert teacher.encode_image(img).shape == (2, 512)


def test_text_embeddings_computed_once(tiny):
    _, teacher, _ = tiny
    teacher.set_labels('cat,dog', template='A photo of a {label}')
    assert teacher.prompts == ['A photo of a cat', 'A photo of a dog']
    calls = {'tokenizer': 0, 'encode_text': 0}
    tokenizer, encode_text = teacher.tokenizer, teacher.model.encode_text

    def counting_tokenizer(*args, **kwargs):
        calls['tokenizer'] += 1
        return tokenizer(*args, **kwargs)

    def counting_encode_text(*args, **kwargs):
        calls['encode_text'] += 1
        return encode_text(*args, **kwargs)

    teacher.tokenizer = counting_tokenizer
    teacher.model.encode_text = counting_encode_text
    try:
        first = teacher.text_embeddings
        for _ in range(3):
            assert teacher.text_embeddings is first
    finally:
        teacher.tokenizer = tokenizer
        del teacher.model.encode_text
    assert calls == {'tokenizer': 1, 'encode_text': 1}
    assert first.shape == (2, 32) and first.dtype == torch.float32 and not first.requires_grad
    direct = teacher.model.encode_text(tokenizer(['A photo of a cat', 'A photo of a dog']))
    assert torch.allclose(first, direct, atol=1e-6)
    teacher.set_labels('auto')
    assert teacher.text_embeddings.shape == (len(FACE_EXPRESSIONS), 32)
    with pytest.raises(ValueError):
        teacher.set_labels('a,b', template='no placeholder')


@pytest.mark.cuda
def test_cuda_autocast_matches_cpu(tiny):
    cfg, teacher, weights = tiny
    gpu = CLIPTeacher('tiny_clip', weights=weights, config=cfg, device='cuda')
    img = _images()
    out = gpu.encode_image(img.cuda())
    assert out.dtype == torch.float32 and out.device.type == 'cuda'
    assert torch.allclose(out.cpu(), teacher.encode_image(img), atol=5e-2, rtol=5e-2)
    assert gpu.text_embeddings.device.type == 'cuda'
