"""Named scalar statistics: reported from anywhere, read per interval, summed over processes.

Code that knows a number (a loss, a score, a timing) calls `report(name, value)`.
Reporting only adds to per-name tallies on the device the value lives on: no copy,
no synchronisation. A `Collector` (the training loop keeps one per tick and one for
ADA) turns the tallies into count/mean/std per name at `update()`, which is the only
place where processes talk to each other (one all-reduce of every pending tally).

Each name keeps three float64 moments, [count, sum, sum of squares]; every sync adds
all processes' pending moments into a running total per name, and a collector's
interval is the difference between the totals now and at its previous update. That
difference is also what an exact resume must carry over (`Collector.backlog`).
"""
import math
import re
from typing import Dict, List, Optional

import torch

import dnnlib

_MOMENTS = 3
_DTYPE = torch.float64     # Sums of many +-1 signs or losses stay exact enough.

_my_rank = 0
_reduce_device: Optional[torch.device] = None
_synced_once = False
# What is reported but not yet synced, per name (a _Tally). Tests look names up here.
_counters: Dict[str, "_Tally"] = {}
# Every sync so far, all processes together, per name (float64 on the CPU).
_totals: Dict[str, torch.Tensor] = {}
# The patterns of all collectors ever made, and a cache of which names any of them wants.
_collector_regexes: List["re.Pattern"] = []
_name_enabled: Dict[str, bool] = {}


def _zero_moments(device=None) -> torch.Tensor:
    return torch.zeros([_MOMENTS], dtype=_DTYPE, device=device)


def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Declare this process's rank and the device its all-reduce runs on (its CUDA device
    with NCCL, the CPU with gloo; None: one process, nothing to reduce). Must come before
    any collector synchronises, or ranks would disagree about what was summed."""
    global _my_rank, _reduce_device
    if _synced_once:
        raise RuntimeError("training_stats.init_multiprocessing() must be called before the first Collector.update()")
    _my_rank = int(rank)
    _reduce_device = None if sync_device is None else torch.device(sync_device)


class _Tally:
    """Moments reported under one name since the last sync, one running tensor per device
    so that reporting a CUDA value never waits for the device."""

    __slots__ = ("by_device",)

    def __init__(self):
        self.by_device: Dict[torch.device, torch.Tensor] = {}

    def add(self, moments: torch.Tensor) -> None:
        running = self.by_device.get(moments.device)
        if running is None:
            self.by_device[moments.device] = moments
        else:
            running.add_(moments)

    def drain_into(self, row: torch.Tensor) -> None:
        """Add everything pending to `row` and start again from zero."""
        for running in self.by_device.values():
            row.add_(running.to(row.device))
            running.zero_()


def _wanted(name: str) -> bool:
    """Whether some collector's pattern matches `name` (cached: report() is called often)."""
    known = _name_enabled.get(name)
    if known is None:
        known = any(pattern.fullmatch(name) is not None for pattern in _collector_regexes)
        _name_enabled[name] = known
    return known


def _moments_of(value) -> Optional[torch.Tensor]:
    """[count, sum, sum of squares] over every element of `value` (None when it has none)."""
    flat = torch.as_tensor(value)
    if flat.numel() == 0:
        return None
    flat = flat.detach().reshape(-1).to(_DTYPE)
    count = flat.new_ones([]) * flat.numel()
    return torch.stack([count, flat.sum(), flat.square().sum()])


def report(name: str, value):
    """Add scalar(s) to the statistics of `name` and hand `value` back unchanged.

    A name that no collector listens to costs nothing. Every process should report the
    same names, an empty value if it has nothing, because a sync reduces one row per
    name in sorted order: an empty report still registers the name.
    """
    if _wanted(name):
        tally = _counters.get(name)
        if tally is None:
            tally = _counters[name] = _Tally()
        moments = _moments_of(value)
        if moments is not None:
            tally.add(moments)
    return value


def report0(name: str, value):
    """report() what rank 0 knows; the other ranks register the name with nothing."""
    report(name, value if _my_rank == 0 else [])
    return value


def _sync(names: List[str]) -> List[torch.Tensor]:
    """Fold every process's pending moments of `names` into the running totals and return
    those totals, in the order of `names` (a collective call when distributed)."""
    global _synced_once
    if not names:
        return []
    _synced_once = True
    rows = _zero_moments(_reduce_device or torch.device("cpu")).repeat(len(names), 1)
    for row, name in zip(rows, names):
        _counters[name].drain_into(row)
    if _reduce_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(rows)
    totals = []
    for row, name in zip(rows.cpu(), names):
        total = _totals.get(name)
        if total is None:
            total = _totals[name] = _zero_moments()
        total.add_(row)
        totals.append(total)
    return totals


def _describe(moments: Optional[torch.Tensor]):
    """(num, mean, population std) of one interval's moments; NaN where undefined."""
    if moments is None:
        return 0, math.nan, math.nan
    count, total, squares = (float(v) for v in moments)
    if count == 0:
        return 0, math.nan, math.nan
    mean = total / count
    if not math.isfinite(total):
        return int(count), mean, math.nan
    spread = 0.0 if count == 1 else math.sqrt(max(squares / count - mean * mean, 0.0))
    return int(count), mean, spread


class Collector:
    """The statistics of the names fully matching `regex`, per interval between updates.

    `update()` takes what every process reported since this collector's previous update.
    With `keep_previous`, a name that got nothing new keeps its last interval's values;
    without, it drops out until reported again. A new collector starts empty: what was
    reported before it existed is not its business.
    """

    def __init__(self, regex: str = ".*", keep_previous: bool = True):
        self._pattern = re.compile(regex)
        self._keep_previous = keep_previous
        self._seen: Dict[str, torch.Tensor] = {}       # The totals at this collector's last update.
        self._interval: Dict[str, torch.Tensor] = {}   # Moments of the last interval that had any.
        _collector_regexes.append(self._pattern)
        for name in [name for name, wanted in _name_enabled.items() if not wanted]:
            del _name_enabled[name]                     # Ignored so far; this pattern may want it.
        self.update()
        self._interval.clear()

    def names(self) -> List[str]:
        """Every name reported so far that this collector matches, sorted (the same on all ranks)."""
        return sorted(name for name in _counters if self._pattern.fullmatch(name))

    def update(self) -> None:
        """Start a new interval from everything reported since the previous one. Every rank
        must call it at the same point: it all-reduces."""
        if not self._keep_previous:
            self._interval.clear()
        names = self.names()
        for name, total in zip(names, _sync(names)):
            before = self._seen.get(name)
            fresh = total.clone() if before is None else total - before
            self._seen[name] = total.clone()
            if float(fresh[0]) != 0:
                self._interval[name] = fresh

    def backlog(self, name: str) -> torch.Tensor:
        """Moments of `name` already synced (by any collector's update) that this collector's
        next update would still count: what a checkpoint must keep so that a resumed
        process's collector sees them too. Read it right after another collector synced."""
        total = _totals.get(name)
        if total is None:
            return _zero_moments()
        before = self._seen.get(name)
        return total.clone() if before is None else total - before

    def restore_backlog(self, name: str, moments) -> None:
        """Make the next update also count `moments` (a backlog() saved before a restart)."""
        total = _totals.get(name)
        base = _zero_moments() if total is None else total.clone()
        self._seen[name] = base - torch.as_tensor(moments).to(_DTYPE)

    def num(self, name: str) -> int:
        """How many scalars the last interval got under `name`."""
        return _describe(self._interval.get(name))[0]

    def mean(self, name: str) -> float:
        """Their mean (NaN when there were none)."""
        return _describe(self._interval.get(name))[1]

    def std(self, name: str) -> float:
        """Their population standard deviation (NaN when there were none)."""
        return _describe(self._interval.get(name))[2]

    def as_dict(self) -> dnnlib.EasyDict:
        """{name: {num, mean, std}} of the names that have an interval, for stats.jsonl."""
        table = dnnlib.EasyDict()
        for name in self.names():
            if name in self._interval:
                num, mean, std = _describe(self._interval[name])
                table[name] = dnnlib.EasyDict(num=num, mean=mean, std=std)
        return table

    def __getitem__(self, name: str) -> float:
        return self.mean(name)


def strict_json_value(value):
    """`value` (nested dicts, lists, numbers) with every NaN or infinity replaced by None, so that
    json.dumps(..., allow_nan=False) writes strict JSON (a diverged loss is `null`, not `NaN`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return type(value)((key, strict_json_value(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    return value
