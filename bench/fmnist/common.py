"""Code shared by the Fashion-MNIST evaluator and teacher scripts: the cache key and
folder of a trained model, and the command line of their `main`."""
import argparse
from typing import Optional, Sequence, Tuple

from bench.fmnist import data as fmnist_data  # noqa: F401  (puts the harness on sys.path, for dnnlib)
import dnnlib  # noqa: E402


def cache_key(version: int, seed: int, epochs: int, train_limit: Optional[int] = None,
              test_limit: Optional[int] = None) -> str:
    """What a trained model depends on (the folder name in the cache; checked on reuse)."""
    key = "v{}-seed{}-ep{}".format(version, seed, epochs)
    if train_limit is not None:
        key += "-n{}".format(train_limit)
    if test_limit is not None:
        key += "-t{}".format(test_limit)
    return key


def cache_dir(kind: str, key: str) -> str:
    """`<dnnlib cache>/kdgan-fmnist/<kind>-<key>`."""
    return dnnlib.util.make_cache_dir_path("kdgan-fmnist", kind + "-" + key)


def train_parser(description: str, epochs: int, seed: int, lr: float, train_limit_help: str,
                 extra: Sequence[Tuple[tuple, dict]] = ()) -> argparse.ArgumentParser:
    """The training command line: --out --epochs --seed, then `extra` ((args, kwargs) for
    add_argument), then --lr --threads --train-limit --test-limit --source --force."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=None, help="output folder (default: the dnnlib cache, keyed by seed/epochs)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=seed)
    for args, kwargs in extra:
        parser.add_argument(*args, **kwargs)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--train-limit", type=int, default=None, help=train_limit_help)
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on a seeded class-balanced subset")
    parser.add_argument("--source", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--force", action="store_true", help="retrain even when the folder holds a matching one")
    return parser
