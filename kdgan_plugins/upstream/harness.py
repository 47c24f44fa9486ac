"""Our harness' modules, made available inside a host tree that has upstream's layout.

The plug-ins lean on a few modules that exist only in our harness: the loss
core with its terms (training/loss.py), the option resolver
(training/config.py, with cfg_specs.py and shapes.py), our train.py's option
declarations, and the asset resolver for the LPIPS and teacher files
(metrics/detectors.py). In our own tree they are ordinary imports. In an
upstream checkout:

* `install()` appends a finder to `sys.meta_path` that serves the modules of
  `FILL_INS` under their usual names, and only where the host lacks them: it
  runs after the normal path search, so a host module always wins and nothing
  of the host is replaced;
* `load_private(path, name)` loads one of our files under a kdgan-owned module
  name, for code whose usual name the host already uses (its training.loss);
* `host_loss_takes_terms()` says which of the two a host needs.

The files are found beside this package (an editable install, `pip install
-e .`, as `make venv` does) or in the folder named by $KDGAN_HARNESS.
"""

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys

__all__ = ['HARNESS_ENV', 'FILL_INS', 'PRIVATE', 'harness_dir', 'plugins_dir', 'install', 'load_private',
           'shadowed', 'host_loss_takes_terms']

HARNESS_ENV = 'KDGAN_HARNESS'
PRIVATE = 'kdgan_plugins.upstream._private'

# module name -> file under the harness folder.
FILL_INS = {
    'training.config': 'training/config.py',
    'training.cfg_specs': 'training/cfg_specs.py',
    'training.shapes': 'training/shapes.py',
    'metrics.detectors': 'metrics/detectors.py',
}
# Fill-ins that call helpers of our dnnlib.util beyond CONTRACT.md's: they get our dnnlib.
_WANT_OUR_DNNLIB = ('metrics.detectors',)


def plugins_dir():
    """The folder that holds the kdgan_plugins package."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def harness_dir():
    """Our stylegan2_ada/ folder: $KDGAN_HARNESS, else the checkout kdgan_plugins was installed from."""
    given = os.environ.get(HARNESS_ENV)
    folder = given or os.path.join(plugins_dir(), 'stylegan2_ada')
    if os.path.isfile(os.path.join(folder, 'training', 'loss.py')):
        return folder
    where = f'${HARNESS_ENV}={given}' if given else f'{folder} (beside kdgan_plugins)'
    raise ModuleNotFoundError(f'the kdgan upstream hook needs the kdgan harness files, not found in {where}; '
                              f'install kdgan from its checkout with `pip install -e .`, or set {HARNESS_ENV} to '
                              f'the checkout\'s stylegan2_ada folder')


@contextlib.contextmanager
def shadowed(modules):
    """sys.modules entries replaced by `modules` ({name: module}) inside the block, then restored."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_private(path, name, shadow=None, package=False):
    """The file `path` executed as module `name` (once per process), with the sys.modules
    entries of `shadow` in place while it runs, so that its imports bind to them."""
    if name in sys.modules:
        return sys.modules[name]
    search = [os.path.dirname(path)] if package else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=search)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with shadowed(shadow or {}):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _our_dnnlib():
    return load_private(os.path.join(harness_dir(), 'dnnlib', '__init__.py'), PRIVATE + '.dnnlib', package=True)


class _FillInLoader(importlib.machinery.SourceFileLoader):
    """Our file under the host's module name; some of them see our dnnlib while they import."""

    def exec_module(self, module):
        shadow = {'dnnlib': _our_dnnlib()} if self.name in _WANT_OUR_DNNLIB else {}
        with shadowed(shadow):
            super().exec_module(module)


class _FillInFinder(importlib.abc.MetaPathFinder):
    """Asked only after the normal search has failed, i.e. for modules the host lacks."""

    def find_spec(self, fullname, path=None, target=None):
        relative = FILL_INS.get(fullname)
        if relative is None:
            return None
        filename = os.path.join(harness_dir(), *relative.split('/'))
        return importlib.util.spec_from_file_location(fullname, filename,
                                                      loader=_FillInLoader(fullname, filename))


def install():
    """Append the fill-in finder to sys.meta_path (once per process)."""
    if not any(isinstance(finder, _FillInFinder) for finder in sys.meta_path):
        sys.meta_path.append(_FillInFinder())


def host_loss_takes_terms():
    """Whether the host's training.loss.StyleGAN2Loss is our core (it takes `terms`)."""
    from training import loss
    try:
        params = inspect.signature(loss.StyleGAN2Loss.__init__).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return 'terms' in params
