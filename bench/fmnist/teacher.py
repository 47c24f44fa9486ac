"""The Fashion-MNIST teacher for KD-DLGAN: a tiny CLIP trained contrastively with open_clip.

Images: the 60k training images; captions: "A photo of a {label}" from the class
names (the prompts KD-DLGAN's text side uses). The model is an open_clip `CLIP`
built from a custom config through open_clip's public API (`add_model_config` +
`create_model`), trained with open_clip's `ClipLoss`.

Duplicate captions: every image of a class has the same caption, so a plain
CLIP batch would hold identical texts that the loss must call negatives of
each other's images. Batches are therefore made of class-balanced groups of
10 images, one of each class, in class order; `ClipLoss` is applied within
each group against the 10 distinct class captions (labels = the diagonal) and
averaged over the groups. No pair in a group shares a caption, so there are
no false negatives, and a batch of G groups still trains on 10*G images.

Input convention (the one the GAN-side teacher wrapper uses, applied here at
training time too): images in [-1, 1] (the harness's uint8 / 127.5 - 1), 1
channel -> [0, 1] -> resized (antialiased bilinear) to the model's image_size
(32: a no-op here) -> gray repeated to 3 channels -> CLIP mean/std
normalisation. Training adds random horizontal flips only.

The teacher differs from the evaluator (bench/fmnist/evaluator.py) in
architecture (a ViT with 8x8 patches vs a CNN), objective (contrastive vs
cross-entropy) and seed (default 1 vs 0), so the FID does not simply reward
imitating the teacher.

    python bench/fmnist/teacher.py --out DIR [--epochs 2] [--seed 1]

writes DIR/teacher.pt (open_clip state dict), DIR/teacher_config.json (the open_clip model config:
embed_dim, vision_cfg, text_cfg) and DIR/teacher.json (zero-shot test accuracy, seed, date, ...).
Loading it as a user would:

    import open_clip
    open_clip.add_model_config('DIR/teacher_config.json')             # registers the name 'teacher_config'
    model = open_clip.create_model('teacher_config', pretrained='DIR/teacher.pt')
    tokenizer = open_clip.get_tokenizer('teacher_config')             # context length 16

(`load_teacher(DIR)` below does exactly that.)
"""
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(ROOT, "stylegan2_ada")
for _p in (ROOT, HARNESS):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import open_clip  # noqa: E402

from bench.fmnist import common as fmnist_common  # noqa: E402
from bench.fmnist import data as fmnist_data  # noqa: E402
from bench.fmnist.evaluator import accuracy, balanced_subset, one_cycle  # noqa: E402

VERSION = 1  # bump when the config, preprocessing or training changes: invalidates caches
DEFAULT_EPOCHS = 2
DEFAULT_SEED = 1  # the evaluator's is 0
WEIGHTS_NAME = "teacher.pt"
CONFIG_NAME = "teacher_config.json"
META_NAME = "teacher.json"
CLIP_MEAN = tuple(open_clip.OPENAI_DATASET_MEAN)  # (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = tuple(open_clip.OPENAI_DATASET_STD)  # (0.26862954, 0.26130258, 0.27577711)

# Vision: ViT, 32x32 input, 8x8 patches (16 tokens + class token), width 128, 3 layers, 4 heads.
# (4x4 patches trained at 41 images/s on the shared 2-core CPU, 8x8 at 148/s, and the teacher also runs
# on every discriminator batch of the GAN runs.) Text: open_clip's tokenizer and vocabulary, context 16.
MODEL_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 3, "head_width": 32,
                   "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2,
                 "mlp_ratio": 2.0},
}


# Input convention, model creation and loading.


def uint8_to_gan(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float [-1, 1], as the harness's data loader gives the GAN."""
    return images.to(torch.float32) / 127.5 - 1.0


def to_teacher_input(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """GAN images NCHW in [-1, 1] (1 or 3 channels) -> the CLIP-normalised [N, 3, S, S] the teacher takes."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError("expected NCHW images with 1 or 3 channels, got {}".format(list(images.shape)))
    x = (images.to(torch.float32) + 1.0) / 2.0
    if x.shape[2] != image_size or x.shape[3] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def write_config(path: str, cfg: Optional[dict] = None) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg or MODEL_CFG, f, indent=2)
    return path


def create_model(config_path: str, weights: Optional[str] = None, device="cpu"):
    """(model, tokenizer, model name) through open_clip's public API for a config file.

    The name open_clip registers is the file's stem ('teacher_config'); the config added last wins.
    """
    open_clip.add_model_config(config_path)
    name = Path(config_path).stem
    model = open_clip.create_model(name, pretrained=weights, device=device)
    tokenizer = open_clip.get_tokenizer(name)
    return model, tokenizer, name


def load_teacher(out_dir: str, device="cpu"):
    """(model in eval mode, tokenizer) from a folder written by `train`, the way a user loads it."""
    model, tokenizer, _name = create_model(os.path.join(out_dir, CONFIG_NAME), os.path.join(out_dir, WEIGHTS_NAME),
                                           device=device)
    return model.eval(), tokenizer


def image_size_of(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@torch.no_grad()
def text_embeddings(model, tokenizer, class_names: Sequence[str]) -> torch.Tensor:
    """L2-normalised text embeddings [K, D] of "A photo of a {label}" for each class."""
    return model.encode_text(tokenizer(fmnist_data.prompts(list(class_names))), normalize=True)


@torch.no_grad()
def zero_shot_logits(model, tokenizer, images: np.ndarray, class_names: Sequence[str], batch_size: int = 500
                     ) -> torch.Tensor:
    """Cosine similarities [N, K] between uint8 images [N, H, W] and the class prompts."""
    was_training = model.training
    model.eval()
    text = text_embeddings(model, tokenizer, class_names)
    size = image_size_of(model)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))[:, None]
        feats = model.encode_image(to_teacher_input(uint8_to_gan(x), size), normalize=True)
        out.append(feats @ text.T)
    model.train(was_training)
    return torch.cat(out)


def class_balanced_groups(labels: np.ndarray, num_classes: int, rng: np.random.RandomState) -> np.ndarray:
    """[M, K] image indices: each row holds one image of every class, in class order; rows shuffled.

    Every class contributes its images in a fresh random order; M is the size of the smallest
    class (Fashion-MNIST's train split has 6,000 of each, so an epoch uses every image).
    """
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    m = min(len(x) for x in members)
    if m == 0:
        raise ValueError("every class needs at least one image")
    cols = [rng.permutation(x)[:m] for x in members]
    groups = np.stack(cols, axis=1)
    return groups[rng.permutation(m)]


def grouped_clip_loss(loss_fn, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
                      ) -> torch.Tensor:
    """Mean of open_clip's ClipLoss over groups: image_features [G, K, D] (one image per class, class order),
    text_features [K, D] (one caption per class)."""
    groups = image_features.shape[0]
    return sum(loss_fn(image_features[g], text_features, logit_scale) for g in range(groups)) / groups


# Training.


def cache_key(seed: int, epochs: int, train_limit: Optional[int] = None, test_limit: Optional[int] = None) -> str:
    return fmnist_common.cache_key(VERSION, seed, epochs, train_limit, test_limit)


def default_dir(seed: int = DEFAULT_SEED, epochs: int = DEFAULT_EPOCHS, train_limit: Optional[int] = None,
                test_limit: Optional[int] = None) -> str:
    return fmnist_common.cache_dir("teacher", cache_key(seed, epochs, train_limit, test_limit))


def train(out_dir: Optional[str] = None, epochs: int = DEFAULT_EPOCHS, seed: int = DEFAULT_SEED,
          groups_per_batch: int = 25, lr: float = 1e-3, train_limit: Optional[int] = None,
          test_limit: Optional[int] = None, threads: Optional[int] = 2, force: bool = False,
          source: Optional[str] = None, log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) the teacher; returns its metadata (teacher.json plus the file paths)."""
    if threads:
        torch.set_num_threads(int(threads))
    key = cache_key(seed, epochs, train_limit, test_limit)
    out_dir = os.path.expanduser(out_dir) if out_dir else default_dir(seed, epochs, train_limit, test_limit)
    paths = dict(weights=os.path.join(out_dir, WEIGHTS_NAME), config=os.path.join(out_dir, CONFIG_NAME),
                 meta=os.path.join(out_dir, META_NAME))
    if not force and all(os.path.isfile(p) for p in paths.values()):
        with open(paths["meta"], "r", encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("key") == key:
            log("Reusing the teacher in {} (trained {}; zero-shot test accuracy {:.2%})".format(
                out_dir, meta.get("date"), meta["zero_shot_accuracy"]))
            return dict(meta, **paths, reused=True)
        log("{} holds a teacher of another configuration ({}); retraining".format(out_dir, meta.get("key")))

    train_x, train_y, class_names = fmnist_data.load_split("train", source)
    test_x, test_y, _ = fmnist_data.load_split("test", source)
    train_x, train_y = balanced_subset(train_x, train_y, train_limit, seed)
    test_x, test_y = balanced_subset(test_x, test_y, test_limit, seed)
    num_classes = len(class_names)

    os.makedirs(out_dir, exist_ok=True)
    write_config(paths["config"])
    torch.manual_seed(seed)
    model, tokenizer, model_name = create_model(paths["config"])
    size = image_size_of(model)
    tokens = tokenizer(fmnist_data.prompts(class_names))
    loss_fn = open_clip.ClipLoss()
    rng = np.random.RandomState(seed)
    groups_per_epoch = len(class_balanced_groups(train_y, num_classes, np.random.RandomState(0)))
    steps_per_epoch = (groups_per_epoch + groups_per_batch - 1) // groups_per_batch
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.05), dict(params=no_decay, weight_decay=0.0)], lr=lr,
                            betas=(0.9, 0.98), eps=1e-6)
    sched = one_cycle(opt, lr, epochs * steps_per_epoch, pct_start=0.1)
    images_t = torch.from_numpy(train_x)[:, None]
    log("Training the teacher (open_clip CLIP, {}) on {} images in class-balanced groups of {}, {} per batch, "
        "{} epoch(s), seed {}".format(json.dumps(MODEL_CFG["vision_cfg"]), groups_per_epoch * num_classes,
                                      num_classes, groups_per_batch * num_classes, epochs, seed))
    start = time.time()
    history = []
    for epoch in range(epochs):
        model.train()
        groups = torch.from_numpy(class_balanced_groups(train_y, num_classes, rng))
        flips = torch.from_numpy(rng.rand(len(train_y)) < 0.5)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = groups[step * groups_per_batch:(step + 1) * groups_per_batch]  # [G, K]
            flat = idx.reshape(-1)
            x = images_t[flat]
            x = torch.where(flips[flat].view(-1, 1, 1, 1), x.flip(3), x)
            img = model.encode_image(to_teacher_input(uint8_to_gan(x), size), normalize=True)
            txt = model.encode_text(tokens, normalize=True)
            loss = grouped_clip_loss(loss_fn, img.view(idx.shape[0], num_classes, -1), txt, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, float(np.log(100)))  # as open_clip's training does
            total += float(loss.detach())
            if (step + 1) % max(1, steps_per_epoch // 4) == 0 and step + 1 < steps_per_epoch:
                log("  epoch {} step {}/{}: loss {:.4f}, {:.0f} s".format(epoch + 1, step + 1, steps_per_epoch,
                                                                          total / (step + 1), time.time() - start))
        acc = accuracy(zero_shot_logits(model, tokenizer, test_x, class_names), test_y)
        history.append(dict(epoch=epoch + 1, loss=total / steps_per_epoch, zero_shot_accuracy=acc,
                            seconds=time.time() - start))
        scale = float(model.logit_scale.detach().exp())
        log("epoch {}/{}: contrastive loss {:.4f}, logit scale {:.1f}, zero-shot test acc {:.2%}, {:.0f} s".format(
            epoch + 1, epochs, total / steps_per_epoch, scale, acc, time.time() - start))
    train_seconds = time.time() - start

    model.eval()
    tmp = paths["weights"] + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, paths["weights"])
    # Measure the saved file, loaded the way users load it.
    loaded, loaded_tok = load_teacher(out_dir)
    acc = accuracy(zero_shot_logits(loaded, loaded_tok, test_x, class_names), test_y)
    meta = dict(
        what="Fashion-MNIST CLIP-style teacher for KD-DLGAN", key=key, version=VERSION, model_name=model_name,
        model_cfg=MODEL_CFG, zero_shot_accuracy=acc, seed=seed, epochs=epochs,
        batch_size=groups_per_batch * num_classes, lr=lr, num_train=groups_per_epoch * num_classes,
        num_test=len(test_y), class_names=class_names, prompts=fmnist_data.prompts(class_names),
        train_seconds=round(train_seconds, 1), history=history,
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        machine=platform.processor() or platform.machine(), torch=torch.__version__,
        open_clip=open_clip.__version__, threads=torch.get_num_threads(),
        input=("GAN images NCHW in [-1, 1] -> [0, 1] -> resize (antialiased bilinear) to {s}x{s} -> gray repeated "
               "to 3 channels -> CLIP mean {m} / std {d}".format(s=size, m=list(CLIP_MEAN), d=list(CLIP_STD))),
        batches="class-balanced groups of one image per class; open_clip ClipLoss within each group, averaged",
    )
    with open(paths["meta"] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(paths["meta"] + ".tmp", paths["meta"])
    log("Teacher zero-shot test accuracy: {:.2%} ({} test images, prompts \"{}\"); trained in {:.0f} s; wrote {}"
        .format(acc, len(test_y), fmnist_data.PROMPT_TEMPLATE, train_seconds, out_dir))
    return dict(meta, **paths, reused=False)


def main(argv: Optional[List[str]] = None) -> None:
    parser = fmnist_common.train_parser(__doc__.split("\n\n")[0], DEFAULT_EPOCHS, DEFAULT_SEED, lr=1e-3,
                                        train_limit_help="train on a seeded class-balanced subset",
                                        extra=[(("--groups",), dict(type=int, default=25,
                                                                    help="class-balanced groups per batch (10 images each)"))])
    args = parser.parse_args(argv)
    meta = train(out_dir=args.out, epochs=args.epochs, seed=args.seed, groups_per_batch=args.groups, lr=args.lr,
                 train_limit=args.train_limit, test_limit=args.test_limit, threads=args.threads, force=args.force,
                 source=args.source)
    print("zero-shot accuracy {:.4f}".format(meta["zero_shot_accuracy"]))


if __name__ == "__main__":
    main()
