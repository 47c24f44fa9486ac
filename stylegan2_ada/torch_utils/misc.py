"""Small PyTorch helpers used throughout networks, losses and the training loop."""
import contextlib
import functools
import itertools
import re
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

import dnnlib

# Cached constant tensors

_constant_cache: Dict[tuple, torch.Tensor] = {}


def constant(value, shape=None, dtype=None, device=None, memory_format=None) -> torch.Tensor:
    """A tensor holding `value` (broadcast to `shape`), created once per distinct request.

    Networks build filters and small matrices on every forward; caching them
    avoids repeated host-to-device copies. Callers must not modify the result.
    """
    array = np.asarray(value)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    device = torch.device("cpu") if device is None else torch.device(device)
    if memory_format is None:
        memory_format = torch.contiguous_format
    key = (array.shape, array.dtype.str, array.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key)
    if tensor is None:
        tensor = torch.as_tensor(array.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor = tensor.expand(shape)
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor


def nan_to_num(input: torch.Tensor, nan: float = 0.0, posinf: Optional[float] = None,
               neginf: Optional[float] = None, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Replace NaN/inf (infinities default to the dtype's extremes), as torch.nan_to_num."""
    return torch.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf, out=out)


# Tracing-friendly assertions


@contextlib.contextmanager
def suppress_tracer_warnings():
    """Silence torch.jit.TracerWarning inside the block (shape checks trigger it harmlessly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        yield


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Any]) -> None:
    """Check a tensor's shape against `ref_shape`, where None matches any size.

    Sizes may be tensors or symbolic ints under tracing; those are checked
    with torch._assert so that the check is recorded rather than baked in.
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError("Wrong number of dimensions: got {}, expected {}".format(tensor.ndim, len(ref_shape)))
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(size, torch.Tensor) or isinstance(ref_size, torch.Tensor):
            # Traced sizes: reading them as numbers (also to format the message) warns harmlessly.
            with suppress_tracer_warnings():
                torch._assert(torch.equal(torch.as_tensor(size), torch.as_tensor(ref_size)),
                              _size_message(idx, size, ref_size))
        elif isinstance(size, torch.SymInt) or isinstance(ref_size, torch.SymInt):
            torch._assert(size == ref_size, _size_message(idx, size, ref_size))
        elif size != ref_size:
            raise AssertionError(_size_message(idx, size, ref_size))


def _size_message(idx: int, size, ref_size) -> str:
    return "Wrong size for dimension {}: got {}, expected {}".format(idx, size, ref_size)


def profiled_function(fn):
    """Decorator: show the function by name in torch.profiler traces."""
    name = fn.__name__

    @functools.wraps(fn)
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(name):
            return fn(*args, **kwargs)

    return decorator


# Data


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices; rank r of n takes every n-th draw from r.

    All ranks run the same seeded sequence, so their slices are disjoint and
    together cover the data evenly. With `shuffle`, each drawn position is
    swapped with one up to `window_size * len(dataset)` places back, so the
    order keeps changing without epoch boundaries.
    """

    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1, shuffle: bool = True, seed: int = 0,
                 window_size: float = 0.5):
        _check_sampler_args(len(dataset), rank, num_replicas, window_size)
        super().__init__()
        self.dataset, self.seed, self.shuffle = dataset, seed, shuffle
        self.rank, self.num_replicas, self.window_size = rank, num_replicas, window_size

    def __iter__(self) -> Iterator[int]:
        stream = _drifting_order(len(self.dataset), self.seed if self.shuffle else None, self.window_size)
        return itertools.islice(stream, self.rank, None, self.num_replicas)


def _check_sampler_args(size: int, rank: int, num_replicas: int, window_size: float) -> None:
    if size <= 0:
        raise ValueError("InfiniteSampler needs a non-empty dataset")
    if num_replicas <= 0 or not 0 <= rank < num_replicas:
        raise ValueError("Need 0 <= rank < num_replicas, got rank={}, num_replicas={}".format(rank, num_replicas))
    if not 0 <= window_size <= 1:
        raise ValueError("window_size must be in [0, 1]")


def _drifting_order(n: int, seed: Optional[int], window_size: float) -> Iterator[int]:
    """Cycle through range(n) forever. With a seed the cycle starts from a seeded
    permutation and, after each draw, the drawn slot trades places with a random slot
    at most round(n * window_size) - 1 positions behind it (cyclically)."""
    perm = np.arange(n)
    rng = None
    reach = 0
    if seed is not None:
        rng = np.random.RandomState(seed)
        rng.shuffle(perm)
        reach = int(np.rint(n * window_size))
    for step in itertools.count():
        slot = step % n
        yield int(perm[slot])
        if reach >= 2:
            partner = (slot - rng.randint(reach)) % n
            perm[slot], perm[partner] = perm[partner], perm[slot]


# Parameters and buffers


def params_and_buffers(module: torch.nn.Module) -> List[torch.Tensor]:
    if not isinstance(module, torch.nn.Module):
        raise TypeError("Expected a torch.nn.Module")
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> List[Tuple[str, torch.Tensor]]:
    if not isinstance(module, torch.nn.Module):
        raise TypeError("Expected a torch.nn.Module")
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()
def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module, require_all: bool = False) -> None:
    """Copy tensors that share a name (resume, G_ema init, loading pickles into new code)."""
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        src = src_tensors.get(name)
        if src is None:
            if require_all:
                raise KeyError("copy_params_and_buffers: source has no tensor named '{}'".format(name))
            continue
        if src.shape != tensor.shape:
            raise ValueError("copy_params_and_buffers: shape of '{}' differs: source {}, destination {}".format(
                name, tuple(src.shape), tuple(tensor.shape)))
        tensor.copy_(src.detach())


# Distributed helpers


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce unless `sync` (all but the last accumulation round)."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel) and not sync:
        with module.no_sync():
            yield
    else:
        yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: Optional[str] = None) -> None:
    """Assert every parameter and buffer equals rank 0's copy (NaN counts as equal to NaN).

    Names are '<ClassName>.<tensor name>'; ones fully matching `ignore_regex` are skipped.
    Does nothing when torch.distributed is not initialised (a single process is consistent).
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError("Expected a torch.nn.Module")
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    mismatched = []
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + "." + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        local = tensor.detach()
        reference = local.clone()
        torch.distributed.broadcast(tensor=reference, src=0)
        same = local == reference
        if local.is_floating_point() or local.is_complex():
            same = same | (local.isnan() & reference.isnan())
        if not bool(same.all()):
            mismatched.append(fullname)
    # Raise only after every broadcast, so all ranks issue the same collectives.
    if mismatched:
        raise AssertionError("DDP inconsistency: {} differ(s) from rank 0".format(", ".join(mismatched)))


# Module summary


def _flatten_tensors(obj: Any) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flatten_tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _flatten_tensors(item)]
    return []


def print_module_summary(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3,
                         skip_redundant: bool = True) -> Any:
    """Run `module(*inputs)` once and print a table of submodules: parameters, buffers,
    output shapes and dtypes. Returns the module's outputs.

    Rows come in completion order (children before their parent) and each
    tensor is counted once, at the first row that owns it, so the totals equal
    the module's real size; with `skip_redundant`, rows that add nothing new
    are dropped.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError("Expected a torch.nn.Module")
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError("print_module_summary does not support ScriptModules")
    if not isinstance(inputs, (tuple, list)):
        inputs = [inputs]
    outputs, records = _run_with_hooks(module, inputs, max_nesting)
    _credit_tensors_once(records)
    if skip_redundant:
        records = [rec for rec in records if rec.params or rec.buffers or rec.new_outputs]
    _print_table(_summary_rows(module, records))
    return outputs


def _run_with_hooks(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int):
    """Call the module once, noting every submodule (down to `max_nesting`) as its forward returns."""
    records: List[dnnlib.EasyDict] = []
    nesting = [0]

    def entered(_mod, _inputs):
        nesting[0] += 1

    def returned(mod, _inputs, outputs):
        nesting[0] -= 1
        if nesting[0] <= max_nesting:
            records.append(dnnlib.EasyDict(mod=mod, outputs=_flatten_tensors(outputs)))

    handles = [h for mod in module.modules()
               for h in (mod.register_forward_pre_hook(entered), mod.register_forward_hook(returned))]
    try:
        outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, records


def _credit_tensors_once(records: List[dnnlib.EasyDict]) -> None:
    """Give each record the parameters, buffers and outputs no earlier record claimed.

    Hooks fire innermost-first, so a tensor lands on the deepest module shown that owns it.
    """
    claimed = set()

    def unclaimed(tensors):
        return [t for t in tensors if id(t) not in claimed]

    for rec in records:
        rec.params = unclaimed(rec.mod.parameters())
        rec.buffers = unclaimed(rec.mod.buffers())
        rec.new_outputs = unclaimed(rec.outputs)
        claimed.update(id(t) for t in rec.params + rec.buffers + rec.new_outputs)


def _count_cell(tensors: List[torch.Tensor]) -> Tuple[int, str]:
    total = sum(t.numel() for t in tensors)
    return total, (str(total) if total else "-")


def _summary_rows(module: torch.nn.Module, records: List[dnnlib.EasyDict]) -> List[List[str]]:
    """Header, one row per record (extra outputs get `name:i` rows of their own), totals."""
    names = {mod: name for name, mod in module.named_modules()}
    names[module] = "<top-level>"
    header = ["Module", "Parameters", "Buffers", "Output shape", "Datatype"]
    body = []
    sums = [0, 0]
    for rec in records:
        label = names.get(rec.mod, type(rec.mod).__name__)
        (n_par, par_cell), (n_buf, buf_cell) = _count_cell(rec.params), _count_cell(rec.buffers)
        sums[0] += n_par
        sums[1] += n_buf
        described = [(str(list(t.shape)), str(t.dtype).split(".")[-1]) for t in rec.outputs] or [("-", "-")]
        for i, (shape, dtype) in enumerate(described):
            if i == 0:
                body.append([label, par_cell, buf_cell, shape, dtype])
            else:
                body.append(["{}:{}".format(label, i), "-", "-", shape, dtype])
    rule = ["---"] * len(header)
    return [header, rule] + body + [rule, ["Total", str(sums[0]), str(sums[1]), "-", "-"]]


def _print_table(rows: List[List[str]]) -> None:
    widths = [max(map(len, column)) for column in zip(*rows)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()


def setup_process(rank, num_gpus, device_type, temp_dir):
    """Device of process `rank` of `num_gpus`, joining the process group when there are several.

    One process per GPU (NCCL) on CUDA; on the CPU the ranks are plain processes
    that talk through gloo. They meet through a file in `temp_dir`, which the
    launching process owns and removes.
    """
    on_cuda = device_type == 'cuda'
    device = torch.device('cuda', rank) if on_cuda else torch.device('cpu')
    if on_cuda:
        torch.cuda.set_device(device)
    if num_gpus > 1:
        import os
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        init_method = f'file:///{init_file.replace(os.sep, "/")}' if os.name == 'nt' else f'file://{init_file}'
        torch.distributed.init_process_group(backend=('nccl' if on_cuda else 'gloo'), init_method=init_method,
                                             rank=rank, world_size=num_gpus)
    return device
