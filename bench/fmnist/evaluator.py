"""The Fashion-MNIST evaluator: a small CNN classifier whose penultimate features the FID/KID use.

Trained on the full 60k training split at 32x32 grayscale (fixed seed), its
test accuracy printed, and exported as a TorchScript detector with NVIDIA's
call signature, so the harness's metrics load it like their Inception file
(`metrics.detectors.load_detector_file` -> `torch.jit.load`):

    det = torch.jit.load('evaluator.pt')
    feats = det(images, return_features=True)   # images: NCHW, values 0..255 (uint8 or float),
                                                # 1 or 3 channels (RGB is averaged to gray), any size
                                                # (resized to 32x32); feats: [N, 256]
    logits = det(images)                        # [N, 10]

The Fréchet distance and KID are the harness's own (`metrics.frechet_inception_distance.fid_from_features`,
`metrics.kernel_inception_distance.kid_from_features`); `feature_distances` below just calls them.

    python bench/fmnist/evaluator.py --out DIR [--epochs 2] [--seed 0]

writes DIR/evaluator.pt (TorchScript) and DIR/evaluator.json (accuracy, seed, date, arch, ...). Without
--out it uses the cache `<dnnlib cache>/kdgan-fmnist/evaluator-v<VERSION>-seed<S>-ep<E>`. A folder that
already holds an evaluator trained with the same version, seed, epochs and data is reused, not retrained
(--force retrains).
"""
import datetime
import json
import os
import platform
import sys
import time
import warnings
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(ROOT, "stylegan2_ada")
for _p in (ROOT, HARNESS):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench.fmnist import common as fmnist_common  # noqa: E402
from bench.fmnist import data as fmnist_data  # noqa: E402

VERSION = 1  # bump when the architecture, preprocessing or training changes: invalidates caches
ARCH = ("cnn: conv5x5/2 1->32 @32->16, conv3x3 32->64 + maxpool @16->8, conv3x3 64->128 + maxpool @8->4 "
        "(each conv-BN-ReLU), fc 2048->256 (features, ReLU), dropout 0.3, fc 256->10")
FEATURE_DIM = 256
DEFAULT_EPOCHS = 2
DEFAULT_SEED = 0
WEIGHTS_NAME = "evaluator.pt"
META_NAME = "evaluator.json"


# The network (scriptable; the preprocessing lives inside, so the file is self-contained).


class FMNISTClassifier(nn.Module):
    """Input: NCHW in 0..255 (uint8 or float), 1 or 3 channels, any size. Output: logits or features."""

    def __init__(self, num_classes: int = 10, feature_dim: int = FEATURE_DIM, resolution: int = 32):
        super().__init__()
        self.resolution = resolution
        def block(cin, cout, kernel, stride, pool):
            layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                      nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])
        # A strided stem: on a shared 2-core CPU the full-resolution 3x3 layers cost more than they give.
        self.trunk = nn.Sequential(*block(1, 32, 5, 2, False), *block(32, 64, 3, 1, True), *block(64, 128, 3, 1, True))
        flat = 128 * (resolution // 8) ** 2
        self.fc = nn.Linear(flat, feature_dim)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """0..255 NCHW (1 or 3 channels) -> float [N, 1, 32, 32] in [-1, 1]."""
        if img.dim() != 4:
            raise RuntimeError("expected NCHW images")
        x = img.to(torch.float32)
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)  # the harness repeats gray to RGB; the mean undoes that exactly
        elif x.shape[1] != 1:
            raise RuntimeError("expected 1 or 3 channels")
        if x.shape[2] != self.resolution or x.shape[3] != self.resolution:
            x = F.interpolate(x, size=[self.resolution, self.resolution], mode="bilinear", align_corners=False,
                              antialias=True)
        return x / 127.5 - 1.0

    def features(self, img: torch.Tensor) -> torch.Tensor:
        x = self.trunk(self.preprocess(img))
        return F.relu(self.fc(torch.flatten(x, 1)))

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        f = self.features(img)
        if return_features:
            return f
        return self.head(self.dropout(f))


# Helpers shared with the tests and the comparison runner.


def accuracy(logits: torch.Tensor, labels) -> float:
    """Fraction of rows whose argmax equals the label."""
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels).to(torch.long)
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError("expected logits [N, K] and labels [N], got {} and {}".format(
            list(logits.shape), list(labels.shape)))
    if logits.shape[0] == 0:
        raise ValueError("no samples")
    return float((logits.argmax(dim=1) == labels).to(torch.float64).mean())


@torch.no_grad()
def run_batched(net, images: np.ndarray, return_features: bool = False, batch_size: int = 500) -> torch.Tensor:
    """Apply `net` (eager or TorchScript) to uint8 images [N, H, W] or [N, C, H, W] in batches."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    out = []
    for i in range(0, images.shape[0], batch_size):
        out.append(net(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])),
                       return_features=return_features))
    return torch.cat(out)


def feature_distances(feats_a, feats_b, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0
                      ) -> Dict[str, float]:
    """FID and KID between two feature sets [N, F], computed by the harness's metrics module."""
    from metrics import frechet_inception_distance, kernel_inception_distance
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    fid = frechet_inception_distance.fid_from_features(a, b)
    kid = kernel_inception_distance.kid_from_features(a, b, num_subsets=kid_subsets, max_subset_size=kid_subset_size,
                                                      seed=seed)
    return dict(fid=float(fid), kid=float(kid))


def cache_key(seed: int, epochs: int, train_limit: Optional[int] = None, test_limit: Optional[int] = None) -> str:
    """What a trained evaluator depends on (the folder name in the cache; checked on reuse)."""
    return fmnist_common.cache_key(VERSION, seed, epochs, train_limit, test_limit)


def default_dir(seed: int = DEFAULT_SEED, epochs: int = DEFAULT_EPOCHS, train_limit: Optional[int] = None,
                test_limit: Optional[int] = None) -> str:
    return fmnist_common.cache_dir("evaluator", cache_key(seed, epochs, train_limit, test_limit))


def load(out_dir: str, device="cpu"):
    """The TorchScript detector in `out_dir` (or a path to the .pt itself)."""
    path = out_dir if os.path.isfile(out_dir) else os.path.join(out_dir, WEIGHTS_NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # recent torch calls TorchScript deprecated; metrics use it
        return torch.jit.load(path, map_location=device).eval()


def one_cycle(opt, max_lr: float, total_steps: int, pct_start: float):
    """torch's OneCycleLR, with the warm-up at least two steps long so that tiny runs (tests) are valid."""
    total_steps = max(1, int(total_steps))
    pct = max(pct_start, min(0.5, 2.0 / total_steps))
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps, pct_start=pct)


def balanced_subset(images: np.ndarray, labels: np.ndarray, limit: Optional[int], seed: int):
    """A seeded class-balanced subset of about `limit` images (limit // classes of each), or everything."""
    if limit is None or limit >= len(labels):
        return images, labels
    per_class = max(1, int(limit) // len(np.unique(labels)))
    idx = np.asarray(fmnist_data.few_shot_indices(labels, per_class=per_class, seed=seed), dtype=np.int64)
    return images[idx], labels[idx]


# Training.


def train(out_dir: Optional[str] = None, epochs: int = DEFAULT_EPOCHS, seed: int = DEFAULT_SEED,
          batch_size: int = 128, lr: float = 2e-3, train_limit: Optional[int] = None, test_limit: Optional[int] = None,
          threads: Optional[int] = 2, force: bool = False, source: Optional[str] = None,
          log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) the evaluator; returns its metadata (the evaluator.json contents plus 'path').

    `train_limit`/`test_limit` take a seeded subset of the splits (tests); the defaults use all 60k/10k.
    """
    if threads:
        torch.set_num_threads(int(threads))
    key = cache_key(seed, epochs, train_limit, test_limit)
    out_dir = os.path.expanduser(out_dir) if out_dir else default_dir(seed, epochs, train_limit, test_limit)
    meta_path = os.path.join(out_dir, META_NAME)
    weights_path = os.path.join(out_dir, WEIGHTS_NAME)
    if not force and os.path.isfile(meta_path) and os.path.isfile(weights_path):
        with open(meta_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("key") == key:
            log("Reusing the evaluator in {} (trained {}; test accuracy {:.2%})".format(
                out_dir, meta.get("date"), meta["test_accuracy"]))
            return dict(meta, path=weights_path, reused=True)
        log("{} holds an evaluator of another configuration ({}); retraining".format(out_dir, meta.get("key")))

    train_x, train_y, class_names = fmnist_data.load_split("train", source)
    test_x, test_y, _ = fmnist_data.load_split("test", source)
    train_x, train_y = balanced_subset(train_x, train_y, train_limit, seed)
    test_x, test_y = balanced_subset(test_x, test_y, test_limit, seed)
    n = len(train_y)
    log("Training the evaluator ({}) on {} images, {} epoch(s), seed {}".format(ARCH, n, epochs, seed))

    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    net = FMNISTClassifier(num_classes=len(class_names))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    sched = one_cycle(opt, lr, epochs * steps_per_epoch, pct_start=0.2)
    images_t = torch.from_numpy(train_x)[:, None]  # uint8 [N, 1, 32, 32]
    labels_t = torch.from_numpy(train_y)
    start = time.time()
    history = []
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(n))
        flips = torch.from_numpy(rng.rand(n) < 0.5)
        total_loss, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = images_t[idx]
            x = torch.where(flips[idx].view(-1, 1, 1, 1), x.flip(3), x)  # random horizontal flip
            y = labels_t[idx]
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if (i + 1) % max(1, steps_per_epoch // 4) == 0 and i + 1 < steps_per_epoch:
                seen = min((i + 1) * batch_size, n)
                log("  epoch {} step {}/{}: loss {:.4f}, {:.0f} s".format(epoch + 1, i + 1, steps_per_epoch,
                                                                          total_loss / seen, time.time() - start))
        net.eval()
        test_acc = accuracy(run_batched(net, test_x), test_y)
        history.append(dict(epoch=epoch + 1, train_loss=total_loss / n, train_accuracy=correct / n,
                            test_accuracy=test_acc, seconds=time.time() - start))
        log("epoch {}/{}: train loss {:.4f}, train acc {:.2%}, test acc {:.2%}, {:.0f} s".format(
            epoch + 1, epochs, total_loss / n, correct / n, test_acc, time.time() - start))
    train_seconds = time.time() - start

    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(net)
    os.makedirs(out_dir, exist_ok=True)
    tmp = weights_path + ".tmp"
    scripted.save(tmp)
    # The file must give what the eager network gives before it replaces anything.
    check = load(tmp)
    probe = torch.from_numpy(test_x[:16])[:, None]
    if not torch.allclose(check(probe, return_features=True), net(probe, return_features=True), atol=1e-5):
        raise RuntimeError("the TorchScript export does not reproduce the network")
    test_logits = run_batched(check, test_x)
    test_acc = accuracy(test_logits, test_y)
    os.replace(tmp, weights_path)
    meta = dict(
        what="Fashion-MNIST evaluator (FID/KID feature extractor)", key=key, version=VERSION, arch=ARCH,
        feature_dim=FEATURE_DIM, test_accuracy=test_acc, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
        num_train=n, num_test=len(test_y), class_names=class_names, train_seconds=round(train_seconds, 1),
        history=history, date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        machine=platform.processor() or platform.machine(), torch=torch.__version__, threads=torch.get_num_threads(),
        input="NCHW, 0..255 (uint8 or float), 1 or 3 channels (averaged), resized to 32x32; "
              "det(x, return_features=True) -> [N, {}]".format(FEATURE_DIM),
    )
    with open(meta_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(meta_path + ".tmp", meta_path)
    log("Evaluator test accuracy: {:.2%} ({} test images); trained in {:.0f} s; wrote {}".format(
        test_acc, len(test_y), train_seconds, weights_path))
    return dict(meta, path=weights_path, reused=False)


def main(argv=None) -> None:
    parser = fmnist_common.train_parser(__doc__.split("\n\n")[0], DEFAULT_EPOCHS, DEFAULT_SEED, lr=2e-3,
                                        train_limit_help="train on a seeded subset (smoke runs)",
                                        extra=[(("--batch",), dict(type=int, default=128))])
    args = parser.parse_args(argv)
    meta = train(out_dir=args.out, epochs=args.epochs, seed=args.seed, batch_size=args.batch, lr=args.lr,
                 train_limit=args.train_limit, test_limit=args.test_limit, threads=args.threads, force=args.force,
                 source=args.source)
    print("test accuracy {:.4f}".format(meta["test_accuracy"]))


if __name__ == "__main__":
    main()
