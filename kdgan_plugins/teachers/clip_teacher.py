"""A frozen open_clip model as KD-DLGAN's vision-language teacher.

The teacher belongs to the loss: it is never a sub-module of G or D, never
saved in a snapshot, and refuses to be pickled or deep-copied (so it cannot
slip into one by accident).

Choosing the teacher
--------------------
`--teacher` takes a spec parsed by `parse_teacher_spec`:

* `ViT-B-32:openai` -- an open_clip architecture and one of its pretrained
  tags. The weight file is found by the harness' asset resolver
  (`metrics.detectors.resolve_asset`), never by open_clip's own download code:
  `--teacher-dir` (and `--detector-dir`) folders, then `$KDGAN_TEACHER_DIR`
  (and `$KDGAN_DETECTOR_DIR`), then dnnlib's download cache, then a download
  through `dnnlib.util.open_url`. For a tag hosted on the Hugging Face hub the
  file is fetched from its plain `resolve/main` URL; the accepted file names
  are the hub's (`open_clip_model.safetensors`, `open_clip_pytorch_model.bin`)
  and, for OpenAI's tags, OpenAI's own file (`ViT-B-32.pt`).
* `ViT-B-32` with `--teacher-weights=PATH` -- a local checkpoint: a plain
  state dict, `{'state_dict': ...}` (open_clip's training checkpoints), with
  or without `module.` prefixes, a `.safetensors` file, or OpenAI's
  TorchScript archive. If the spec also names a tag (`ViT-B-32:openai`, the
  default), that tag's QuickGELU flag and preprocessing are used with the
  file; a file without a tag uses the architecture's defaults (name the
  `-quickgelu` variant of the architecture for OpenAI-trained weights).
* `--teacher-config=PATH.json` -- a custom architecture: an open_clip model
  config (`{"embed_dim", "vision_cfg", "text_cfg", ...}`, or open_clip's
  `open_clip_config.json` form `{"model_cfg": ..., "preprocess_cfg": ...}`),
  registered with `open_clip.add_model_config` under a name unique to its
  content. The spec's model name is then only a label; weights come from
  `--teacher-weights` (or `random:`).
* `random:<model>` -- random initialisation, only when asked for by name, and
  always with the logged warning "random teacher: for tests and smoke runs
  only". Nothing ever falls back to a random teacher.

`check_teacher_available(...)` runs all of this resolution without building
the network (and without importing open_clip, whose import alone takes
seconds): train.py calls it before training so that a missing file is one
clear error at start-up, naming the file and the flags that supply it.

Using the teacher
-----------------
`teacher.encode_image(img)`: img [N, C, H, W] in [-1, 1] with C = 1 or 3
(grayscale is repeated to RGB), mapped to [0, 1], resized to the model's
input size (224 for ViT-B-32; `image_size=` overrides it) with antialiased
interpolation (the model's preprocessing mode, bicubic for OpenAI's CLIP,
bilinear when the config asks for it), normalised with the model's mean/std
(OpenAI's by default), and encoded. Returns float32 [N, embed_dim], NOT
L2-normalised: the loss decides. Gradients flow to `img` when it requires
them (the optional generator-side diversity term); the teacher's own weights
never receive any. On CUDA the network runs under autocast (fp16 by default,
`amp='bf16'` or `amp=None` to change it); on CPU it runs in float32.

`teacher.text_embeddings`: float32 [K, embed_dim], the prompts
`template.format(label=l)` for each label, tokenised with open_clip's
tokenizer and encoded once on first use (cached on the object, no gradient,
not normalised). `teacher.embed_dim` is the width of both.
"""
import atexit
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import types
import zipfile
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

logger = logging.getLogger('kdgan.teacher')

DEFAULT_SPEC = 'ViT-B-32:openai'
DEFAULT_TEMPLATE = 'A photo of a {label}'
FACE_EXPRESSIONS = ('neutral', 'happy', 'sad', 'surprise', 'disgust', 'anger', 'fear')
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_TAG = 'random'
RANDOM_WARNING = 'random teacher: for tests and smoke runs only'

TEACHER_DIR_ENV = 'KDGAN_TEACHER_DIR'
TEACHER_DIR_FLAG = '--teacher-dir'
WEIGHTS_FLAG = '--teacher-weights'
CONFIG_FLAG = '--teacher-config'
DETECTOR_DIR_ENV = 'KDGAN_DETECTOR_DIR'
HF_SAFE_WEIGHTS = 'open_clip_model.safetensors'
HF_WEIGHTS = 'open_clip_pytorch_model.bin'


class TeacherUnavailableError(FileNotFoundError):
    """A teacher weight or config file is missing; `str(err)` is one line for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TeacherSpecError(ValueError):
    """A malformed or unknown teacher spec (architecture, tag, or combination of options)."""

# Specs and labels.


def parse_teacher_spec(spec: str) -> Tuple[str, Optional[str]]:
    """'ViT-B-32:openai' -> ('ViT-B-32', 'openai'); 'ViT-B-32' -> ('ViT-B-32', None);
    'random:ViT-B-32' -> ('ViT-B-32', 'random')."""
    if not isinstance(spec, str) or not spec.strip():
        raise TeacherSpecError('empty teacher spec; expected MODEL:TAG (e.g. {}), MODEL or random:MODEL'
                               .format(DEFAULT_SPEC))
    text = spec.strip()
    if text.startswith(('hf-hub:', 'local-dir:')):
        raise TeacherSpecError("teacher spec {!r}: open_clip's hf-hub:/local-dir: schemas are not supported "
                               "(they bypass the asset resolver); fetch the files and pass {}=PATH and, for a "
                               "custom architecture, {}=PATH.json".format(spec, WEIGHTS_FLAG, CONFIG_FLAG))
    parts = [p.strip() for p in text.split(':')]
    if parts[0].lower() == RANDOM_TAG:
        if len(parts) != 2 or not parts[1]:
            raise TeacherSpecError('teacher spec {!r}: expected random:MODEL (e.g. random:ViT-B-32)'.format(spec))
        return parts[1], RANDOM_TAG
    if len(parts) == 1:
        return parts[0], None
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise TeacherSpecError('teacher spec {!r}: expected MODEL:TAG (e.g. {}), MODEL or random:MODEL'
                               .format(spec, DEFAULT_SPEC))
    if parts[1].lower() == RANDOM_TAG:
        return parts[0], RANDOM_TAG
    return parts[0], parts[1]


def resolve_labels(spec=None, dataset_class_names=None, conditional: bool = False) -> List[str]:
    """The label list for the prompts.

    spec: None or 'auto' -> the dataset's class names when given (a list, or a
    dict index -> name), else the face-expression set (neutral, happy, sad,
    surprise, disgust, anger, fear; a conditional dataset without names gets
    it too, with a warning); a list/tuple of labels; a path to a text file
    (one label per line, blank lines and '#' comments skipped); or a comma
    separated list ('cat,dog'; a single word is a one-label list).
    """
    if isinstance(dataset_class_names, dict):
        dataset_class_names = [dataset_class_names[k] for k in sorted(dataset_class_names, key=_index_key)]
    names = [str(n).strip() for n in (dataset_class_names or []) if str(n).strip()]
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ('', 'auto')):
        if names:
            return names
        if conditional:
            logger.warning('--kd-labels=auto: the conditional dataset has no class names; using the '
                           'face-expression labels. Pass --kd-labels=a,b,c or a file to name the classes.')
        return list(FACE_EXPRESSIONS)
    if isinstance(spec, (list, tuple)):
        labels = [str(s).strip() for s in spec if str(s).strip()]
    elif os.path.isfile(os.path.expanduser(spec)):
        with open(os.path.expanduser(spec), 'r', encoding='utf-8') as f:
            labels = [line.strip() for line in f if line.strip() and not line.strip().startswith('#')]
        if not labels:
            raise ValueError('label file {!r} holds no labels'.format(spec))
    else:
        text = spec.strip()
        if (text.endswith('.txt') or os.sep in text) and ',' not in text:
            raise FileNotFoundError('label file {!r} does not exist (for a list of labels, separate them '
                                    'with commas)'.format(spec))
        labels = [part.strip() for part in text.split(',') if part.strip()]
    if not labels:
        raise ValueError('no labels in {!r}'.format(spec))
    if conditional and names and len(labels) != len(names):
        logger.warning('%d labels given for a dataset with %d classes', len(labels), len(names))
    return labels


def _index_key(key):
    try:
        return (0, int(key))
    except (TypeError, ValueError):
        return (1, str(key))


def format_prompts(labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> List[str]:
    if '{label}' not in template:
        raise ValueError("prompt template {!r} must contain '{{label}}'".format(template))
    return [template.format(label=label) for label in labels]


def prompt_summary(labels=None, template: Optional[str] = None, dataset_class_names=None) -> str:
    """One line for the start of a run: the prompts the teacher will embed, where their labels come
    from, and -- when they are the paper's face expressions -- how to give your own."""
    auto = labels is None or (isinstance(labels, str) and labels.strip().lower() in ('', 'auto'))
    names = resolve_labels('auto', dataset_class_names) if dataset_class_names else None
    used = resolve_labels(labels, names) if not auto else (names or list(FACE_EXPRESSIONS))
    prompts = format_prompts(used, template or DEFAULT_TEMPLATE)
    shown = ', '.join(repr(p) for p in prompts[:8]) + (', ...' if len(prompts) > 8 else '')
    if not auto:
        origin = 'labels from --kd-labels'
    elif names:
        origin = "the data set's class names"
    else:
        origin = ("KD-DLGAN's face-expression labels, because the data set names no classes; for your own "
                  "images set --kd-labels=a,b,c (or a file, one label per line) and --kd-template='{}'".format(
                      template or DEFAULT_TEMPLATE))
    return '{} prompts: {} ({})'.format(len(prompts), shown, origin)

# open_clip metadata without importing open_clip (its import takes seconds).


def _open_clip_dir() -> str:
    spec = importlib.util.find_spec('open_clip')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('open_clip_torch is not installed (pip install open_clip_torch)')
    return list(spec.submodule_search_locations)[0]


_META_PACKAGE = '_kdgan_open_clip_meta'


def _pretrained_registry():
    """open_clip's pretrained-tag registry module.

    Loaded on its own (its file, with its two small sibling modules) under a
    private package name, so that the start-up check need not import the whole
    open_clip package; if that ever fails, the real `open_clip.pretrained`.
    """
    if 'open_clip' in sys.modules:
        return importlib.import_module('open_clip.pretrained')
    try:
        if _META_PACKAGE not in sys.modules:
            pkg = types.ModuleType(_META_PACKAGE)
            pkg.__path__ = [_open_clip_dir()]
            sys.modules[_META_PACKAGE] = pkg
        mod = importlib.import_module(_META_PACKAGE + '.pretrained')
        mod.get_pretrained_cfg('ViT-B-32', 'openai')  # the functions we use exist
        return mod
    except Exception:
        return importlib.import_module('open_clip.pretrained')


def builtin_model_names() -> List[str]:
    """open_clip's built-in architecture names (its model_configs/*.json)."""
    folder = os.path.join(_open_clip_dir(), 'model_configs')
    return sorted(os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith('.json'))


def _builtin_config(name: str) -> Optional[dict]:
    path = os.path.join(_open_clip_dir(), 'model_configs', name + '.json')
    if not os.path.isfile(path):
        return None
    with open(path, 'r', encoding='utf-8') as f:
        return json.load(f)


def read_model_config(path: str) -> Tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) from an open_clip config file; clear errors for bad files."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise TeacherUnavailableError("Missing teacher config file '{}' ({}=PATH.json names an open_clip model "
                                      "config: embed_dim, vision_cfg, text_cfg).".format(path, CONFIG_FLAG))
    try:
        with open(path, 'r', encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise TeacherSpecError('teacher config {!r} is not valid JSON: {}'.format(path, err)) from None
    preprocess = {}
    if isinstance(data, dict) and 'model_cfg' in data:
        preprocess = dict(data.get('preprocess_cfg') or {})
        data = data['model_cfg']
    missing = [k for k in ('embed_dim', 'vision_cfg', 'text_cfg') if not isinstance(data, dict) or k not in data]
    if missing:
        raise TeacherSpecError('teacher config {!r} lacks {} (an open_clip model config has embed_dim, '
                               'vision_cfg and text_cfg)'.format(path, ', '.join(missing)))
    return data, preprocess


def _hf_url(repo: str, filename: str) -> str:
    endpoint = os.environ.get('HF_ENDPOINT', 'https://huggingface.co').rstrip('/')
    return '{}/{}/resolve/main/{}'.format(endpoint, repo, filename)


def weight_files_for_tag(tag_cfg: dict) -> List[Tuple[str, Optional[str]]]:
    """(file name, URL) candidates for a pretrained tag, preferred first (hub safetensors, hub
    pickle, then the tag's own URL, as open_clip prefers them)."""
    files: List[Tuple[str, Optional[str]]] = []
    hub = tag_cfg.get('hf_hub') or ''
    if hub:
        repo, name = hub.rstrip('/'), ''
        if not hub.endswith('/'):
            repo, name = os.path.split(hub)
        if not name or name == HF_WEIGHTS:
            names = [HF_SAFE_WEIGHTS, HF_WEIGHTS]
        elif name.endswith(('.bin', '.pth')):
            names = [name[:-4] + '.safetensors', name]
        else:
            names = [name]
        files.extend((n, _hf_url(repo, n)) for n in names)
    url = tag_cfg.get('url') or ''
    if url:
        files.append((os.path.basename(url.split('?')[0]), url))
    if tag_cfg.get('file'):
        files.append((os.path.basename(tag_cfg['file']), None))
    return files

# The plan: what to build and from which file, decided without building it.


class TeacherPlan:
    """Resolved teacher choice. `arch`: an open_clip built-in name, or None for a custom config;
    `model_cfg`/`preprocess_cfg`: the custom config; `tag`/`tag_cfg`: pretrained tag metadata;
    `source`: 'random', 'file' (weights=PATH) or 'tag' (resolved through the asset resolver)."""

    def __init__(self, model: str, pretrained: Optional[str], weights: Optional[str], config: Optional[str]):
        self.display_name = model
        self.weights = os.path.expanduser(str(weights)) if weights else None
        self.config = os.path.expanduser(str(config)) if config else None
        self.tag = None
        self.tag_cfg: dict = {}
        self.model_cfg: Optional[dict] = None
        self.preprocess_cfg: dict = {}
        self.arch: Optional[str] = None
        if pretrained is not None and str(pretrained).strip().lower() == RANDOM_TAG:
            if self.weights:
                raise TeacherSpecError('random:{} and {} exclude each other; pick one'.format(model, WEIGHTS_FLAG))
            self.source = RANDOM_TAG
        elif self.weights:
            self.source = 'file'
        else:
            self.source = 'tag'

        if self.config:
            self.model_cfg, self.preprocess_cfg = read_model_config(self.config)
            if self.source == 'tag':
                raise TeacherSpecError('a custom teacher architecture ({}={}) has no pretrained tags: pass its '
                                       'weights with {}=PATH (or random:MODEL for a smoke run)'
                                       .format(CONFIG_FLAG, self.config, WEIGHTS_FLAG))
        else:
            self.arch = model.replace('/', '-')
            if _builtin_config(self.arch) is None:
                raise TeacherSpecError('unknown open_clip architecture {!r}; built-in names include {} ... '
                                       '(open_clip.list_models() lists all), or give a custom one with {}=PATH.json'
                                       .format(model, ', '.join(_common_names()), CONFIG_FLAG))
            if pretrained and self.source != RANDOM_TAG:
                registry = _pretrained_registry()
                self.tag_cfg = dict(registry.get_pretrained_cfg(self.arch, pretrained) or {})
                if not self.tag_cfg and self.source == 'file':
                    # The file is what is loaded; a tag only lends its QuickGELU flag and preprocessing.
                    logger.warning('teacher: open_clip has no tag %r for %s; loading %s with the '
                                   "architecture's defaults", pretrained, self.arch, self.weights)
                elif not self.tag_cfg:
                    tags = registry.list_pretrained_tags_by_model(self.arch)
                    raise TeacherSpecError('open_clip has no pretrained tag {!r} for {}; known tags: {}'.format(
                        pretrained, self.arch, ', '.join(tags) if tags else 'none (pass ' + WEIGHTS_FLAG + '=PATH)'))
                self.tag = pretrained if self.tag_cfg else None
            elif self.source == 'tag':
                raise TeacherSpecError('teacher {!r} names no pretrained tag: use MODEL:TAG (e.g. {}), {}=PATH, '
                                       'or random:{} for a smoke run'.format(model, DEFAULT_SPEC, WEIGHTS_FLAG, model))

    @property
    def quick_gelu(self) -> bool:
        return bool(self.tag_cfg.get('quick_gelu', False))

    def tag_preprocess(self) -> dict:
        keys = ('mean', 'std', 'interpolation', 'resize_mode')
        out = {k: self.tag_cfg[k] for k in keys if self.tag_cfg.get(k) is not None}
        out.update({k: v for k, v in self.preprocess_cfg.items() if k in keys + ('size',) and v is not None})
        return out

    def describe(self) -> str:
        name = self.display_name if self.arch is None else self.arch
        if self.config:
            name = '{} (config {})'.format(name, self.config)
        if self.source == RANDOM_TAG:
            return name + ', random weights'
        if self.source == 'file':
            return '{}, weights {}'.format(name, self.weights)
        return '{}:{}'.format(name, self.tag)


def _common_names() -> List[str]:
    preferred = ['RN50', 'ViT-B-32', 'ViT-B-32-quickgelu', 'ViT-B-16', 'ViT-L-14']
    try:
        names = set(builtin_model_names())
    except Exception:
        return preferred
    return [n for n in preferred if n in names]


def _teacher_asset(plan: TeacherPlan, first: int = 0):
    from metrics import detectors
    files = weight_files_for_tag(plan.tag_cfg)
    if not files:
        raise TeacherSpecError('pretrained tag {}:{} names no file or URL'.format(plan.arch, plan.tag))
    files = files[first:] + files[:first]
    asset = detectors.Asset(
        key='clip-teacher:{}:{}:{}'.format(plan.arch, plan.tag, first),
        description='CLIP teacher weights {}:{}'.format(plan.arch, plan.tag),
        files=files, env_var=TEACHER_DIR_ENV, flag=TEACHER_DIR_FLAG)
    return detectors.register_asset(asset), len(files)


def _search_folders(teacher_dir=None, detector_dir=None) -> str:
    parts = [teacher_dir, os.environ.get(TEACHER_DIR_ENV), detector_dir, os.environ.get(DETECTOR_DIR_ENV)]
    return os.pathsep.join(str(p) for p in parts if p)


def resolve_teacher_file(plan: TeacherPlan, teacher_dir=None, detector_dir=None, download: bool = True,
                         quick: bool = False, verbose: bool = True) -> Optional[str]:
    """The local weight file for `plan` (None for a random teacher); TeacherUnavailableError if missing."""
    if plan.source == RANDOM_TAG:
        return None
    if plan.source == 'file':
        if not os.path.isfile(plan.weights):
            raise TeacherUnavailableError("Missing teacher weights file '{}' given by {}: no such file. Pass the "
                                          "path of an open_clip checkpoint ({} architecture).".format(
                                              plan.weights, WEIGHTS_FLAG, plan.describe().split(',')[0]))
        return plan.weights
    try:
        from metrics import detectors
    except ImportError:
        raise TeacherUnavailableError('Cannot resolve teacher {}:{}: the asset resolver (metrics.detectors) is '
                                      'not importable in this tree; pass {}=PATH to the weight file instead.'
                                      .format(plan.arch, plan.tag, WEIGHTS_FLAG)) from None
    folders = _search_folders(teacher_dir, detector_dir)
    asset, count = _teacher_asset(plan)
    first_error = None
    for i in range(count):
        candidate, _ = _teacher_asset(plan, first=i)
        if candidate.url is None:
            continue
        try:
            return detectors.resolve_asset(candidate.key, detector_dir=folders or None, env_var='',
                                           download=download, quick=quick, verbose=verbose)
        except detectors.AssetUnavailableError as err:
            first_error = first_error or err
            # Only a missing file on a live server is worth trying the next URL for.
            if not download or 'HTTP 4' not in str(err):
                break
    text = str(first_error) if first_error is not None else detectors.unavailable_message(asset)
    raise TeacherUnavailableError('{} The folders of --detector-dir and ${} are searched too. Or pass {}=PATH '
                                  'to the file.'.format(text, DETECTOR_DIR_ENV, WEIGHTS_FLAG))


def check_teacher_available(spec: str = DEFAULT_SPEC, weights: Optional[str] = None, config: Optional[str] = None,
                            teacher_dir: Optional[str] = None, detector_dir: Optional[str] = None,
                            download: bool = True, quick: bool = True) -> str:
    """Fail fast before training: resolve the teacher's files without building it.

    Returns the weight file's path, or 'random' for `random:` specs. Raises
    TeacherSpecError for a bad spec and TeacherUnavailableError (one line
    naming the file, the URL and `--teacher-dir` / `$KDGAN_TEACHER_DIR` /
    `--teacher-weights`) when the file is missing. With `quick=True` an
    unreachable server is given a few seconds at most; the download itself,
    when the server answers, takes as long as it takes (and is then cached).
    """
    model, pretrained = parse_teacher_spec(spec)
    plan = TeacherPlan(model, pretrained, weights, config)
    path = resolve_teacher_file(plan, teacher_dir=teacher_dir, detector_dir=detector_dir, download=download,
                                quick=quick)
    if path is None:
        logger.warning('%s (%s)', RANDOM_WARNING, plan.describe())
        return RANDOM_TAG
    return path

def teacher_embed_dim(spec: str = DEFAULT_SPEC, config: Optional[str] = None) -> int:
    """The embedding width of a teacher (the student head's `student_dim`), read from its open_clip
    config without building it or importing open_clip."""
    if config:
        model_cfg, _ = read_model_config(config)
        return int(model_cfg['embed_dim'])
    model, _ = parse_teacher_spec(spec)
    cfg = _builtin_config(model.replace('/', '-'))
    if cfg is None:
        raise TeacherSpecError('unknown open_clip architecture {!r}; give a custom one with {}=PATH.json'
                               .format(model, CONFIG_FLAG))
    return int(cfg['embed_dim'])

# Building the network.

_config_dir: Optional[str] = None


def _register_config(model_cfg: dict, stem: str) -> str:
    """Register a custom config with open_clip under a name unique to its content; return the name."""
    global _config_dir
    import open_clip
    text = json.dumps(model_cfg, sort_keys=True)
    name = 'kdgan-{}-{}'.format(stem, hashlib.md5(text.encode('utf-8')).hexdigest()[:10])
    if open_clip.get_model_config(name) is None:
        if _config_dir is None:
            _config_dir = tempfile.mkdtemp(prefix='kdgan-teacher-configs-')
            atexit.register(shutil.rmtree, _config_dir, True)
        path = os.path.join(_config_dir, name + '.json')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)
        open_clip.add_model_config(path)
    return name


def _is_torchscript(path: str) -> bool:
    """OpenAI's original CLIP files are TorchScript archives (a zip with code/ and constants.pkl)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith('/constants.pkl') or '/code/' in n for n in zf.namelist())


class CLIPTeacher(torch.nn.Module):
    """Frozen open_clip image/text encoder; see the module docstring for the conventions.

    Arguments: `model` an architecture name or a whole spec ('ViT-B-32:openai',
    'random:ViT-B-32'; a spec's tag overrides `pretrained`), `pretrained` a tag
    or 'random', `weights` a local checkpoint, `config` a custom architecture
    JSON, `device`, `labels` (a list, or anything `resolve_labels` takes),
    `template`, `image_size` (None: the model's own input size), `detector_dir`
    / `teacher_dir` (folders searched for the weight file), `download` (allow
    the resolver to fetch it), `amp` ('fp16', 'bf16' or None: autocast dtype
    on CUDA).
    """

    def __init__(self, model: str = 'ViT-B-32', pretrained: Optional[str] = 'openai', weights: Optional[str] = None,
                 config: Optional[str] = None, device='cpu', labels=None, template: str = DEFAULT_TEMPLATE,
                 image_size: Optional[int] = None, detector_dir: Optional[str] = None, *,
                 teacher_dir: Optional[str] = None, download: bool = True, amp: Optional[str] = 'fp16',
                 verbose: bool = True):
        super().__init__()
        if ':' in str(model):
            model, pretrained = parse_teacher_spec(model)
        plan = TeacherPlan(model, pretrained, weights, config)
        path = resolve_teacher_file(plan, teacher_dir=teacher_dir, detector_dir=detector_dir, download=download,
                                    verbose=verbose)
        if amp not in (None, 'fp16', 'bf16'):
            raise ValueError("amp must be 'fp16', 'bf16' or None, got {!r}".format(amp))
        format_prompts(['x'], template)  # validate the template now, not at first use

        import open_clip
        arch = plan.arch
        if plan.model_cfg is not None:
            arch = _register_config(plan.model_cfg, os.path.splitext(os.path.basename(plan.config))[0])
        if path is None:
            logger.warning('%s (%s)', RANDOM_WARNING, plan.describe())
        kwargs = dict(force_quick_gelu=plan.quick_gelu, force_preprocess_cfg=plan.tag_preprocess() or None,
                      force_image_size=image_size, device='cpu')
        try:
            if path is None:
                net = open_clip.create_model(arch, pretrained=None, **kwargs)
            else:
                net = open_clip.create_model(arch, pretrained=path, weights_only=not _is_torchscript(path), **kwargs)
        except (RuntimeError, KeyError, ValueError) as err:
            if path is None:
                raise
            raise RuntimeError("Cannot load teacher weights '{}' into {}: {}. Does the file match the "
                               "architecture ({} / {})?".format(path, plan.describe().split(',')[0],
                                                                _first_line(err), '--teacher', CONFIG_FLAG)) from err

        self.model = net
        self.model.eval().requires_grad_(False)
        self.spec = plan.describe()
        self.model_name = arch
        self.pretrained = RANDOM_TAG if path is None else (plan.tag or 'file')
        self.weights_path = path
        self.is_random = path is None
        self.amp = amp
        self.embed_dim = int(open_clip.get_model_config(arch)['embed_dim'])
        cfg = dict(getattr(net.visual, 'preprocess_cfg', {}) or {})
        size = cfg.get('size', getattr(net.visual, 'image_size', 224))
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.image_size = self.input_size[0] if self.input_size[0] == self.input_size[1] else self.input_size
        self.interpolation = 'bilinear' if cfg.get('interpolation') == 'bilinear' else 'bicubic'
        self.resize_mode = cfg.get('resize_mode', 'shortest')
        mean = cfg.get('mean', OPENAI_MEAN)
        std = cfg.get('std', OPENAI_STD)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('_text_cache', None, persistent=False)
        self.template = template
        self.labels = resolve_labels(labels) if labels is not None else list(FACE_EXPRESSIONS)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.to(device)

    # -- frozen, never pickled -------------------------------------------------

    def train(self, mode: bool = True):
        """The teacher stays in eval mode whatever the caller asks (dropout off, fixed statistics)."""
        return super().train(False)

    def __reduce_ex__(self, protocol):
        raise TypeError('CLIPTeacher cannot be pickled or copied: the teacher lives in the loss and is rebuilt '
                        'from --teacher/--teacher-weights; it must never travel in a network pickle')

    def __deepcopy__(self, memo):
        return self.__reduce_ex__(None)

    def __getstate__(self):
        return self.__reduce_ex__(None)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # -- images ----------------------------------------------------------------

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """[N, 1|3, H, W] in [-1, 1] -> [N, 3, S, S] in CLIP's normalised input space (differentiable)."""
        if img.ndim != 4 or img.shape[1] not in (1, 3):
            raise ValueError('teacher input must be [N, 1 or 3, H, W] in [-1, 1], got {}'.format(list(img.shape)))
        x = img.to(device=self.mean.device, dtype=torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x + 1) * 0.5
        x = self._resize(x)
        return (x - self.mean) / self.std

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        th, tw = self.input_size
        h, w = x.shape[-2:]
        if (h, w) == (th, tw):
            return x
        if h * tw != w * th and self.resize_mode == 'shortest':
            # Scale the shorter side to the target, then centre-crop (open_clip's 'shortest' mode).
            scale = max(th / h, tw / w)
            sh, sw = max(th, round(h * scale)), max(tw, round(w * scale))
            x = F.interpolate(x, size=(sh, sw), mode=self.interpolation, align_corners=False, antialias=True)
            top, left = (sh - th) // 2, (sw - tw) // 2
            return x[:, :, top:top + th, left:left + tw]
        return F.interpolate(x, size=(th, tw), mode=self.interpolation, align_corners=False, antialias=True)

    def _autocast(self):
        if self.mean.device.type == 'cuda' and self.amp is not None:
            dtype = torch.bfloat16 if self.amp == 'bf16' else torch.float16
            return torch.autocast('cuda', dtype=dtype)
        return torch.autocast(self.mean.device.type, enabled=False)

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """Image embeddings float32 [N, embed_dim], not normalised; differentiable w.r.t. `img`."""
        x = self.preprocess(img)
        with self._autocast():
            emb = self.model.encode_image(x, normalize=False)
        return emb.float()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.encode_image(img)

    # -- text ------------------------------------------------------------------

    @property
    def prompts(self) -> List[str]:
        return format_prompts(self.labels, self.template)

    def set_labels(self, labels, template: Optional[str] = None) -> None:
        """Change the prompts; the text embeddings are recomputed (once) on next use."""
        self.labels = resolve_labels(labels)
        if template is not None:
            format_prompts(['x'], template)
            self.template = template
        self._text_cache = None

    @property
    def text_embeddings(self) -> torch.Tensor:
        """float32 [K, embed_dim] for the K prompts, computed once (no gradient), not normalised."""
        if self._text_cache is None or self._text_cache.device != self.mean.device:
            with torch.no_grad():
                tokens = self.tokenizer(self.prompts).to(self.mean.device)
                with self._autocast():
                    emb = self.model.encode_text(tokens, normalize=False)
            self._text_cache = emb.float().detach()
        return self._text_cache

    def extra_repr(self) -> str:
        return 'spec={}, embed_dim={}, input_size={}, labels={}'.format(
            self.spec, self.embed_dim, self.input_size, len(self.labels))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + '...'


def build_teacher(spec: str = DEFAULT_SPEC, weights: Optional[str] = None, config: Optional[str] = None,
                  **kwargs) -> CLIPTeacher:
    """CLIPTeacher from a `--teacher` spec string (what the losses call)."""
    model, pretrained = parse_teacher_spec(spec)
    return CLIPTeacher(model, pretrained=pretrained, weights=weights, config=config, **kwargs)
