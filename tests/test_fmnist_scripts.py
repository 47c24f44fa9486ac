"""The Fashion-MNIST reproduction's data export, evaluator and teacher scripts (bench/fmnist/).

Fast: the evaluator and the teacher train for one epoch on ~1,000 images and
are checked for what they write and how it loads, not for accuracy (the
full-size accuracies are in docs/fmnist_reproduction.md).
"""
import io
import json
import os
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.fmnist import data as fmnist_data  # noqa: E402
from bench.fmnist import evaluator, teacher  # noqa: E402

needs_fmnist = pytest.mark.skipif(not fmnist_data.is_available(),
                                  reason="Fashion-MNIST not installed at {} (Debian package dataset-fashion-mnist; or "
                                         "set ${})".format(fmnist_data.DEFAULT_DIR, fmnist_data.ENV_VAR))
TRAIN_LIMIT = 1000
TEST_LIMIT = 500


# Hand-made cases (no data needed).


def test_accuracy_on_hand_made_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 1.0]])
    assert evaluator.accuracy(logits, [0, 1, 2, 2]) == pytest.approx(0.75)  # row 2 picks class 0, not 2
    assert evaluator.accuracy(logits, [0, 1, 0, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        evaluator.accuracy(logits, [0, 1, 2])


def test_teacher_input_convention():
    size = 32
    black = -torch.ones(2, 1, size, size)
    white = torch.ones(2, 1, size, size)
    mean = torch.tensor(teacher.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(teacher.CLIP_STD).view(1, 3, 1, 1)
    assert teacher.CLIP_MEAN == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert teacher.CLIP_STD == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    out = teacher.to_teacher_input(black, size)
    assert out.shape == (2, 3, size, size)
    assert torch.allclose(out, (0 - mean) / std * torch.ones_like(out))
    assert torch.allclose(teacher.to_teacher_input(white, size), (1 - mean) / std * torch.ones_like(out))
    # A 16x16 mid-gray image is resized to the model's size and keeps its value.
    gray = torch.zeros(1, 1, 16, 16)
    out = teacher.to_teacher_input(gray, size)
    assert out.shape == (1, 3, size, size)
    assert torch.allclose(out, ((0.5 - mean) / std).expand(1, 3, size, size), atol=1e-6)
    # uint8 -> GAN range is the harness's x / 127.5 - 1.
    assert torch.allclose(teacher.uint8_to_gan(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))


def test_class_balanced_groups_hold_one_image_per_class():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 0])  # class 1 is the smallest: 3 images
    groups = teacher.class_balanced_groups(labels, 3, np.random.RandomState(0))
    assert groups.shape == (3, 3)
    assert (labels[groups] == np.arange(3)[None, :]).all()  # column c holds class c
    assert len(set(groups.ravel().tolist())) == groups.size  # no image twice
    again = teacher.class_balanced_groups(labels, 3, np.random.RandomState(0))
    assert (groups == again).all()


def test_grouped_clip_loss_is_clip_loss_within_each_group():
    import open_clip
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 4, 8, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    scale = torch.tensor(10.0)
    got = teacher.grouped_clip_loss(open_clip.ClipLoss(), img, txt, scale)
    # Written out: for each group, the mean of image->text and text->image cross-entropy with the diagonal as
    # targets, then averaged over groups.
    want = 0.0
    for g in range(3):
        logits = scale * img[g] @ txt.T
        lp_img = logits - logits.logsumexp(dim=1, keepdim=True)
        lp_txt = logits.T - logits.T.logsumexp(dim=1, keepdim=True)
        want += (-lp_img.diagonal().mean() - lp_txt.diagonal().mean()) / 2
    assert float(got) == pytest.approx(float(want) / 3, rel=1e-5)


# Data export.


def _read_zip(path):
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read("dataset.json"))
        images = {name: np.asarray(PIL.Image.open(io.BytesIO(z.read(name)))) for name in z.namelist()
                  if name.endswith(".png")}
    return meta, images


@needs_fmnist
def test_few_shot_export_is_seeded_and_class_balanced(tmp_path):
    quiet = lambda *_: None  # noqa: E731
    a = fmnist_data.export_few_shot(str(tmp_path / "a.zip"), seed=0, log=quiet)
    b = fmnist_data.export_few_shot(str(tmp_path / "b.zip"), seed=0, log=quiet)
    c = fmnist_data.export_few_shot(str(tmp_path / "c.zip"), seed=1, log=quiet)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert a["indices"] == b["indices"] and a["indices"] != c["indices"]
    assert (tmp_path / "a.zip").read_bytes() != (tmp_path / "c.zip").read_bytes()

    meta, images = _read_zip(tmp_path / "a.zip")
    assert meta["class_names"] == fmnist_data.CLASS_NAMES
    assert len(meta["labels"]) == 100 and len(images) == 100
    counts = np.bincount([label for _name, label in meta["labels"]], minlength=10)
    assert counts.tolist() == [10] * 10
    # The stored images are the training images at the chosen indices, padded 28 -> 32, grayscale.
    train_x, train_y, _ = fmnist_data.load_split("train")
    for k, (name, label) in enumerate(meta["labels"]):
        img = images[name]
        assert img.shape == (32, 32) and img.dtype == np.uint8
        assert np.array_equal(img, train_x[a["indices"][k]]) and label == int(train_y[a["indices"][k]])
    assert not train_x[:, :2].any() and not train_x[:, :, -2:].any()  # the zero padding


# Evaluator.


@pytest.fixture(scope="module")
def evaluator_run(tmp_path_factory):
    if not fmnist_data.is_available():
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("evaluator")
    meta = evaluator.train(str(out), epochs=1, seed=0, train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT,
                           log=lambda *_: None)
    return out, meta


@needs_fmnist
def test_evaluator_artefacts_load_and_give_features(evaluator_run):
    out, meta = evaluator_run
    with open(out / evaluator.META_NAME, encoding="utf-8") as f:
        saved = json.load(f)
    for key in ("test_accuracy", "seed", "date", "arch", "feature_dim", "epochs"):
        assert key in saved
    assert saved["seed"] == 0 and saved["num_train"] == TRAIN_LIMIT and saved["num_test"] == TEST_LIMIT

    det = evaluator.load(str(out))
    assert isinstance(det, torch.jit.ScriptModule)
    test_x, test_y, _ = fmnist_data.load_split("test")
    test_x, test_y = evaluator.balanced_subset(test_x, test_y, TEST_LIMIT, 0)
    batch = torch.from_numpy(test_x[:8])[:, None]  # uint8 [8, 1, 32, 32]
    feats = det(batch, return_features=True)
    assert feats.shape == (8, evaluator.FEATURE_DIM) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    # The harness's metrics hand detectors 3-channel uint8 (gray repeated): same features.
    assert torch.allclose(det(batch.repeat(1, 3, 1, 1), return_features=True), feats, atol=1e-5)
    assert det(batch).shape == (8, 10)
    # Other sizes are resized: a 64x64 nearest-neighbour upscale lands near the 32x32 features.
    assert det(batch.repeat_interleave(2, 2).repeat_interleave(2, 3), return_features=True).shape == feats.shape
    # The recorded accuracy is what the saved file gives on the same test images.
    acc = evaluator.accuracy(evaluator.run_batched(det, test_x), test_y)
    assert acc == pytest.approx(saved["test_accuracy"], abs=1e-9)


@needs_fmnist
def test_evaluator_loads_through_the_metrics_detector_path(evaluator_run):
    from metrics import detectors
    out, _meta = evaluator_run
    path = detectors.resolve_asset(str(out / evaluator.WEIGHTS_NAME), download=False)
    det = detectors.load_detector_file(path, "cpu")
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert det(images, return_features=True).shape == (4, evaluator.FEATURE_DIM)


@needs_fmnist
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 400 samples of 256-d ReLU features: rank-deficient
def test_evaluator_distances_use_the_metrics_module(evaluator_run):
    from metrics import frechet_inception_distance
    out, _meta = evaluator_run
    det = evaluator.load(str(out))
    test_x, _y, _ = fmnist_data.load_split("test")
    real_a = evaluator.run_batched(det, test_x[:400], return_features=True).numpy()
    real_b = evaluator.run_batched(det, test_x[400:800], return_features=True).numpy()
    noise = np.random.RandomState(0).randint(0, 256, size=(400, 32, 32)).astype(np.uint8)
    fake = evaluator.run_batched(det, noise, return_features=True).numpy()
    same = evaluator.feature_distances(real_a, real_a, kid_subsets=5, kid_subset_size=200)
    real = evaluator.feature_distances(real_a, real_b, kid_subsets=5, kid_subset_size=200)
    bad = evaluator.feature_distances(real_a, fake, kid_subsets=5, kid_subset_size=200)
    assert abs(same["fid"]) < 1e-3
    assert real["fid"] == pytest.approx(frechet_inception_distance.fid_from_features(real_a, real_b), rel=1e-9)
    assert 0 < real["fid"] < bad["fid"] and real["kid"] < bad["kid"]


@needs_fmnist
def test_evaluator_is_reused_not_retrained(evaluator_run, capsys):
    out, meta = evaluator_run
    stamp = os.stat(out / evaluator.WEIGHTS_NAME).st_mtime_ns
    evaluator.main(["--out", str(out), "--epochs", "1", "--seed", "0", "--train-limit", str(TRAIN_LIMIT),
                    "--test-limit", str(TEST_LIMIT)])
    printed = capsys.readouterr().out
    assert "Reusing the evaluator" in printed
    assert "test accuracy {:.4f}".format(meta["test_accuracy"]) in printed
    assert os.stat(out / evaluator.WEIGHTS_NAME).st_mtime_ns == stamp


# Teacher.


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    if not fmnist_data.is_available():
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("teacher")
    meta = teacher.train(str(out), epochs=1, seed=1, groups_per_batch=10, train_limit=TRAIN_LIMIT,
                         test_limit=TEST_LIMIT, log=lambda *_: None)
    return out, meta


@needs_fmnist
def test_teacher_artefacts_load_with_open_clip(teacher_run):
    import open_clip
    out, meta = teacher_run
    with open(out / teacher.CONFIG_NAME, encoding="utf-8") as f:
        cfg = json.load(f)
    assert cfg == teacher.MODEL_CFG
    with open(out / teacher.META_NAME, encoding="utf-8") as f:
        saved = json.load(f)
    for key in ("zero_shot_accuracy", "seed", "date", "model_cfg", "prompts"):
        assert key in saved
    assert saved["seed"] == 1 and saved["num_train"] == TRAIN_LIMIT and saved["num_test"] == TEST_LIMIT
    assert saved["prompts"][0] == "A photo of a T-shirt/top" and len(saved["prompts"]) == 10

    # The state dict is plain tensors (weights_only) and fits open_clip's CLIP built from the config.
    state = torch.load(out / teacher.WEIGHTS_NAME, map_location="cpu", weights_only=True)
    plain = open_clip.model.CLIP(**cfg)
    plain.load_state_dict(state, strict=True)
    # The public path: register the config, create the model with the weights file.
    open_clip.add_model_config(str(out / teacher.CONFIG_NAME))
    model = open_clip.create_model("teacher_config", pretrained=str(out / teacher.WEIGHTS_NAME)).eval()
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    tokenizer = open_clip.get_tokenizer("teacher_config")
    assert tokenizer(["A photo of a Bag"]).shape == (1, cfg["text_cfg"]["context_length"])

    # The zero-shot path runs and reproduces the recorded accuracy.
    test_x, test_y, names = fmnist_data.load_split("test")
    test_x, test_y = evaluator.balanced_subset(test_x, test_y, TEST_LIMIT, 1)
    logits = teacher.zero_shot_logits(model, tokenizer, test_x, names)
    assert logits.shape == (TEST_LIMIT, 10)
    assert float(logits.abs().max()) <= 1.0 + 1e-5  # cosine similarities
    assert evaluator.accuracy(logits, test_y) == pytest.approx(saved["zero_shot_accuracy"], abs=1e-9)
    # Teacher embeddings of GAN-range images: [N, embed_dim], unit norm.
    gan = teacher.uint8_to_gan(torch.from_numpy(test_x[:4])[:, None])
    emb = model.encode_image(teacher.to_teacher_input(gan, teacher.image_size_of(model)), normalize=True)
    assert emb.shape == (4, cfg["embed_dim"])
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)


@needs_fmnist
def test_teacher_differs_from_evaluator(teacher_run, evaluator_run):
    _out, t_meta = teacher_run
    _out, e_meta = evaluator_run
    assert t_meta["seed"] != e_meta["seed"]
    assert teacher.DEFAULT_SEED != evaluator.DEFAULT_SEED
    assert "vision_cfg" in t_meta["model_cfg"] and e_meta["arch"].startswith("cnn")


# The comparison's prepare step (compare.py --budget=cpu|gpu).


@needs_fmnist
def test_prepare_writes_the_datasets_and_reuses_the_networks(tmp_path, evaluator_run, teacher_run):
    from bench.fmnist import prepare
    ev_dir, ev_meta = evaluator_run
    te_dir, te_meta = teacher_run
    kwargs = dict(evaluator_kwargs=dict(out_dir=str(ev_dir), epochs=1, seed=0, train_limit=TRAIN_LIMIT,
                                        test_limit=TEST_LIMIT),
                  teacher_kwargs=dict(out_dir=str(te_dir), epochs=1, seed=1, groups_per_batch=10,
                                      train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT))
    lines = []
    values = prepare.prepare(str(tmp_path), log=lines.append, **kwargs)
    assert values["evaluator"] == ev_meta["path"]
    assert values["teacher_weights"] == te_meta["weights"] and values["teacher_config"] == te_meta["config"]
    assert any("Reusing the evaluator" in line for line in lines) and any("Reusing the teacher" in line
                                                                            for line in lines)
    train_meta, train_imgs = _read_zip(values["fmnist_train"])
    _, test_imgs = _read_zip(values["fmnist_test"])
    assert len(train_imgs) == 100 and len(test_imgs) == 10000
    assert {img.shape[:2] for img in list(train_imgs.values())[:5] + list(test_imgs.values())[:5]} == {(prepare.RESOLUTION, prepare.RESOLUTION)}
    labels = [label for _, label in train_meta["labels"]]
    assert sorted(np.bincount(labels).tolist()) == [10] * 10
    with open(tmp_path / "data" / "prepare.json", encoding="utf-8") as f:
        record = json.load(f)
    assert record["evaluator_test_accuracy"] == ev_meta["test_accuracy"] and record["resolution"] == prepare.RESOLUTION == 32
    # A second call reuses both zips untouched.
    stamps = {p: os.stat(values[p]).st_mtime_ns for p in ("fmnist_train", "fmnist_test")}
    lines.clear()
    assert prepare.prepare(str(tmp_path), log=lines.append, **kwargs) == values
    assert {p: os.stat(values[p]).st_mtime_ns for p in stamps} == stamps
    assert sum("reusing" in line for line in lines) == 2
