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
names the file, the URL and every way to supply it, and which options need
the file and how to do without it (each asset lists its `Use`s; a caller that
knows its context narrows them: `err.in_context('loss')` for a loss term,
`err.for_metrics(...)` for the metrics a tool was asked for). `quick=True`
bounds the download attempt by a short reachability probe, so an offline
machine gets that line in a couple of seconds instead of after minutes of
retries.

`--detector=PATH` (calc_metrics.py, bench/compare.py): `check_feature_detector`
calls the file as the metrics will (FEATURE_SIGNATURE) and `stage_detector`
puts it in a folder where it stands for the Inception file.

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
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

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


class Use(NamedTuple):
    """One reason the harness wants a file, and the way to go on without it.

    `kind` says where the need comes from ('loss', 'metric' or 'tool'), so a
    caller that knows its context can keep only the uses that apply to it.
    """
    kind: str
    needs: str
    avoid: str


class AssetUnavailableError(FileNotFoundError):
    """The asset is in none of the places looked at and could not be downloaded.

    `str(err)` is a single line meant to be shown to the user as it is. The
    caller that knows why the file was wanted re-words it with `needed_for`
    (or `in_context` / `for_metrics`), so the user reads which of their
    options needs the file and which option does without it.
    """

    def __init__(self, message: str, asset: Optional['Asset'] = None, reason: Optional[str] = None,
                 cache_dir: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.asset = asset
        self.reason = reason
        self.cache_dir = cache_dir

    def __str__(self) -> str:
        return self.message

    def needed_for(self, *uses: Use) -> 'AssetUnavailableError':
        """The same error, its message naming `uses` instead of every use of the asset."""
        if self.asset is None or not uses:
            return self
        text = unavailable_message(self.asset, self.reason, self.cache_dir, uses=uses)
        return AssetUnavailableError(text, self.asset, self.reason, self.cache_dir)

    def in_context(self, kind: str) -> 'AssetUnavailableError':
        """Keep the asset's uses of one kind ('loss' from a loss-asset check, ...)."""
        if self.asset is None:
            return self
        return self.needed_for(*[use for use in self.asset.uses if use.kind == kind])

    def for_metrics(self, metrics: Sequence[str], required: Callable, tool: str) -> 'AssetUnavailableError':
        """Name the metrics of `metrics` that need this file (`required([name])` lists a metric's
        detectors, as metric_main.required_detectors does) and what `tool` offers instead."""
        if self.asset is None:
            return self
        names = [m for m in metrics if any(get_asset(str(d)) is self.asset for d in required([m]))]
        return self.needed_for(metric_use(self.asset, names or list(metrics), tool))


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
                 extra_dirs: Sequence[str] = (), uses: Sequence[Use] = ()):
        if not files:
            raise ValueError('an asset needs at least one file')
        self.key = key
        self.description = description
        self.files = [(str(name), url) for name, url in files]
        self.env_var = env_var
        self.flag = flag
        self.extra_dirs = list(extra_dirs)
        self.uses = list(uses)

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


# Who needs each file, and how to go on without it (shown when the caller gives no narrower context).
RECON_USE = Use('loss', "--recon=lpips (the image-reconstruction loss of FastGAN's discriminator, the default "
                "of --cfg=fastgan)", 'pass --recon=mse (or --recon=l1), which needs no file')
INCEPTION_USES = (
    Use('metric', 'the FID/KID/IS metrics (train.py --metrics=fid50k_full is the default)',
        'train.py --metrics=none, or --detector=PATH (any TorchScript feature network) in calc_metrics.py and '
        'bench/compare.py (README, "Evaluating offline")'),
)
VGG16_USES = (
    RECON_USE,
    Use('metric', 'the metrics pr50k3*/ppl*', 'train.py --metrics=none, or FID/KID metrics'),
    Use('tool', "projector.py's LPIPS distance", 'none, projector.py cannot work without it'),
)

register_asset(Asset(
    key='inception', description='Inception-v3 feature detector',
    files=[('inception-2015-12-05.pt', INCEPTION_URL), (PYTORCH_FID_INCEPTION_NAME, PYTORCH_FID_INCEPTION_URL)],
    extra_dirs=[_torch_hub_checkpoints], uses=INCEPTION_USES))
register_asset(Asset(
    key='vgg16', description='VGG16 feature detector',
    files=[('vgg16.pt', VGG16_URL)], uses=VGG16_USES))


def metric_use(asset: Asset, metrics: Sequence[str], tool: str) -> Use:
    """The use 'these metrics of this tool need the file', with what that tool offers instead."""
    option = '--metric' if tool == 'bench/compare.py' else '--metrics'
    needs = '{} {}={}'.format(tool, option, ','.join(metrics))
    if tool == 'train.py':
        avoid = 'pass --metrics=none (evaluate the snapshots later with calc_metrics.py'
        avoid += ' --detector=PATH)' if asset.key == 'inception' else ')'
    elif asset.key == 'inception':
        avoid = ('pass --detector=PATH, another TorchScript feature network (README, "Evaluating offline")')
    else:
        avoid = 'choose FID/KID metrics, which --detector=PATH can compute with another feature network'
    return Use('metric', needs, avoid)


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


def uses_sentence(uses: Sequence[Use]) -> str:
    """'A needs it; to do without: a.' for each use: the options that need the file and the ways around."""
    return ''.join('{} needs it; to do without: {}. '.format(u.needs, u.avoid) for u in uses)


def unavailable_message(asset: Asset, reason: Optional[str] = None, cache_dir: Optional[str] = None,
                        uses: Optional[Sequence[Use]] = None) -> str:
    """One line: which file is missing, where it was looked for, what failed, which options need
    it and which do without it (`uses`, default: all the asset's uses), and how to supply it."""
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
    return text + '. ' + uses_sentence(asset.uses if uses is None else uses) + how_to_provide(asset, cache_dir)


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
        raise AssetUnavailableError(unavailable_message(asset, None, cache_dir), asset, None, cache_dir)
    if quick:
        reason = _probe(asset.url, QUICK_TIMEOUT)
        if reason is not None:
            raise AssetUnavailableError(unavailable_message(asset, reason, cache_dir), asset, reason, cache_dir)
    try:
        return dnnlib.util.open_url(asset.url, cache_dir=cache_dir, num_attempts=num_attempts, verbose=verbose,
                                    return_filename=True)
    except IOError as err:
        reason = _short_reason(err)
        raise AssetUnavailableError(unavailable_message(asset, reason, cache_dir), asset, reason, cache_dir) from None

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


# Another feature network in the Inception file's place (`--detector=PATH`).

FEATURE_SIGNATURE = ('det(images, return_features=True) -> float tensor [N, D], images a uint8-range NCHW RGB '
                     'tensor of any size (the network resizes them itself); for IS also det(images, '
                     'no_output_bias=True) -> class probabilities [N, K]')


def stage_detector(path: str, folder: Optional[str] = None) -> str:
    """A folder in which `path` stands for the Inception file (searched first when given as a
    detector folder, so FID/KID/IS use it). Default folder: one per file content under dnnlib's
    cache, so spawned processes and later runs find the same one. Returns the folder."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise AssetUnavailableError("--detector: '{}' is not a file. Give a TorchScript feature network "
                                    "called as {}.".format(path, FEATURE_SIGNATURE))
    if folder is None:
        folder = dnnlib.util.make_cache_dir_path('custom-detectors', detector_fingerprint(path)[:16])
    os.makedirs(folder, exist_ok=True)
    name = PYTORCH_FID_INCEPTION_NAME if is_pytorch_fid_file(path) else get_asset('inception').filename
    link = os.path.join(folder, name)
    for other in get_asset('inception').filenames:   # one stand-in per folder
        stale = os.path.join(folder, other)
        if (os.path.lexists(stale) and (other != name or os.path.realpath(stale) != os.path.realpath(path))):
            os.remove(stale)
    if not os.path.lexists(link):
        try:
            os.symlink(path, link)
        except OSError:
            import shutil
            shutil.copy2(path, link)
    return folder


def check_feature_detector(path: str, probabilities: bool = False) -> int:
    """Load `path` and call it as the metrics will (FEATURE_SIGNATURE) on two small images;
    its feature width, or a one-line ValueError saying what does not fit."""
    import torch
    try:
        det = load_detector_file(path, 'cpu')
    except Exception as err:
        raise ValueError("--detector: cannot load '{}' ({}); expected a TorchScript file (torch.jit.save) "
                         "called as {}".format(path, _short_reason(err), FEATURE_SIGNATURE)) from None
    images = torch.randint(0, 256, [2, 3, 64, 64], dtype=torch.uint8)
    calls = [('return_features', 2)] + ([('no_output_bias', 2)] if probabilities else [])
    width = None
    for flag, ndim in calls:
        try:
            with torch.no_grad():
                out = det(images, **{flag: True})
        except Exception as err:
            raise ValueError("--detector: '{}' fails when called as det(images, {}=True) ({}); expected {}".format(
                path, flag, _short_reason(err), FEATURE_SIGNATURE)) from None
        if not isinstance(out, torch.Tensor) or out.ndim != ndim or out.shape[0] != 2 or \
                not out.is_floating_point():
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError("--detector: '{}' returned {} for det(images [2, 3, 64, 64], {}=True); expected a "
                             "float tensor [2, D]: {}".format(path, got, flag, FEATURE_SIGNATURE))
        width = width or int(out.shape[1])
    return width


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
