"""Frozen vision-language teachers for KD-DLGAN (they live in the loss, never in a pickle).

`CLIPTeacher` wraps an open_clip model; `check_teacher_available` is the
start-up check train.py runs before training; `parse_teacher_spec` and
`resolve_labels` parse `--teacher` and `--kd-labels`.
"""
from .clip_teacher import (  # noqa: F401
    CLIPTeacher,
    DEFAULT_SPEC,
    DEFAULT_TEMPLATE,
    FACE_EXPRESSIONS,
    RANDOM_WARNING,
    TeacherSpecError,
    TeacherUnavailableError,
    build_teacher,
    check_teacher_available,
    format_prompts,
    parse_teacher_spec,
    resolve_labels,
    teacher_embed_dim,
)
