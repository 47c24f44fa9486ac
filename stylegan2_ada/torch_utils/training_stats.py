"""Statistics reported from anywhere in the code and collected across processes.

Code calls `report(name, value)` wherever a number is known (losses, scores,
timings); the training loop owns a `Collector` that, once per tick, sums what
every process reported since the last update and exposes num/mean/std per name.
Reporting is cheap (no device sync); only `Collector.update()` synchronises.
"""
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

import dnnlib

_num_moments = 3                 # [count, sum, sum of squares]
_counter_dtype = torch.float64   # float64 keeps sums of many values exact enough.
_rank = 0
_sync_device: Optional[torch.device] = None
_sync_called = False
_counters: Dict[str, Dict[torch.device, torch.Tensor]] = {}   # Since the last sync, per name and device.
_cumulative: Dict[str, torch.Tensor] = {}                     # Since the start, per name (on the CPU).
_collector_regexes: List["re.Pattern"] = []                   # Of every Collector created.
_name_enabled: Dict[str, bool] = {}                           # Whether any collector regex matches a name.


def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Tell this process its rank and where to all-reduce (the process's CUDA device with
    NCCL, the CPU with gloo). Call before the first Collector.update(); None = no syncing."""
    global _rank, _sync_device
    if _sync_called:
        raise RuntimeError("training_stats.init_multiprocessing() must be called before the first Collector.update()")
    _rank = int(rank)
    _sync_device = torch.device(sync_device) if sync_device is not None else None


def _is_enabled(name: str) -> bool:
    enabled = _name_enabled.get(name)
    if enabled is None:
        enabled = any(regex.fullmatch(name) for regex in _collector_regexes)
        _name_enabled[name] = enabled
    return enabled


def report(name: str, value):
    """Record scalar(s) under `name`; returns `value` so it can wrap an expression.

    Names that no Collector's regex matches are ignored, so stray reports cost
    nothing. Every process should report the same names (an empty value is
    fine) because updates reduce over the sorted list of names.
    """
    if not _is_enabled(name):
        return value
    per_device = _counters.setdefault(name, {})
    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().flatten().to(_counter_dtype)
    moments = torch.stack([
        torch.ones_like(elems).sum(),
        elems.sum(),
        elems.square().sum(),
    ])
    counter = per_device.get(moments.device)
    if counter is None:
        per_device[moments.device] = moments
    else:
        counter.add_(moments)
    return value


def report0(name: str, value):
    """report() on rank 0 only; other ranks register the name with nothing, keeping names in step."""
    report(name, value if _rank == 0 else [])
    return value


class Collector:
    """Collects what was reported for names fully matching `regex`.

    `update()` takes the values reported (by all processes) since the previous
    update; with `keep_previous`, names that got nothing new keep their last
    statistics instead of disappearing. Creating a collector starts it empty.
    """

    def __init__(self, regex: str = ".*", keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative: Dict[str, torch.Tensor] = {}
        self._moments: Dict[str, torch.Tensor] = {}
        _collector_regexes.append(self._regex)
        # Names ignored so far may match this regex.
        for name in [n for n, enabled in _name_enabled.items() if not enabled]:
            del _name_enabled[name]
        self.update()
        self._moments.clear()

    def names(self) -> List[str]:
        """Names known to this collector, sorted so that all ranks agree on the order."""
        return sorted(name for name in _counters if self._regex.fullmatch(name))

    def update(self) -> None:
        """Gather everything reported since the previous update (a collective call when
        distributed: every rank must call it)."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            previous = self._cumulative.get(name)
            if previous is None:
                previous = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cumulative - previous
            self._cumulative[name] = cumulative.clone()
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name: str) -> torch.Tensor:
        delta = self._moments.get(name)
        if delta is None:
            delta = torch.zeros([_num_moments], dtype=_counter_dtype)
        return delta

    def num(self, name: str) -> int:
        """How many scalars were reported in the last update interval."""
        return int(self._get_delta(name)[0])

    def mean(self, name: str) -> float:
        """Mean of those scalars (NaN when there were none)."""
        count, total, _ = (float(v) for v in self._get_delta(name))
        if count == 0:
            return float("nan")
        return total / count

    def std(self, name: str) -> float:
        """Population standard deviation of those scalars (NaN when there were none)."""
        count, total, total_sq = (float(v) for v in self._get_delta(name))
        if count == 0 or not np.isfinite(total):
            return float("nan")
        if count == 1:
            return 0.0
        mean = total / count
        return float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))

    def as_dict(self) -> dnnlib.EasyDict:
        """{name: {num, mean, std}} for logging to stats.jsonl / TensorBoard."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            if name in self._moments:
                stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name: str) -> float:
        return self.mean(name)


def _sync(names: List[str]) -> List[Tuple[str, torch.Tensor]]:
    """Move this process's pending counters into the global cumulative totals, summed
    over all ranks; returns (name, cumulative moments) pairs."""
    global _sync_called
    if len(names) == 0:
        return []
    _sync_called = True
    device = _sync_device if _sync_device is not None else torch.device("cpu")

    deltas = torch.zeros([len(names), _num_moments], dtype=_counter_dtype, device=device)
    for idx, name in enumerate(names):
        for counter in _counters[name].values():
            deltas[idx].add_(counter.to(device))
            counter.zero_()

    if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(deltas)

    deltas = deltas.cpu()
    result = []
    for idx, name in enumerate(names):
        cumulative = _cumulative.get(name)
        if cumulative is None:
            cumulative = torch.zeros([_num_moments], dtype=_counter_dtype)
            _cumulative[name] = cumulative
        cumulative.add_(deltas[idx])
        result.append((name, cumulative))
    return result
