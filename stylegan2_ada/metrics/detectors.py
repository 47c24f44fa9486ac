"""Network-fetched assets (metric detectors, later the CLIP teacher weights): one resolver.

Every file the harness would otherwise download is described by an `Asset`:
a short key, a human description, the URL it comes from and the file names
it may be found under (the first is the URL's own file; more names are other
formats of the same network, such as pytorch-fid's Inception weights). A file
is looked for, in this order:

1. an explicit path or folder (`--detector-dir`, or `detector_dir=`); a folder
   is searched for the accepted file names;
2. the folder(s) in an environment variable (`KDGAN_DETECTOR_DIR` by default,
   several separated by `os.pathsep`);
3. dnnlib's download cache, at the exact path `dnnlib.util.open_url` uses for
   the URL (`<cache>/downloads/<md5 of URL>_<name>`), or under the plain file
   name in that folder, plus any extra folders the asset names (torch hub's
   checkpoint folder for pytorch-fid's file);
4. a download through `open_url` into that cache.

With no file and no network, `AssetUnavailableError` carries ONE line that
names the file, the URL and every way to supply it. `quick=True` bounds the
download attempt by a short reachability probe, so an offline machine gets
that line in a couple of seconds instead of after minutes of retries.

`load_detector(url, device)` resolves a detector and loads it: NVIDIA's
TorchScript files with `torch.jit.load`, pytorch-fid's `.pth` through our port
(`metrics.inception_port`). Loaded detectors are cached per (device,
resolved file).
"""
import glob
import hashlib
import os
import threading
import urllib.parse
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import dnnlib

DEFAULT_ENV_VAR = 'KDGAN_DETECTOR_DIR'
DEFAULT_FLAG = '--detector-dir'
QUICK_TIMEOUT = 3.0  # seconds for the reachability probe of quick resolution

INCEPTION_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt'
VGG16_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt'
PYTORCH_FID_INCEPTION_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                             'pt_inception-2015-12-05-6726825d.pth')
PYTORCH_FID_INCEPTION_NAME = 'pt_inception-2015-12-05-6726825d.pth'

# Asset descriptions.


class AssetUnavailableError(FileNotFoundError):
    """The asset is in none of the places looked at and could not be downloaded.

    `str(err)` is a single line meant to be shown to the user as it is.
    """

    def __init__(self, message: str, asset: Optional['Asset'] = None):
        super().__init__(message)
        self.message = message
        self.asset = asset

    def __str__(self) -> str:
        return self.message


class Asset:
    """A file the harness needs and can download.

    `files` are `(basename, url or None)` pairs: the first is the primary file
    (downloaded when nothing is found); the others are accepted alternatives
    (same network, other format), searched in the same places. `extra_dirs`
    are further folders to search (for example another tool's cache), or
    callables returning folders, evaluated at each search.
    """

    def __init__(self, key: str, description: str, files: Sequence[Tuple[str, Optional[str]]],
                 env_var: str = DEFAULT_ENV_VAR, flag: Optional[str] = DEFAULT_FLAG,
                 extra_dirs: Sequence[str] = ()):
        if not files:
            raise ValueError('an asset needs at least one file')
        self.key = key
        self.description = description
        self.files = [(str(name), url) for name, url in files]
        self.env_var = env_var
        self.flag = flag
        self.extra_dirs = list(extra_dirs)

    @property
    def url(self) -> Optional[str]:
        return self.files[0][1]

    @property
    def filename(self) -> str:
        return self.files[0][0]

    @property
    def filenames(self) -> List[str]:
        return [name for name, _ in self.files]

    def search_extra_dirs(self) -> List[str]:
        """The extra folders; an entry may be a callable returning folders (evaluated now)."""
        out: List[str] = []
        for entry in self.extra_dirs:
            out.extend(entry() if callable(entry) else [entry])
        return out

    def __repr__(self) -> str:
        return 'Asset({!r}, {!r})'.format(self.key, self.filename)


_assets: Dict[str, Asset] = {}


def register_asset(asset: Asset) -> Asset:
    """Make an asset known by key and by each of its URLs (re-registering a key replaces it)."""
    _assets[asset.key] = asset
    return asset


def get_asset(url_or_name: str) -> Optional[Asset]:
    """The registered asset with this key, URL or file name, else None."""
    if url_or_name in _assets:
        return _assets[url_or_name]
    for asset in _assets.values():
        for name, url in asset.files:
            if url_or_name == url or url_or_name == name:
                return asset
    return None


def _torch_hub_checkpoints() -> List[str]:
    """Where pytorch-fid (through torch.hub) keeps its weights, found without importing torch
    (importing torch takes seconds, and the offline check must answer faster than that)."""
    if os.environ.get('TORCH_HOME'):
        hub = os.path.join(os.path.expanduser(os.environ['TORCH_HOME']), 'hub')
    else:
        xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        hub = os.path.join(xdg, 'torch', 'hub')
    return [os.path.join(hub, 'checkpoints')]


register_asset(Asset(
    key='inception', description='Inception-v3 feature detector (FID/KID/IS)',
    files=[('inception-2015-12-05.pt', INCEPTION_URL), (PYTORCH_FID_INCEPTION_NAME, PYTORCH_FID_INCEPTION_URL)],
    extra_dirs=[_torch_hub_checkpoints]))
register_asset(Asset(
    key='vgg16', description='VGG16 feature detector (precision/recall, PPL, projector LPIPS)',
    files=[('vgg16.pt', VGG16_URL)]))


def _adhoc_asset(url: str) -> Asset:
    name = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    return Asset(key=name, description='file {}'.format(name), files=[(name, url)])

# Where files are looked for.


def cache_path_for_url(url: str, cache_dir: Optional[str] = None) -> str:
    """The path where `dnnlib.util.open_url` caches `url` (place a file there to skip the download)."""
    if cache_dir is None:
        cache_dir = dnnlib.util.make_cache_dir_path('downloads')
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    return os.path.join(cache_dir, url_md5 + '_' + dnnlib.util._safe_file_name(url))


def _cached_copy(url: str, cache_dir: str) -> Optional[str]:
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    hits = sorted(p for p in glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + '_*')) if os.path.isfile(p))
    return hits[0] if hits else None


def _split_dirs(value: Optional[str]) -> List[str]:
    if not value:
        return []
    return [os.path.expanduser(part) for part in str(value).split(os.pathsep) if part.strip()]


def _find_in_dir(folder: str, filenames: Sequence[str]) -> Optional[str]:
    for name in filenames:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def find_local(asset: Asset, detector_dir: Optional[str] = None, env_var: Optional[str] = None,
               cache_dir: Optional[str] = None) -> Optional[str]:
    """The first local copy of `asset`, or None (never touches the network).

    Places in order: the folder(s) `detector_dir` and those in `$env_var`
    (holding the file under an accepted name), dnnlib's cache, the asset's extra folders.
    In each place the primary file wins over alternatives.
    """
    env_var = asset.env_var if env_var is None else env_var
    folders = _split_dirs(detector_dir) + (_split_dirs(os.environ.get(env_var)) if env_var else [])
    for folder in folders:
        hit = _find_in_dir(folder, asset.filenames) if os.path.isdir(folder) else None
        if hit:
            return hit
    if cache_dir is None:
        cache_dir = dnnlib.util.make_cache_dir_path('downloads')
    for name, url in asset.files:
        hit = _cached_copy(url, cache_dir) if url else None
        hit = hit or _find_in_dir(cache_dir, [name])
        if hit:
            return hit
    for folder in asset.search_extra_dirs():
        hit = _find_in_dir(folder, asset.filenames)
        if hit:
            return hit
    return None


def _probe(url: str, timeout: float) -> Optional[str]:
    """None when `url` answers within `timeout` seconds, else the reason it does not.

    Runs in a daemon thread so that even a hanging name lookup cannot hold
    the caller longer than the timeout.
    """
    outcome: List[Optional[str]] = ['no answer within {:g} s'.format(timeout)]

    def attempt():
        try:
            import requests
            res = requests.head(url, timeout=(timeout, timeout), allow_redirects=True)
            if res.status_code >= 400 and res.status_code not in (403, 405):  # some servers refuse HEAD only
                outcome[0] = 'HTTP {}'.format(res.status_code)
            else:
                outcome[0] = None
        except Exception as err:
            outcome[0] = _short_reason(err)

    thread = threading.Thread(target=attempt, name='asset-probe', daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0]


def _short_reason(err: BaseException) -> str:
    text = str(err)
    for marker in ('Name or service not known', 'Temporary failure in name resolution', 'Failed to resolve',
                   'Connection refused', 'Network is unreachable', 'timed out', 'No route to host'):
        if marker in text:
            return marker.lower() if marker != 'Failed to resolve' else 'cannot resolve host'
    text = text.splitlines()[0] if text else type(err).__name__
    return text if len(text) <= 160 else text[:157] + '...'


def how_to_provide(asset: Asset, cache_dir: Optional[str] = None) -> str:
    """The sentence telling the user how to supply `asset` by hand."""
    ways = []
    if asset.flag:
        ways.append('pass {}=DIR (a folder holding {})'.format(asset.flag, asset.filename))
    if asset.env_var:
        ways.append('set {}=DIR'.format(asset.env_var))
    if asset.url:
        ways.append("place it at '{}' (dnnlib's cache; DNNLIB_CACHE_DIR moves it)".format(
            cache_path_for_url(asset.url, cache_dir)))
    if not ways:
        return 'Place it where the tool expects it.'
    if len(ways) > 1:
        ways[-1] = 'or ' + ways[-1]
    return ('Fetch it elsewhere, then ' if asset.url else '') + ', '.join(ways) + '.'


def unavailable_message(asset: Asset, reason: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
    """One line: which file is missing, where it was looked for, what failed, and how to supply it."""
    names = "'{}'".format(asset.filename)
    if len(asset.files) > 1:
        names += ' (or ' + ', '.join("'{}'".format(n) for n in asset.filenames[1:]) + ')'
    places = [p for p in (asset.flag, '$' + asset.env_var if asset.env_var else None) if p] + ["dnnlib's cache"]
    places[-1] = 'or ' + places[-1]
    text = 'Missing {}: {} is in none of {}'.format(asset.description, names, ', '.join(places))
    if asset.url and reason:
        text += ', and downloading {} failed ({})'.format(asset.url, reason)
    elif asset.url:
        text += ' (no download attempted; it comes from {})'.format(asset.url)
    return text + '. ' + how_to_provide(asset, cache_dir)


def resolve_asset(url_or_name: str, detector_dir: Optional[str] = None, env_var: Optional[str] = None,
                  cache_dir: Optional[str] = None, download: bool = True, quick: bool = False,
                  num_attempts: int = 3, verbose: bool = True) -> str:
    """Local path of an asset (registered key, URL, file name, or a local path), fetching it if needed.

    Order: `detector_dir` / `$env_var` folders, dnnlib's cache (`cache_dir`
    overrides its downloads folder), then a download of the primary file via
    `dnnlib.util.open_url`. `quick=True` probes the URL first (a few seconds
    at most) and gives up at once when it does not answer; `download=False`
    never touches the network. Raises `AssetUnavailableError` (one line).
    """
    text = str(url_or_name)
    is_url = dnnlib.util.is_url(text, allow_file_urls=True)
    if is_url and text.lower().startswith('file://'):
        text = dnnlib.util._file_url_to_path(text)
        is_url = False
    if not is_url and os.path.isfile(os.path.expanduser(text)):
        return os.path.expanduser(text)
    asset = get_asset(text)
    if asset is None:
        if not is_url:
            raise AssetUnavailableError("Missing file '{}': it is neither a local file nor a known asset or URL."
                                        .format(text))
        asset = _adhoc_asset(text)
    if cache_dir is None:
        cache_dir = dnnlib.util.make_cache_dir_path('downloads')

    hit = find_local(asset, detector_dir=detector_dir, env_var=env_var, cache_dir=cache_dir)
    if hit is not None:
        return hit
    if not download or not asset.url:
        raise AssetUnavailableError(unavailable_message(asset, None, cache_dir), asset)
    if quick:
        reason = _probe(asset.url, QUICK_TIMEOUT)
        if reason is not None:
            raise AssetUnavailableError(unavailable_message(asset, reason, cache_dir), asset)
    try:
        return dnnlib.util.open_url(asset.url, cache_dir=cache_dir, num_attempts=num_attempts, verbose=verbose,
                                    return_filename=True)
    except IOError as err:
        raise AssetUnavailableError(unavailable_message(asset, _short_reason(err), cache_dir), asset) from None

# Loading detectors.

_detector_cache: Dict[Tuple[str, str], object] = {}
_detector_lock = threading.Lock()


def is_pytorch_fid_file(path: str) -> bool:
    return os.path.basename(path).lower().endswith('.pth')


def load_detector_file(path: str, device):
    """Load a detector file: TorchScript (`.pt`) or pytorch-fid's Inception weights (`.pth`)."""
    import torch
    device = torch.device(device)
    if is_pytorch_fid_file(path):
        from metrics import inception_port
        detector = inception_port.load_pytorch_fid_inception(path, device)
    else:
        with dnnlib.util.open_url(path, verbose=False) as f, warnings.catch_warnings():
            # Recent torch calls TorchScript deprecated; NVIDIA's detectors exist only in that format.
            warnings.simplefilter('ignore', FutureWarning)
            detector = torch.jit.load(f, map_location='cpu')
        detector = detector.eval().to(device)
    return detector


def load_detector(url: str, device, detector_dir: Optional[str] = None, verbose: bool = False):
    """The detector for `url` on `device`, resolved as `resolve_asset` does.

    Loaded once per (device, resolved file): per (url, device) as long as the
    search places do not change.
    """
    import torch
    path = resolve_asset(url, detector_dir=detector_dir, verbose=verbose)
    key = (str(torch.device(device)), os.path.abspath(path))
    with _detector_lock:
        if key not in _detector_cache:
            _detector_cache[key] = load_detector_file(path, device)
        return _detector_cache[key]


def detector_fingerprint(path: str) -> str:
    """Name and content hash of a detector file (real statistics are keyed by it)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _fingerprints:
        md5 = hashlib.md5()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 22), b''):
                md5.update(chunk)
        _fingerprints[key] = md5.hexdigest()
    return _fingerprints[key]


_fingerprints: Dict[Tuple[str, int, int], str] = {}


def detector_name(path: str) -> str:
    """Short name for cache files: the file name without extension."""
    return os.path.splitext(os.path.basename(path))[0]


def clear_cache() -> None:
    """Forget loaded detectors (tests; or to free memory)."""
    with _detector_lock:
        _detector_cache.clear()
