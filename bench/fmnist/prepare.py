"""Everything the Fashion-MNIST comparison needs, made (or reused) before the first run.

`compare.py --budget=cpu|gpu` calls `prepare` (named in the preset, see
`bench/compare_methods.py`); its result fills the preset's `{placeholders}`:

    fmnist_train     <outdir>/data/fmnist-<per_class*10>-<res>.zip   the seeded class-balanced few-shot set
    fmnist_test      <outdir>/data/fmnist-test-<res>.zip             the 10k test split, what FID/KID compare against
    evaluator        the evaluator's TorchScript file (bench/fmnist/evaluator.py; trained if not cached)
    teacher_weights  the CLIP teacher's open_clip checkpoint (bench/fmnist/teacher.py; trained if not cached)
    teacher_config   its open_clip model config

Resolution: 32 by default, Fashion-MNIST's own size (the dataset tool pads
28x28 to 32x32, one channel): every compared backbone builds it (FastGAN's
smallest output is 32), the evaluator and the teacher see exactly what they
were trained on, and a CPU iteration costs about a quarter of one at 64
(the first presets, 2026-11, trained at 64 because FastGAN started there).
A larger `resolution` resizes with Lanczos; the evaluator and the teacher then
resize back to 32x32 with an antialiased bilinear filter.

The evaluator and the teacher take minutes to train on a CPU (about 9 and 18
on two cores); they are cached under `<dnnlib cache>/kdgan-fmnist/` and
reused by every later comparison. `prepare.json` in the data folder records
what was used (paths, accuracies).
"""
import json
import os
from typing import Callable, Optional

from bench.fmnist import data as fmnist_data
import dataset_tool  # noqa: E402  (on sys.path through bench.fmnist.data)

RESOLUTION = 32


def _dataset(dest: str, log: Callable[[str], None], **kwargs) -> str:
    """Convert once: the zip is written to a temporary name and renamed, so a half-written file is never reused."""
    if os.path.isfile(dest):
        log('[prepare] reusing {}'.format(dest))
        return dest
    tmp = dest + '.partial.zip'
    if os.path.exists(tmp):
        os.remove(tmp)
    dataset_tool.convert_dataset(dest=tmp, log=log, **kwargs)
    os.replace(tmp, dest)
    return dest


def prepare(outdir: str, resolution: int = RESOLUTION, per_class: int = 10, seed: int = 0,
            evaluator_kwargs: Optional[dict] = None, teacher_kwargs: Optional[dict] = None,
            source: Optional[str] = None, log: Callable[[str], None] = print) -> dict:
    """Write the two datasets under `outdir/data`, train or reuse the evaluator and the teacher.

    Returns the placeholder values (see the module docstring). `evaluator_kwargs` /
    `teacher_kwargs` go to `evaluator.train` / `teacher.train` (e.g. epochs, train_limit in tests).
    """
    if not fmnist_data.is_available(source):
        raise FileNotFoundError(
            'Fashion-MNIST not found in {}: install it with `apt-get install dataset-fashion-mnist` or point '
            '${} at a folder with the IDX files'.format(fmnist_data.fmnist_dir(source), fmnist_data.ENV_VAR))
    from bench.fmnist import evaluator, teacher  # pylint: disable=import-outside-toplevel  (torch, open_clip)
    folder = os.path.join(outdir, 'data')
    os.makedirs(folder, exist_ok=True)
    src = fmnist_data.fmnist_dir(source)
    log('[prepare] Fashion-MNIST from {}, {}x{}'.format(src, resolution, resolution))
    train_zip = _dataset(os.path.join(folder, 'fmnist-{}-seed{}-{}.zip'.format(per_class * 10, seed, resolution)),
                         log, source=src, split='train', subset_per_class=per_class, seed=seed,
                         resolution=resolution)
    test_zip = _dataset(os.path.join(folder, 'fmnist-test-{}.zip'.format(resolution)), log, source=src,
                        split='test', resolution=resolution)
    log('[prepare] evaluator (bench/fmnist/evaluator.py; minutes on a CPU when not cached)')
    ev = evaluator.train(source=source, log=log, **(evaluator_kwargs or {}))
    log('[prepare] teacher (bench/fmnist/teacher.py; minutes on a CPU when not cached)')
    te = teacher.train(source=source, log=log, **(teacher_kwargs or {}))
    values = dict(fmnist_train=train_zip, fmnist_test=test_zip, evaluator=ev['path'],
                  teacher_weights=te['weights'], teacher_config=te['config'])
    record = dict(values, evaluator_test_accuracy=ev.get('test_accuracy'),
                  teacher_zero_shot_accuracy=te.get('zero_shot_accuracy'), per_class=per_class, seed=seed,
                  resolution=resolution)
    with open(os.path.join(folder, 'prepare.json'), 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=2)
    return values
