"""ml_backend.studio without starting Label Studio: its environment, port checks, version parsing, pid files."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_backend.studio import (
    LocalLabelStudio,
    PortMovedError,
    StudioError,
    check_served_port,
    ensure_template,
    free_port,
    is_label_studio_process,
    label_studio_env,
    log_tail,
    parse_version,
    port_is_free,
    served_port,
    stop_pid_file,
)

VENV = Path("/opt/ls-venv")

BOUND_LOG = """=> Database and media directory: /tmp/ls/data
Django version 5.2.19, using settings 'label_studio.core.settings.label_studio'
Starting development server at http://127.0.0.1:8080/
Quit the server with CONTROL-C.
"""
MOVED_LOG = """
*** WARNING! ***
* Port 8080 is in use.
* Trying to start at 8081
****************

Starting development server at http://127.0.0.1:8081/
"""


# --- the environment Label Studio gets -----------------------------------------------------------------------


def test_the_environment_inherits_nothing_from_the_parent_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("USERNAME", "PASSWORD", "HOST", "PORT", "DEBUG", "LOG_LEVEL", "LABEL_STUDIO_PORT", "VIRTUAL_ENV"):
        monkeypatch.setenv(name, "from-the-parent")

    env = label_studio_env(
        VENV,
        home=Path("/tmp/h"),
        data_dir=Path("/tmp/d"),
        files_root=Path("/tmp/f"),
        port=8123,
        username="admin@example.com",
        password="pw-123456",
        user_token="0123456789abcdef",
    )

    assert "from-the-parent" not in env.values()
    assert {"USERNAME", "PASSWORD", "HOST", "PORT", "DEBUG", "LOG_LEVEL"}.isdisjoint(env)
    assert env["LABEL_STUDIO_USERNAME"] == "admin@example.com"
    assert env["LABEL_STUDIO_HOST"] == "http://127.0.0.1:8123"
    assert env["HOME"] == "/tmp/h"
    assert env["PATH"].split(":")[0] == "/opt/ls-venv/bin"


def test_the_environment_keeps_label_studio_offline_and_open_to_loopback_backends() -> None:
    env = label_studio_env(VENV, home=Path("/h"), data_dir=Path("/d"))

    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == "/d"
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_LATEST_VERSION_CHECK"] == "false"
    assert env["LABEL_STUDIO_COLLECT_ANALYTICS"] == "false"
    assert env["SENTRY_DSN"] == env["FRONTEND_SENTRY_DSN"] == ""


def test_without_a_username_the_environment_creates_no_user_as_the_template_needs() -> None:
    env = label_studio_env(VENV, home=Path("/h"), data_dir=Path("/d"))

    assert not {key for key in env if "USER" in key or "PASSWORD" in key or "TOKEN" in key}
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "false"
    assert "LABEL_STUDIO_HOST" not in env


def test_a_user_gets_its_token_and_an_organization_with_legacy_tokens_enabled() -> None:
    env = label_studio_env(
        VENV,
        home=Path("/h"),
        data_dir=Path("/d"),
        files_root=Path("/files"),
        username="a@b.c",
        password="secret-pw",
        user_token="0123456789abcdef",
        extra={"LABEL_STUDIO_WEBHOOK_TIMEOUT": "3"},
    )

    assert env["LABEL_STUDIO_USER_TOKEN"] == "0123456789abcdef"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == "/files"
    assert env["LABEL_STUDIO_WEBHOOK_TIMEOUT"] == "3"


@pytest.mark.parametrize(
    ("password", "token"),
    [("", "0123456789"), ("pw-123456", "12345"), ("pw-123456", "")],
    ids=["no-password", "token-too-short-for-LS", "no-token"],
)
def test_a_user_without_a_usable_password_or_token_is_refused(password: str, token: str) -> None:
    with pytest.raises(StudioError, match="needs a password and a token of more than 5 characters"):
        label_studio_env(
            VENV, home=Path("/h"), data_dir=Path("/d"), username="a@b.c", password=password, user_token=token
        )


def test_each_instance_gets_its_own_random_credentials_and_keeps_them_out_of_its_repr() -> None:
    first = LocalLabelStudio(VENV, Path("/t"))
    second = LocalLabelStudio(VENV, Path("/t"))

    assert first.legacy_token != second.legacy_token
    assert len(first.legacy_token) == 40
    assert first.password != second.password
    assert first.legacy_token not in repr(first)
    assert first.password not in repr(first)


def test_an_instance_that_was_not_started_has_no_url() -> None:
    studio = LocalLabelStudio(VENV, Path("/t"))

    with pytest.raises(StudioError, match=r"not running: call start\(\) first"):
        _ = studio.url
    assert studio.pid is None
    assert not studio.running


# --- which port Label Studio actually serves on --------------------------------------------------------------


def test_the_port_is_confirmed_once_runserver_reports_binding_it() -> None:
    assert served_port(BOUND_LOG) == 8080
    assert check_served_port(BOUND_LOG, 8080) is True


def test_a_log_without_a_bind_yet_means_keep_waiting() -> None:
    assert served_port("=> Static URL is set to: /static/\n") is None
    assert check_served_port("=> Static URL is set to: /static/\n", 8080) is False


def test_a_busy_port_is_reported_as_soon_as_label_studio_announces_the_move() -> None:
    announced_only, _, _ = MOVED_LOG.partition("Starting")

    with pytest.raises(PortMovedError, match="started on port 8080 but moved to port 8081") as caught:
        check_served_port(announced_only, 8080)
    assert (caught.value.expected, caught.value.actual) == (8080, 8081)


def test_a_bind_on_another_port_is_a_move_too() -> None:
    with pytest.raises(PortMovedError) as caught:
        check_served_port(BOUND_LOG, 9000)

    assert (caught.value.expected, caught.value.actual) == (9000, 8080)


def test_a_port_with_a_listener_is_not_free_and_a_picked_port_is() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]

        assert not port_is_free(taken)
    assert port_is_free(free_port())


# --- the label-studio version and the template ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"), [("1.23.2\n", "1.23.2"), (" 1.24.0rc1 ", "1.24.0rc1"), ("2.0.0.dev3", "2.0.0.dev3")]
)
def test_the_version_printed_by_the_venv_is_read(text: str, version: str) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["", "Traceback (most recent call last):", "1.2/../../etc", "label-studio 1.23.2"])
def test_anything_but_a_plain_version_is_refused(text: str) -> None:
    with pytest.raises(StudioError, match="could not read the label-studio version"):
        parse_version(text)


def test_a_venv_without_label_studio_has_no_template(tmp_path: Path) -> None:
    (tmp_path / "venv" / "bin").mkdir(parents=True)

    with pytest.raises(StudioError, match=r"no label-studio executable at .*: build the venv with `make ls-env`"):
        ensure_template(tmp_path / "venv", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_starting_from_a_directory_that_is_not_a_template_is_refused(tmp_path: Path) -> None:
    studio = LocalLabelStudio(VENV, tmp_path / "empty", root=tmp_path / "root")

    with pytest.raises(StudioError, match="is not a Label Studio data dir: build it with ensure_template"):
        studio.start()
    assert not studio.running


def test_a_data_dir_that_exists_without_a_database_is_not_overwritten(tmp_path: Path) -> None:
    venv, template, root = tmp_path / "venv", tmp_path / "template", tmp_path / "root"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "label-studio").touch()
    template.mkdir()
    (template / "label_studio.sqlite3").touch()
    (root / "data").mkdir(parents=True)
    (root / "data" / "notes.txt").write_text("mine")
    studio = LocalLabelStudio(venv, template, root=root)

    with pytest.raises(StudioError, match="exists but holds no Label Studio database: remove it first"):
        studio.start()
    assert (root / "data" / "notes.txt").read_text() == "mine"


def test_the_log_tail_is_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "ls.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))

    assert log_tail(log, lines=2) == "line 98\nline 99"
    assert log_tail(tmp_path / "missing.log") == ""


# --- pid files -----------------------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that is not Label Studio."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_stop_pid_file_refuses_a_pid_that_is_not_label_studio(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pid_file = tmp_path / "label-studio.pid"
    pid_file.write_text(f"{sleeper.pid}\n")

    assert stop_pid_file(pid_file) is False
    assert sleeper.poll() is None, "the other program is left alone"
    assert not pid_file.exists(), "the stale pid file is removed"


def test_stop_pid_file_stops_a_label_studio_process_group(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "label-studio"  # a process whose executable is named label-studio, as LS's is
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(fake), "start"], start_new_session=True)
    pid_file = tmp_path / "label-studio.pid"
    pid_file.write_text(f"{proc.pid}\n")
    try:
        assert is_label_studio_process(proc.pid)

        assert stop_pid_file(pid_file) is True

        assert proc.wait(timeout=5) == -signal.SIGTERM
        assert not pid_file.exists()
    finally:
        proc.kill()
        proc.wait()


def test_stop_pid_file_has_nothing_to_do_without_a_file_or_a_process(tmp_path: Path) -> None:
    gone = tmp_path / "gone.pid"
    gone.write_text("999999999\n")  # above any pid_max: no such process

    assert stop_pid_file(tmp_path / "missing.pid") is False
    assert stop_pid_file(gone) is False
    assert not gone.exists()


def test_stop_pid_file_refuses_a_file_without_a_pid(tmp_path: Path) -> None:
    pid_file = tmp_path / "label-studio.pid"
    pid_file.write_text("not a pid\n")

    with pytest.raises(StudioError, match="does not hold a process id"):
        stop_pid_file(pid_file)
