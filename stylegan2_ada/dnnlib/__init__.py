"""Small shared utilities; the package name is part of the pickle contract."""
from . import util
from .util import EasyDict, make_cache_dir_path

__all__ = ["util", "EasyDict", "make_cache_dir_path"]
