"""`labelloop setup`: create or update a Label Studio project wired to labelloop (idempotent).

The wiring itself lives in :mod:`ml_backend.projects`; this command builds the spec from the options and the
Settings (``ls_url``, ``ls_api_key``, ``backend_url``, ``webhook_secret``, basic auth, ``ls_local_files_root``),
prints one line per part (created / updated / unchanged) and the project URL. A user's mistake (unknown
template, wrong URL or token, a backend LS may not reach) ends it with one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from converters.label_config import parse_label_config
from ml_backend.projects import ProjectSpec, SetupReport, connect, ensure_project, find_template
from ml_backend.settings import Settings

_ALL_ADDRESSES = {"0.0.0.0", "::", ""}  # noqa: S104 - compared against, never bound


def backend_url(settings: Settings) -> str:
    """Where Label Studio reaches the backend: ``Settings.backend_url``, else ``http://<host>:<port>``."""
    if settings.backend_url:
        return settings.backend_url
    host = "127.0.0.1" if settings.host in _ALL_ADDRESSES else settings.host
    return f"http://{host}:{settings.port}"


def build_spec(
    settings: Settings, template: str, title: str | None, images: Path | None, import_file: Path | None
) -> ProjectSpec:
    """The :class:`ProjectSpec` for these options and settings.

    Raises:
        SetupError: unknown template.
        LabelConfigError: the template is not a label config labelloop can use.
    """
    config_path = find_template(template)
    xml = config_path.read_text(encoding="utf-8")
    config = parse_label_config(
        xml,
        prompts=settings.prompts,
        review_control=settings.review_control,
        review_accept=settings.review_accept,
        redact_label=settings.redact_label,
    )
    basic_auth = None
    if settings.basic_auth_user and settings.basic_auth_password:
        basic_auth = (settings.basic_auth_user, settings.basic_auth_password.get_secret_value())
    question_keys = sorted({c.question.data_key for c in config.controls if c.question and c.question.data_key})
    return ProjectSpec(
        title=title or f"labelloop {config_path.stem}",
        task_keys=tuple(question_keys),
        label_config=xml,
        image_key=config.image_key,
        backend_url=backend_url(settings),
        webhook_secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        basic_auth=basic_auth,
        images=images,
        import_file=import_file,
        local_files_root=settings.ls_local_files_root,
    )


def run_setup(
    settings: Settings,
    template: str,
    title: str | None = None,
    images: Path | None = None,
    import_file: Path | None = None,
) -> SetupReport:
    """Build the spec, connect to Label Studio and make the project match; the report says what changed.

    Raises:
        SetupError: see :func:`ml_backend.projects.connect` and :func:`ml_backend.projects.ensure_project`.
        LabelConfigError: the template is not usable.
    """
    spec = build_spec(settings, template, title, images, import_file)
    api_key = settings.ls_api_key.get_secret_value() if settings.ls_api_key else None
    client = connect(settings.ls_url, api_key)
    assert settings.ls_url is not None  # connect() refused a missing URL
    report = ensure_project(client, settings.ls_url, spec)
    if spec.webhook_secret is None:
        report.notes.append("LABELLOOP_WEBHOOK_SECRET is not set: the webhook carries no secret header")
    if images is not None and spec.task_keys:
        keys = ", ".join(repr(key) for key in spec.task_keys)
        report.notes.append(
            f"the label config reads task data {keys}, which image files do not carry: import tasks that have "
            "it with --import"
        )
    return report


@click.command("setup")
@click.option("--template", required=True, help="Label config: a name in label_configs/ (caption, vqa, ...) or a path.")
@click.option("--title", default=None, help="Project title (found again by it). Default: labelloop <template>.")
@click.option(
    "--images",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory of images to add: local-files storage when under LABELLOOP_LS_LOCAL_FILES_ROOT, else uploaded.",
)
@click.option(
    "--import",
    "import_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Label Studio JSON tasks to import (a list, one task, or JSON lines).",
)
@click.pass_obj
def setup(settings: Settings, template: str, title: str | None, images: Path | None, import_file: Path | None) -> None:
    """Create or update a Label Studio project wired to labelloop; running it again changes nothing.

    Sets the label config, registers the webhook with its secret header, connects the ML backend, makes
    predictions show to annotators, adds the images or tasks, and prints the project URL.
    """
    if images is not None and import_file is not None:
        raise click.UsageError("give --images or --import, not both")
    report = run_setup(settings, template, title, images, import_file)
    for line in report.lines():
        click.echo(line)
