"""What every part of the runner shares: where the harness is, limits, errors, atomic writes."""
import json
import os
import re
import sys

import click

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(ROOT, 'stylegan2_ada')
for _path in (ROOT, HARNESS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

TRAIN_PY = os.path.join(HARNESS, 'train.py')
STATE_VERSION = 1
RESERVED_FLAGS = ('--outdir', '--seed', '--kimg', '--tick', '--snap', '--resume', '--metrics', '--dry-run', '-n')
UNLIMITED_KIMG = 1000000      # what train.py gets when only --minutes bounds a run
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 30
CKPT_WAIT_SECONDS = 300     # how long a --minutes stop waits for the final snapshot's checkpoint
SEGMENT_RE = re.compile(r'^(\d+)-')


class CompareError(click.ClickException):
    """A problem the user can fix; shown as one message."""


class RunFailed(Exception):
    """train.py ended without reaching the budget."""


def write_json_atomic(path, data):
    tmp = '{}.tmp{}'.format(path, os.getpid())
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2)
        f.write('\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path, text):
    tmp = '{}.tmp{}'.format(path, os.getpid())
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)


def say(text):
    print(text, flush=True)
