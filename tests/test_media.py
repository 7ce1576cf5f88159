"""Image access against a real HTTP server on 127.0.0.1: Label Studio auth (Token, refreshed Bearer), errors,
caps, the URL policy (SSRF), local-files and media roots, and secrets kept out of messages and logs."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from converters.errors import ImageError
from converters.media import MediaConfig, MediaFetcher, is_jwt, safe_url

LEGACY = "0123456789abcdef0123456789abcdef01234567"
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


PAT = jwt({"token_type": "refresh", "exp": 9_999_999_999, "jti": "personal"})


class Studio(BaseHTTPRequestHandler):
    """A small stand-in for Label Studio and for other image hosts."""

    state: ClassVar[dict[str, Any]] = {}

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def _send(
        self, status: int, body: bytes = b"", kind: str = "image/png", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        self.state.setdefault("auth_seen", []).append(header)
        return header == f"Token {LEGACY}" or (
            bool(self.state.get("access")) and header == f"Bearer {self.state['access']}"
        )

    def do_POST(self) -> None:
        if self.path != "/api/token/refresh/":
            self._send(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.state.get("refresh_delay", 0.0))
        if body.get("refresh") != PAT:
            self._send(401, b'{"detail": "Token is invalid"}', "application/json")
            return
        with self.state["lock"]:
            self.state["refreshes"] += 1
            access = jwt(
                {"token_type": "access", "exp": time.time() + self.state["lifetime"], "n": self.state["refreshes"]}
            )
            self.state["access"] = access
        self._send(200, json.dumps({"access": access}).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path
        if path.startswith("/data/upload/"):
            if not self._authorised():
                self._send(401, b'{"detail": "Authentication credentials were not provided."}', "application/json")
            elif path.endswith("missing.png"):
                self._send(404, b"Not found", "text/html")
            else:
                self._send(200, PNG)
        elif path == "/public/cat.png":
            self.state.setdefault("public_auth", []).append(self.headers.get("Authorization"))
            self._send(200, PNG)
        elif path == "/slow.png":
            time.sleep(1.5)
            self._send(200, PNG)
        elif path == "/drip.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(40 * 100))
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x" * 100)
                self.wfile.flush()
                time.sleep(0.05)
        elif path == "/huge.png":
            self._huge_declared()
        elif path == "/endless.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"x" * 65536)
            self.close_connection = True
        elif path == "/login.html":
            self._send(200, b"<html>please log in</html>", "text/html; charset=utf-8")
        elif path == "/boom.png":
            self._send(500, b"oops", "text/plain")
        elif path == "/to-metadata":
            self._send(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "/to-public":
            self._send(302, headers={"Location": "/public/cat.png"})
        elif path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        else:
            self._send(404, b"Not found", "text/html")

    def _huge_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(10 * 1024 * 1024))
        self.end_headers()
        self.close_connection = True


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on purpose (caps, timeouts) are expected here


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Studio)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    Studio.state.clear()
    Studio.state.update(refreshes=0, lifetime=300.0, lock=threading.Lock())


def fetcher(**config: Any) -> MediaFetcher:
    if "api_key" in config and isinstance(config["api_key"], str):
        config["api_key"] = SecretStr(config["api_key"])
    return MediaFetcher(MediaConfig(**config))


# --- Label Studio and its tokens -------------------------------------------------------------------------


def test_a_legacy_token_is_sent_as_token(server: str) -> None:
    with fetcher(ls_url=server, api_key=LEGACY) as media:
        assert media.fetch("/data/upload/1/ab12cd34-cat.png") == PNG
        assert media.fetch(f"{server}/data/upload/1/ab12cd34-cat.png") == PNG
    assert Studio.state["auth_seen"] == [f"Token {LEGACY}", f"Token {LEGACY}"]
    assert Studio.state["refreshes"] == 0


def test_a_personal_access_token_is_refreshed_into_a_bearer_token_once(server: str) -> None:
    assert is_jwt(PAT) and not is_jwt(LEGACY)
    with fetcher(ls_url=server, api_key=PAT) as media:
        for _ in range(3):
            assert media.fetch("/data/upload/1/cat.png") == PNG
    assert Studio.state["refreshes"] == 1
    assert all(seen.startswith("Bearer ") and PAT not in seen for seen in Studio.state["auth_seen"])


def test_an_access_token_about_to_expire_is_refreshed_before_use(server: str) -> None:
    Studio.state["lifetime"] = 10.0  # inside the 30 s safety margin
    with fetcher(ls_url=server, api_key=PAT) as media:
        media.fetch("/data/upload/1/cat.png")
        media.fetch("/data/upload/1/cat.png")
    assert Studio.state["refreshes"] == 2


def test_a_revoked_access_token_is_refreshed_once_on_401(server: str) -> None:
    with fetcher(ls_url=server, api_key=PAT) as media:
        media.fetch("/data/upload/1/cat.png")
        Studio.state["access"] = "revoked-by-the-server"
        assert media.fetch("/data/upload/1/cat.png") == PNG
    assert Studio.state["refreshes"] == 2


def test_concurrent_fetches_share_one_refresh(server: str) -> None:
    Studio.state["refresh_delay"] = 0.2
    results: list[bytes] = []
    with fetcher(ls_url=server, api_key=PAT) as media:
        threads = [
            threading.Thread(target=lambda: results.append(media.fetch("/data/upload/1/cat.png"))) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [PNG] * 8
    assert Studio.state["refreshes"] == 1


def test_a_bad_personal_access_token_fails_without_showing_it(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = jwt({"token_type": "refresh", "jti": "revoked"})
    with fetcher(ls_url=server, api_key=bad) as media, pytest.raises(ImageError) as info:
        media.fetch("/data/upload/1/cat.png")
    assert str(info.value) == (
        f"Label Studio token refresh at {server}/api/token/refresh/: HTTP 401 (the personal access token is "
        "invalid, revoked, or personal access tokens are disabled)"
    )
    assert info.value.reason == "image_auth"
    assert bad not in caplog.text and bad not in str(info.value)


def test_a_wrong_legacy_token_gives_401_without_showing_it(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "f" * 40
    with fetcher(ls_url=server, api_key=secret) as media, pytest.raises(ImageError) as info:
        media.fetch("/data/upload/1/cat.png")
    assert str(info.value) == "image /data/upload/1/cat.png: HTTP 401 Unauthorized (check the Label Studio API key)"
    assert secret not in caplog.text


def test_the_key_is_never_sent_to_other_hosts(server: str) -> None:
    other = server.replace("127.0.0.1", "localhost")
    port = server.rsplit(":", 1)[1]
    with fetcher(ls_url=server, api_key=LEGACY, allowed_hosts=(f"localhost:{port}",)) as media:
        assert media.fetch(f"{other}/public/cat.png") == PNG
    assert Studio.state["public_auth"] == [None]


# --- HTTP errors and caps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "config", "reason", "message"),
    [
        ("/data/upload/1/missing.png", {}, "image_missing", "image {server}/data/upload/1/missing.png: HTTP 404 Not Found"),
        ("/nowhere.png", {}, "image_missing", "image {server}/nowhere.png: HTTP 404 Not Found"),
        ("/boom.png", {}, "image_http", "image {server}/boom.png: HTTP 500 Internal Server Error"),
        ("/login.html", {}, "image_not_an_image", "image {server}/login.html: not an image (Content-Type text/html)"),
        ("/slow.png", {"timeout": 0.5}, "image_timeout", "image {server}/slow.png: timed out after 0.5 s"),
        ("/drip.png", {"timeout": 0.5}, "image_timeout", "image {server}/drip.png: timed out after 0.5 s"),
        ("/huge.png", {"max_bytes": 1024 * 1024}, "image_too_large", "image {server}/huge.png: too large (10485760 bytes > 1048576)"),
        ("/endless.png", {"max_bytes": 1024 * 1024}, "image_too_large", "image {server}/endless.png: too large (more than 1048576 bytes)"),
        ("/loop", {}, "image_fetch", "image {server}/loop: more than 3 redirects"),
    ],
)  # fmt: skip
def test_http_problems_name_the_url_and_what_went_wrong(
    server: str, path: str, config: dict[str, Any], reason: str, message: str
) -> None:
    with fetcher(ls_url=server, api_key=LEGACY, **config) as media, pytest.raises(ImageError) as info:
        media.fetch(server + path)
    assert (info.value.reason, str(info.value)) == (reason, message.format(server=server))


def test_redirects_are_followed_and_checked_again(server: str) -> None:
    with fetcher(ls_url=server) as media:
        assert media.fetch(f"{server}/to-public") == PNG
        with pytest.raises(ImageError) as info:
            media.fetch(f"{server}/to-metadata")
    assert str(info.value) == (
        "image http://169.254.169.254/latest/meta-data/: refused: host 169.254.169.254:80 is not Label Studio's "
        "and not in allowed_hosts"
    )


def test_a_connection_refused_is_an_image_error(server: str) -> None:
    with fetcher(allowed_hosts=("127.0.0.1:9",)) as media, pytest.raises(ImageError) as info:
        media.fetch("http://127.0.0.1:9/cat.png")
    assert info.value.reason == "image_fetch"
    assert str(info.value).startswith("image http://127.0.0.1:9/cat.png: ConnectError: ")


# --- the URL policy ----------------------------------------------------------------------------------------


def resolver(table: dict[str, list[str]]) -> Any:
    return lambda host, port: table[host]


@pytest.mark.parametrize(
    ("url", "config", "message"),
    [
        ("file:///etc/passwd", {}, "image file:///etc/passwd: refused: file:// URLs are not allowed (use a local-files root)"),
        ("http://169.254.169.254/latest/meta-data/", {}, "image http://169.254.169.254/latest/meta-data/: refused: host 169.254.169.254:80 is not Label Studio's and not in allowed_hosts"),
        ("http://169.254.169.254/latest/meta-data/", {"allowed_hosts": ("169.254.169.254",)}, "image http://169.254.169.254/latest/meta-data/: refused: 169.254.169.254 is a link-local or cloud metadata address"),
        ("http://127.0.0.1:6379/", {}, "image http://127.0.0.1:6379/: refused: host 127.0.0.1:6379 is not Label Studio's and not in allowed_hosts"),
        ("http://[fe80::1]/x.png", {"allowed_hosts": ("fe80::1",)}, "image http://[fe80::1]/x.png: refused: fe80::1 is a link-local or cloud metadata address"),
        ("http://[::ffff:169.254.169.254]/x.png", {"allowed_hosts": ("::ffff:169.254.169.254",)}, "image http://[::ffff:169.254.169.254]/x.png: refused: 169.254.169.254 is a link-local or cloud metadata address"),
        ("http://[fd00:ec2::254]/x.png", {"allowed_hosts": ("fd00::/8",)}, "image http://[fd00:ec2::254]/x.png: refused: fd00:ec2::254 is a link-local or cloud metadata address"),
        ("https://meta.example.com/x.png", {"allowed_hosts": ("*.example.com",)}, "image https://meta.example.com/x.png: refused: 169.254.169.254 is a link-local or cloud metadata address"),
        ("https://internal.example.com/x.png", {"allowed_hosts": ("*.example.com",)}, "image https://internal.example.com/x.png: refused: internal.example.com resolves to non-public address 10.1.2.3 (not allow-listed)"),
        ("https://images.example.org/x.png", {"allowed_hosts": ("cdn.example.org",)}, "image https://images.example.org/x.png: refused: host images.example.org:443 is not Label Studio's and not in allowed_hosts"),
        ("s3://bucket/cat.png", {}, "image s3://bucket/cat.png: refused: s3:// URLs are not allowed"),
        ("data:image/png;base64,AAAA", {}, "image data:image/png;base64,AAAA: refused: data:// URLs are not allowed"),
        ("images/cat.png", {}, "image images/cat.png: refused: local paths are not allowed (no image root configured)"),
    ],
)  # fmt: skip
def test_refused_urls_say_why(url: str, config: dict[str, Any], message: str) -> None:
    table = {"meta.example.com": ["169.254.169.254"], "internal.example.com": ["10.1.2.3", "93.184.216.34"]}
    with MediaFetcher(MediaConfig(**config), resolver=resolver(table)) as media, pytest.raises(ImageError) as info:
        media.fetch(url)
    assert (info.value.reason, str(info.value)) == ("image_refused", message)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://internal.example.com/x.png", ("*.example.com", "10.0.0.0/8")),
        ("https://internal.example.com/x.png", ("internal.example.com",)),
        ("https://cdn.example.com:8443/x.png", ("cdn.example.com:8443",)),
        ("http://10.1.2.3/x.png", ("10.0.0.0/8",)),
        ("https://public.example.com/x.png", ("*.example.com",)),
    ],
)
def test_allow_listed_hosts_pass_the_policy(url: str, allowed: tuple[str, ...]) -> None:
    table = {
        "internal.example.com": ["10.1.2.3"],
        "cdn.example.com": ["127.0.0.1"],
        "public.example.com": ["93.184.216.34"],
    }
    with MediaFetcher(MediaConfig(allowed_hosts=allowed), resolver=resolver(table)) as media:
        assert str(media.locate(url)) == url


# --- files on disk ---------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    media = tmp_path / "media"
    (media / "upload" / "1").mkdir(parents=True)
    (media / "upload" / "1" / "ab12cd34-cat.png").write_bytes(PNG)
    files = tmp_path / "files"
    (files / "images").mkdir(parents=True)
    (files / "images" / "dog.png").write_bytes(PNG)
    (tmp_path / "secret.txt").write_text("no")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "bird.png").write_bytes(PNG)
    return {"media": media, "files": files, "plain": plain, "tmp": tmp_path}


def test_label_studio_urls_are_read_from_mounted_dirs(roots: dict[str, Path]) -> None:
    config = MediaConfig(
        ls_url="http://ls.internal:8080", media_dir=roots["media"], local_files_root=roots["files"],
        local_roots=(roots["plain"],),
    )  # fmt: skip
    with MediaFetcher(config, resolver=resolver({})) as media:
        assert media.fetch("/data/upload/1/ab12cd34-cat.png") == PNG
        assert media.fetch("http://ls.internal:8080/data/upload/1/ab12cd34-cat.png") == PNG
        assert media.fetch("/data/local-files/?d=images/dog.png") == PNG
        assert media.fetch("http://ls.internal:8080/data/local-files/?d=images%2Fdog.png") == PNG
        assert media.fetch("bird.png") == PNG
        assert media.fetch(str(roots["plain"] / "bird.png")) == PNG


@pytest.mark.parametrize(
    ("url", "reason", "message"),
    [
        ("/data/local-files/?d=../secret.txt", "image_refused", "image /data/local-files/?d=../secret.txt: refused: path escapes the local-files root"),
        ("/data/local-files/?d=/etc/passwd", "image_refused", "image /data/local-files/?d=/etc/passwd: refused: path escapes the local-files root"),
        ("/data/upload/../../secret.txt", "image_refused", "image /data/upload/../../secret.txt: refused: path escapes Label Studio's media dir"),
        ("/data/local-files/", "image_missing", "image /data/local-files/: local-files URL without ?d=<path>"),
        ("/data/upload/1/gone.png", "image_missing", "image /data/upload/1/gone.png: file not found ({media}/upload/1/gone.png)"),
        ("../secret.txt", "image_refused", "image ../secret.txt: refused: path escapes the image root"),
        ("{tmp}/secret.txt", "image_refused", "image {tmp}/secret.txt: refused: outside the image roots ({plain})"),
    ],
)  # fmt: skip
def test_paths_outside_the_roots_are_refused(roots: dict[str, Path], url: str, reason: str, message: str) -> None:
    config = MediaConfig(media_dir=roots["media"], local_files_root=roots["files"], local_roots=(roots["plain"],))
    url = url.format(**roots)
    with MediaFetcher(config) as media, pytest.raises(ImageError) as info:
        media.fetch(url)
    assert (info.value.reason, str(info.value)) == (reason, message.format(**roots))


def test_a_label_studio_url_without_any_way_to_read_it(roots: dict[str, Path]) -> None:
    with MediaFetcher(MediaConfig()) as media, pytest.raises(ImageError) as info:
        media.fetch("/data/upload/1/ab12cd34-cat.png")
    assert str(info.value) == (
        "image /data/upload/1/ab12cd34-cat.png: a Label Studio URL, but neither the Label Studio URL nor its media "
        "dir / local-files root is configured"
    )


def test_files_above_the_byte_cap_are_refused(roots: dict[str, Path]) -> None:
    with MediaFetcher(MediaConfig(media_dir=roots["media"], max_bytes=100)) as media, pytest.raises(ImageError) as info:
        media.fetch("/data/upload/1/ab12cd34-cat.png")
    assert str(info.value) == f"image /data/upload/1/ab12cd34-cat.png: too large ({len(PNG)} bytes > 100)"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@bucket.s3.amazonaws.com/a.png?X-Amz-Signature=abc&X-Amz-Credential=def&size=2",
         "https://bucket.s3.amazonaws.com/a.png?X-Amz-Signature=***&X-Amz-Credential=***&size=2"),
        ("http://ls:8080/data/local-files/?d=images/a.png", "http://ls:8080/data/local-files/?d=images/a.png"),
        ("https://cdn.example.com/a.png?token=s3cr3t&w=100", "https://cdn.example.com/a.png?token=***&w=100"),
    ],
)  # fmt: skip
def test_safe_url_masks_secrets(url: str, shown: str) -> None:
    assert safe_url(url) == shown
