"""`labelloop setup` without Label Studio: templates, inputs, batching, and the one-line errors users see.

What needs a real Label Studio (idempotence, the SSRF and token errors LS itself produces) is in
tests/e2e/test_setup_project.py. Servers here are real sockets on 127.0.0.1 (a closed port, a stdlib server
that is not Label Studio).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ml_backend.cli import main
from ml_backend.cli.setup import backend_url, build_spec
from ml_backend.projects import (
    MAX_FILES_PER_UPLOAD,
    WEBHOOK_SECRET_HEADER,
    Change,
    ProjectSpec,
    SetupError,
    SetupReport,
    Step,
    _connection_reason,
    _detail,
    connect,
    explain_auth_error,
    find_template,
    image_files,
    read_import_file,
    upload_batches,
    uploaded_name,
)

REPO = Path(__file__).resolve().parent.parent
CAPTION = """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image"/>
  <Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices>
</View>"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def not_label_studio() -> Iterator[Callable[[int, bytes], str]]:
    """``serve(status, body) -> url``: a stdlib HTTP server answering every GET with ``status`` and ``body``."""
    servers: list[ThreadingHTTPServer] = []

    def serve(status: int, body: bytes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


# --- templates ------------------------------------------------------------------------------------------------


def test_find_template_by_name_lists_the_templates_there_are(tmp_path: Path) -> None:
    (tmp_path / "caption.xml").write_text(CAPTION)
    (tmp_path / "vqa.xml").write_text(CAPTION)
    assert find_template("caption", [tmp_path]) == tmp_path / "caption.xml"
    with pytest.raises(SetupError) as exc:
        find_template("captions", [tmp_path])
    assert str(exc.value) == "unknown template 'captions': choose one of caption, vqa, or give the path of an .xml file"


def test_find_template_takes_a_path_and_says_when_there_are_no_templates(tmp_path: Path) -> None:
    path = tmp_path / "mine.xml"
    path.write_text(CAPTION)
    assert find_template(str(path)) == path
    with pytest.raises(SetupError, match=r"^--template /nowhere/x\.xml: no such file$"):
        find_template("/nowhere/x.xml")
    with pytest.raises(SetupError) as exc:
        find_template("caption", [tmp_path / "empty"])
    assert str(exc.value) == (
        f"unknown template 'caption': no templates in {tmp_path / 'empty'}; give the path of an .xml file"
    )


def test_build_spec_reads_the_template_and_the_settings(tmp_path: Path, make_settings: Any) -> None:
    path = tmp_path / "caption.xml"
    path.write_text(CAPTION)
    settings = make_settings(
        backend_url="http://backend:9090",
        webhook_secret="s3cret",
        basic_auth_user="ls",
        basic_auth_password="pw",
        ls_local_files_root=tmp_path,
    )
    spec = build_spec(settings, str(path), None, tmp_path, None)
    assert spec == ProjectSpec(
        title="labelloop caption",
        label_config=CAPTION,
        image_key="image",
        backend_url="http://backend:9090",
        webhook_secret="s3cret",
        basic_auth=("ls", "pw"),
        images=tmp_path,
        local_files_root=tmp_path,
    )
    assert spec.webhook_url == "http://backend:9090/webhook"
    assert spec.webhook_headers == {WEBHOOK_SECRET_HEADER: "s3cret"}


def test_build_spec_knows_which_task_data_the_config_reads_besides_the_image(make_settings: Any) -> None:
    spec = build_spec(make_settings(), str(REPO / "label_configs" / "vqa.xml"), "q", None, None)
    assert (spec.image_key, spec.task_keys) == ("image", ("question",))


def test_a_template_labelloop_cannot_use_is_refused_before_label_studio_is_asked(
    tmp_path: Path, make_settings: Any
) -> None:
    path = tmp_path / "bad.xml"
    path.write_text('<View><Image name="image" value="$image"/></View>')
    from converters.errors import LabelConfigError

    with pytest.raises(LabelConfigError, match="nothing labelloop can export"):
        build_spec(make_settings(), str(path), None, None, None)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "http://127.0.0.1:9090"),
        ({"host": "0.0.0.0", "port": 9191}, "http://127.0.0.1:9191"),
        ({"host": "10.1.2.3"}, "http://10.1.2.3:9090"),
        ({"backend_url": "http://backend:9090/"}, "http://backend:9090"),
    ],
)
def test_backend_url_defaults_to_where_serve_listens(
    make_settings: Any, overrides: dict[str, Any], expected: str
) -> None:
    assert backend_url(make_settings(**overrides)) == expected


# --- images and tasks ---------------------------------------------------------------------------------------------


def test_image_files_finds_images_recursively(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.webp"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)] == ["a.JPG", "b.png", "sub/c.webp"]
    with pytest.raises(SetupError, match=r"^--images .*/missing: no such directory$"):
        image_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert image_files(tmp_path / "empty") == []  # setup notes it: images may come later (storage syncs)


def test_upload_batches_respect_labels_studios_file_count_and_a_byte_budget(tmp_path: Path) -> None:
    files = []
    for i in range(MAX_FILES_PER_UPLOAD * 2 + 5):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"x" * 10)
        files.append(path)
    assert [len(b) for b in upload_batches(files)] == [100, 100, 5]
    assert [len(b) for b in upload_batches(files[:7], max_bytes=25)] == [2, 2, 2, 1]
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 100)
    assert [len(b) for b in upload_batches([big, files[0]], max_bytes=25)] == [1, 1]


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/data/upload/3/1a2b3c4d-cat.png", "cat.png"),
        ("http://ls:8080/data/upload/12/0aaf9e00-a-b.jpg", "a-b.jpg"),
        ("/data/local-files/?d=images/cat.png", None),
        (None, None),
    ],
)
def test_uploaded_name_strips_label_studios_prefix(url: Any, name: str | None) -> None:
    assert uploaded_name(url) == name


def test_read_import_file_accepts_lists_single_tasks_and_json_lines(tmp_path: Path) -> None:
    listed = tmp_path / "tasks.json"
    listed.write_text(json.dumps([{"image": "/a.png"}, {"data": {"image": "/b.png"}, "predictions": []}]))
    assert read_import_file(listed, "image") == [
        {"data": {"image": "/a.png"}},
        {"data": {"image": "/b.png"}, "predictions": []},
    ]
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"data": {"image": "/c.png", "question": "q?"}}))
    assert read_import_file(single, "image") == [{"data": {"image": "/c.png", "question": "q?"}}]
    lines = tmp_path / "tasks.jsonl"
    lines.write_text('{"image": "/d.png"}\n\n{"image": "/e.png"}\n')
    assert [t["data"]["image"] for t in read_import_file(lines, "image")] == ["/d.png", "/e.png"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"img": "/a.png"}]', "task 0 has no 'image' in its data (the config's Image)"),
        ('["/a.png"]', "task 0 is a str, expected an object"),
        ("[]", "no tasks in it"),
        ("{nope\n", "not JSON or JSON lines (Expecting property name enclosed in double quotes at line 1)"),
    ],
)
def test_read_import_file_errors_name_the_task_and_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(SetupError) as exc:
        read_import_file(path, "image")
    assert str(exc.value) == f"--import {path}: {message}"


# --- Label Studio's answers, flattened --------------------------------------------------------------------------

# Bodies captured from Label Studio 1.23.2.
UNREACHABLE_BACKEND = {
    "id": "c4448021",
    "status_code": 400,
    "version": "1.23.2",
    "detail": "Validation error",
    "exc_info": None,
    "validation_errors": {
        "non_field_errors": [
            "Can't connect to ML backend http://127.0.0.1:9556, health check failed. Make sure it is up and your "
            'firewall is properly configured. <a href="https://labelstud.io/guide/ml.html">Learn more</a> about how '
            "to set up an ML backend. Additional info: HTTPConnectionPool(host='127.0.0.1', port=9556): Max retries "
            "exceeded with url: /health (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9556): "
            'Failed to establish a new connection: [Errno 111] Connection refused"))'
        ]
    },
}


def test_detail_prefers_validation_errors_and_drops_html_and_bookkeeping() -> None:
    text = _detail(UNREACHABLE_BACKEND)
    assert text.startswith("non_field_errors: Can't connect to ML backend http://127.0.0.1:9556, health check failed.")
    assert "<a" not in text and "Learn more about" in text and "c4448021" not in text
    assert _detail({"id": "x", "status_code": 403, "detail": "URL resolves to a reserved network address"}) == (
        "URL resolves to a reserved network address"
    )


def test_connection_reason_finds_the_os_error() -> None:
    assert _connection_reason(str(UNREACHABLE_BACKEND)) == "Connection refused"
    assert _connection_reason("Name or service not known. More text") == "Name or service not known"


def test_refused_key_is_explained_by_its_cause() -> None:
    legacy = "Authentication token no longer valid: legacy token authentication has been disabled for this organization"
    assert str(explain_auth_error("http://ls:8080", legacy)) == (
        "Label Studio at http://ls:8080 refused LABELLOOP_LS_API_KEY: legacy tokens are disabled for this "
        "organization; use a personal access token (Account & Settings > Personal Access Token) or enable legacy "
        "tokens (Organization > API Tokens Settings)"
    )
    assert str(explain_auth_error("http://ls:8080", "Invalid token.")) == (
        "Label Studio at http://ls:8080 refused LABELLOOP_LS_API_KEY (Invalid token.): copy a personal access token "
        "or a legacy token from Account & Settings in Label Studio"
    )


def test_report_lines_say_what_changed_and_end_with_the_project_url() -> None:
    report = SetupReport(3, "http://ls/projects/3/data", [Step("label config", Change.UNCHANGED)])
    assert report.lines() == ["label config: unchanged", "nothing changed", "project: http://ls/projects/3/data"]
    report.steps.append(Step("webhook http://b/webhook", Change.UPDATED, "secret header X-Labelloop-Secret"))
    report.notes.append("something to know")
    assert report.changed
    assert report.lines()[1:] == [
        "webhook http://b/webhook: updated (secret header X-Labelloop-Secret)",
        "note: something to know",
        "done",
        "project: http://ls/projects/3/data",
    ]


# --- connecting ----------------------------------------------------------------------------------------------------


def test_connect_explains_a_missing_url_or_key() -> None:
    with pytest.raises(
        SetupError, match=r"^no Label Studio URL: set LABELLOOP_LS_URL \(e\.g\. http://127\.0\.0\.1:8080\)$"
    ):
        connect(None, "key")
    with pytest.raises(SetupError, match=r"^no Label Studio API key: set LABELLOOP_LS_API_KEY"):
        connect("http://127.0.0.1:8080", None)


def test_connect_to_a_closed_port_says_it_cannot_reach_label_studio() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SetupError) as exc:
        connect(url, "k" * 40)
    assert str(exc.value) == (
        f"cannot reach Label Studio at {url}: [Errno 111] Connection refused; check LABELLOOP_LS_URL and that "
        "Label Studio is running"
    )


@pytest.mark.parametrize(
    ("status", "body", "answered"),
    [
        (404, b"<html>not found</html>", "HTTP 404"),
        (200, b'{"status": "UP"}', "HTTP 200 without a Label Studio version"),
    ],
)
def test_connect_to_something_else_says_it_is_not_label_studio(
    not_label_studio: Callable[[int, bytes], str], status: int, body: bytes, answered: str
) -> None:
    url = not_label_studio(status, body)
    with pytest.raises(SetupError) as exc:
        connect(url, "k" * 40)
    assert str(exc.value) == (
        f"{url} does not look like Label Studio (GET /api/version/ answered {answered}); check LABELLOOP_LS_URL"
    )


# --- the command ----------------------------------------------------------------------------------------------------


def test_setup_command_ends_a_users_mistake_with_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("LABELLOOP_LS_URL", url)
    monkeypatch.setenv("LABELLOOP_LS_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    (tmp_path / "c.xml").write_text(CAPTION)
    with pytest.raises(SystemExit) as exit_info:
        main(["setup", "--template", "c.xml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"labelloop: error: cannot reach Label Studio at {url}: [Errno 111] Connection refused; check "
        "LABELLOOP_LS_URL and that Label Studio is running\n"
    )
    assert "0123456789abcdef" not in err


def test_setup_command_takes_images_or_an_import_file_not_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["setup", "--template", "caption", "--images", str(tmp_path), "--import", str(tmp_path / "t.json")])
    assert exit_info.value.code == 2
    assert "give --images or --import, not both" in capsys.readouterr().err
