"""Pickles that carry their own source code.

A class decorated with `@persistent_class` pickles its instances together
with the full source of the module that defined it. Loading such a pickle
executes that source as a fresh module, so a network snapshot keeps working
after the code that trained it has changed or is not importable at all. The
format (`_reconstruct_persistent_obj(meta)` with `meta.version == 6`) is the
one StyleGAN2-ADA pickles use, so official pickles load here and ours load
there.

Executing embedded source runs arbitrary code: only load pickles you trust.
"""
import copy
import hashlib
import inspect
import io
import pickle
import sys
import types
from typing import Any, Callable, Dict, List

import dnnlib

_version = 6                                    # Format version written into every meta dict.
_persistent_classes: set = set()                # Classes produced by persistent_class().
_import_hooks: List[Callable] = []              # Called on each meta before reconstruction.
_module_to_src_cache: Dict[types.ModuleType, str] = {}
_src_to_module_cache: Dict[str, types.ModuleType] = {}

_IMPORTED_MODULE_PREFIX = "_imported_module_"




def persistent_class(orig_class: type) -> type:
    """Class decorator: instances pickle with the defining module's source.

    The returned subclass keeps the original name, records the constructor
    arguments as `init_args` / `init_kwargs` (so a network can be rebuilt with
    the same hyperparameters), and reduces to
    `(_reconstruct_persistent_obj, (meta,))`.

    The class must be defined at the top level of its module, and everything
    the module imports must exist wherever the pickle is loaded.
    """
    if not isinstance(orig_class, type):
        raise TypeError("@persistent_class expects a class, got {!r}".format(orig_class))
    if is_persistent(orig_class):
        return orig_class
    module = sys.modules.get(orig_class.__module__)
    if module is None:
        raise RuntimeError("Cannot find module '{}' of class {}".format(orig_class.__module__, orig_class.__name__))
    module_src = _module_to_src(module)
    class_name = orig_class.__name__

    def __init__(self, *args, **kwargs):
        orig_class.__init__(self, *args, **kwargs)
        # Deep copies: later mutation of a caller's dict must not change what was recorded.
        self._init_args = copy.deepcopy(args)
        self._init_kwargs = copy.deepcopy(kwargs)
        # Fail at construction, not at the first snapshot hours later.
        _check_pickleable((self._init_args, self._init_kwargs), root="{}(...) arguments".format(class_name))

    def __reduce__(self):
        cls = type(self)
        if cls not in _persistent_classes:
            raise pickle.PicklingError(
                "{} subclasses persistent class {} but is not decorated with @persistent_class itself; "
                "decorate it so that its own source is saved".format(cls.__qualname__, class_name))
        found = getattr(module, class_name, None)
        if found is not cls:
            raise pickle.PicklingError(
                "Persistent class {} must be defined at the top level of module '{}' under its own name"
                .format(class_name, module.__name__))
        meta = dict(type="class", version=_version, module_src=module_src, class_name=class_name,
                    state=_get_state(self))
        return (_reconstruct_persistent_obj, (meta,))

    def __reduce_ex__(self, protocol):
        # Some bases (e.g. ones with custom __reduce_ex__) would bypass __reduce__; always use ours.
        return __reduce__(self)

    namespace = dict(
        __init__=__init__,
        __reduce__=__reduce__,
        __reduce_ex__=__reduce_ex__,
        __module__=orig_class.__module__,
        __qualname__=orig_class.__qualname__,
        __doc__=orig_class.__doc__,
        init_args=property(lambda self: copy.deepcopy(self.__dict__.get("_init_args", ()))),
        init_kwargs=property(lambda self: dnnlib.EasyDict(copy.deepcopy(self.__dict__.get("_init_kwargs", {})))),
        _orig_module_src=module_src,
        _orig_class_name=class_name,
    )
    for fn in (__init__, __reduce__, __reduce_ex__):
        fn.__qualname__ = orig_class.__qualname__ + "." + fn.__name__
    # Keep the original signature visible to help() and inspect.signature().
    try:
        __init__.__signature__ = inspect.signature(orig_class.__init__)
    except (TypeError, ValueError):
        pass
    decorated = type(orig_class)(class_name, (orig_class,), namespace)
    _persistent_classes.add(decorated)
    return decorated


def _get_state(obj: Any) -> Any:
    getstate = getattr(obj, "__getstate__", None)
    state = getstate() if getstate is not None else None
    if state is None:
        state = dict(getattr(obj, "__dict__", {}))
    return state




def is_persistent(obj: Any) -> bool:
    """True for a persistent class or an instance of one."""
    try:
        if obj in _persistent_classes:
            return True
    except TypeError:  # unhashable instances
        pass
    return type(obj) in _persistent_classes


def import_hook(hook: Callable) -> None:
    """Register `hook(meta) -> meta` to run on every persistent object being loaded.

    Lets old pickles be upgraded: a hook may patch `meta.module_src`, rename
    `meta.class_name` or edit `meta.state`. Returning None keeps the (possibly
    edited in place) meta.
    """
    if not callable(hook):
        raise TypeError("import_hook expects a callable")
    _import_hooks.append(hook)


def _reconstruct_persistent_obj(meta: dict) -> Any:
    """Rebuild a persistent object from its meta dict (the name pickles refer to)."""
    meta = dnnlib.EasyDict(meta)
    if isinstance(meta.get("state"), dict):
        meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        result = hook(meta)
        if result is not None:
            meta = dnnlib.EasyDict(result)

    if meta.get("type") != "class":
        raise pickle.UnpicklingError("Unknown persistent object type {!r}".format(meta.get("type")))
    if meta.get("version") != _version:
        raise pickle.UnpicklingError(
            "Persistent object version {!r} is not supported (expected {}); register an import_hook to convert it"
            .format(meta.get("version"), _version))

    module = _src_to_module(meta.module_src)
    cls = getattr(module, meta.class_name, None)
    if not isinstance(cls, type):
        raise pickle.UnpicklingError("Class '{}' not found in the pickled module source".format(meta.class_name))
    obj = cls.__new__(cls)
    state = meta.state
    setstate = getattr(obj, "__setstate__", None)
    if callable(setstate):
        setstate(state)
    else:
        obj.__dict__.update(state)
    return obj




def _module_to_src(module: types.ModuleType) -> str:
    """Full source text of a module; modules loaded from pickles return their embedded source."""
    src = _module_to_src_cache.get(module)
    if src is None:
        try:
            src = inspect.getsource(module)
        except (OSError, TypeError) as err:
            raise RuntimeError(
                "Cannot read the source of module '{}' for a persistent class ({}); persistent classes must be "
                "defined in a .py file, not in an interactive session".format(module.__name__, err)) from err
        _module_to_src_cache[module] = src
        # Loading a pickle whose source equals a live module's reuses that module, so that
        # copy.deepcopy(G) and an in-process reload keep the same class (isinstance holds).
        _src_to_module_cache[src] = module
    return src


def _src_to_module(src: str) -> types.ModuleType:
    """Execute `src` as a new module once per distinct source text."""
    module = _src_to_module_cache.get(src)
    if module is not None and sys.modules.get(module.__name__) is not module:
        module = None  # A live module that was since removed or replaced: run the source afresh.
    if module is None:
        # A stable name (md5 of the source): plain objects of this module's classes pickle by reference
        # to it, and resolve in a new process once a persistent object of the same source, earlier
        # in the pickle, has recreated the module.
        module_name = _IMPORTED_MODULE_PREFIX + hashlib.md5(src.encode("utf-8")).hexdigest()
        module = types.ModuleType(module_name)
        module.__file__ = "<persistent source {}>".format(module_name)
        # Register before exec, so that @persistent_class inside the source finds its own text.
        sys.modules[module_name] = module
        _module_to_src_cache[module] = src
        _src_to_module_cache[src] = module
        try:
            exec(compile(src, module.__file__, "exec"), module.__dict__)  # noqa: S102 (trusted pickles only)
        except BaseException:
            sys.modules.pop(module_name, None)
            _module_to_src_cache.pop(module, None)
            _src_to_module_cache.pop(src, None)
            raise
    return module




_ATOMIC_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None))


def _check_pickleable(obj: Any, root: str = "obj") -> None:
    """Raise a PicklingError naming the path (e.g. obj['kwargs'].fn) of the first value that
    cannot be pickled. Tensors and arrays are skipped: they always pickle and can be large."""
    # Only types of libraries already imported can occur; do not import torch just to check.
    skip_types = list(_ATOMIC_TYPES)
    if "torch" in sys.modules:
        skip_types.append(sys.modules["torch"].Tensor)
    if "numpy" in sys.modules:
        skip_types += [sys.modules["numpy"].ndarray, sys.modules["numpy"].generic]
    skip_types = tuple(skip_types)
    seen = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, skip_types):
            return
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key, "{}<key {!r}>".format(path, key))
                walk(item, "{}[{!r}]".format(path, key))
            if type(value) in (dict, dnnlib.EasyDict):
                return
        elif isinstance(value, (list, tuple, set, frozenset)):
            for i, item in enumerate(value):
                walk(item, "{}[{}]".format(path, i))
            if type(value) in (list, tuple, set, frozenset):
                return
        elif is_persistent(value):
            state = _get_state(value)
            if isinstance(state, dict):
                for key, item in state.items():
                    walk(item, "{}.{}".format(path, key))
            else:
                walk(state, path + ".<state>")
            return
        try:
            pickle.dump(value, io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise pickle.PicklingError("{} is not pickleable ({}: {})".format(path, type(err).__name__, err)) from err

    walk(obj, root)
