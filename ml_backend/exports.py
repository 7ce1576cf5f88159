"""Settings → exporter: the one mapping from :class:`~ml_backend.settings.Settings` (and command-line overrides)
to the exporter's options, media access, label config and mark detector.

``labelloop export`` and the retraining job (``jobs/train.py``) both build their export here, so a project
exports alike from the command line and in the loop. Nothing here imports torch; the exporter's modules are
imported when a function is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_backend.exceptions import ConfigError

if TYPE_CHECKING:
    from converters.export import ExportOptions
    from converters.label_config import LabelConfig
    from converters.media import MediaConfig
    from ml_backend.settings import Settings


def export_options(settings: Settings, overrides: Mapping[str, Any] | None = None) -> ExportOptions:
    """ExportOptions from Settings, overridden by the ``overrides`` that are not None (the CLI's flag names).

    Raises:
        pydantic.ValidationError: an override is out of range (the CLI's own types check them first).
    """
    from converters.export import ExportOptions

    flags = dict(overrides or {})

    def pick(flag: str, setting: Any) -> Any:
        value = flags.get(flag)
        return setting if value is None else value

    distance = pick("near_dup_distance", settings.near_dup_distance)
    return ExportOptions(
        max_side=pick("max_side", settings.max_side),
        max_image_pixels=settings.max_image_pixels,
        exif_transpose=not flags.get("no_exif", False),
        exact_dedup=not flags.get("no_exact_dedup", False),
        near_dup_distance=None if distance < 0 else distance,
        normalize_text=not flags.get("no_text_normalize", False),
        min_caption_chars=pick("min_caption_chars", settings.min_caption_chars),
        min_answer_chars=pick("min_answer_chars", settings.min_answer_chars),
        redact=not flags.get("no_redact", False),
        redact_mode=pick("redact_mode", settings.redact_mode),
        val_fraction=pick("val_fraction", settings.val_fraction),
        seed=pick("seed", settings.seed),
        vqa_mode=pick("vqa_mode", settings.vqa_mode),
        workers=pick("workers", settings.export_workers),
        overwrite=flags.get("overwrite", False),
    )


def with_mark_detector(
    options: ExportOptions,
    config: LabelConfig,
    *,
    detect: bool | None = None,
    unmark: bool = False,
    original_field: str | None = None,
) -> ExportOptions:
    """``options`` with the screenshot-marks detector plugged in when ``detect`` is on (None: when ``config`` is a
    marked-screenshot config), with the rows that point the note at the marks, the original and ``unmark``.

    Raises:
        ConfigError: ``unmark`` without the detector.
    """
    if detect is None:
        detect = bool(config.by_kind("marked"))
    if not detect:
        if unmark:
            raise ConfigError("--unmark needs the marks detector (--detect-marks)")
        return options
    from converters.marks.adapter import MarksDetector

    update = {
        "mark_detector": MarksDetector(),
        "refer_marks": True,
        "unmark": unmark,
        "original_key": original_field or "original",
    }
    return options.model_copy(update=update)


def media_config(
    settings: Settings, overrides: Mapping[str, Any] | None = None, input_path: Path | None = None
) -> MediaConfig:
    """MediaConfig from Settings and the overrides; plain paths are allowed under ``image_root`` or, for an export
    file, its directory."""
    from converters.media import MediaConfig

    flags = dict(overrides or {})
    roots = tuple(flags.get("image_root") or ())
    if not roots and input_path is not None:
        roots = (input_path.resolve().parent,)
    return MediaConfig(
        ls_url=settings.ls_url,
        api_key=settings.ls_api_key,
        local_files_root=flags.get("local_files_root") or settings.ls_local_files_root,
        media_dir=flags.get("media_dir") or settings.ls_media_dir,
        local_roots=roots,
        allowed_hosts=tuple(settings.allowed_hosts),
        max_bytes=settings.max_image_bytes,
        timeout=settings.fetch_timeout,
    )


def label_config(settings: Settings, xml: str) -> LabelConfig:
    """The parsed label config with the prompts, review and label names from Settings.

    Raises:
        converters.errors.LabelConfigError: the config cannot be parsed or has no usable control.
    """
    from converters.label_config import parse_label_config

    return parse_label_config(
        xml,
        prompts=settings.prompts,
        review_control=settings.review_control,
        review_accept=settings.review_accept,
        redact_label=settings.redact_label,
        marks_label=settings.marks_label,
    )
