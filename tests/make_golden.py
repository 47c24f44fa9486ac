"""Write tests/golden/<case>.pt (text-only cases: <case>.json.gz) from the tree first on sys.path.

Usage (regenerate from the frozen tree /work/orig, run from anywhere):

    OMP_NUM_THREADS=1 PYTHONPATH=/work/orig/stylegan2_ada:/work/orig python tests/make_golden.py [CASE ...] [--out DIR]

Only regenerate from the implementation the goldens are meant to freeze: the
files are the reference that tests/test_golden.py checks later trees against.
"""
import argparse
import gzip
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import golden_cases  # noqa: E402


def save(name, values, out_dir):
    """Gzipped JSON for the text-only cases (dry runs: text repeats a lot), torch.save for the rest."""
    if all(isinstance(v, str) for v in values.values()):
        path = os.path.join(out_dir, f'{name}.json.gz')
        with gzip.GzipFile(path, 'wb', mtime=0) as f:
            f.write(json.dumps(values, indent=1, sort_keys=True).encode('utf-8'))
    else:
        path = os.path.join(out_dir, f'{name}.pt')
        torch.save(values, path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('cases', nargs='*', help='case names (default: all)')
    parser.add_argument('--out', default=os.path.join(HERE, 'golden'), help='output folder')
    opts = parser.parse_args()
    os.makedirs(opts.out, exist_ok=True)
    import training
    print(f'implementation: {os.path.dirname(os.path.dirname(os.path.abspath(training.__file__)))}')
    for name in opts.cases or list(golden_cases.CASES):
        start = time.time()
        values = golden_cases.run_case(name)
        path = save(name, values, opts.out)
        print(f'{name:28s} {len(values):5d} values {os.path.getsize(path) / 1024:8.1f} KiB {time.time() - start:6.1f} s')


if __name__ == '__main__':
    main()
