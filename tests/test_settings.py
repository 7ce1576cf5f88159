"""Settings: typed, prefixed, validated at the edge with messages that name the variable."""

from __future__ import annotations

import pytest

from ml_backend.exceptions import ConfigError
from ml_backend.settings import Settings, load_settings


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_MIN_NEW_REVIEWS", "7")
    monkeypatch.setenv("LABELLOOP_ALLOWED_HOSTS", "images.example.com, cdn.example.com:8443")
    monkeypatch.setenv("LABELLOOP_LS_URL", "http://127.0.0.1:8080/")
    settings = load_settings()
    assert settings.min_new_reviews == 7
    assert settings.allowed_hosts == ["images.example.com", "cdn.example.com:8443"]
    assert settings.ls_url == "http://127.0.0.1:8080"


def test_keyword_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_BATCH_SIZE", "4")
    assert load_settings(batch_size=16).batch_size == 16


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LABELLOOP_MIN_NEW_REVIEWS": "0"}, "LABELLOOP_MIN_NEW_REVIEWS: Input should be greater than or equal to 1 (got '0')"),
        ({"LABELLOOP_ENGINE": "onnx"}, "LABELLOOP_ENGINE: Input should be 'transformers' or 'openai' (got 'onnx')"),
        ({"LABELLOOP_LS_URL": "localhost:8080"}, "LABELLOOP_LS_URL: Value error, expected an http(s) URL such as http://127.0.0.1:8080, got 'localhost:8080'"),
        ({"LABELLOOP_REDIS_URL": "127.0.0.1:6379"}, "LABELLOOP_REDIS_URL: Value error, expected redis://host:port/db, got '127.0.0.1:6379'"),
        ({"LABELLOOP_PORT": "http"}, "LABELLOOP_PORT: Input should be a valid integer, unable to parse string as an integer (got 'http')"),
    ],
)  # fmt: skip
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)


def test_secrets_are_hidden_in_errors_and_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(ls_api_key="abcdef0123456789", webhook_secret="s3cr3t")  # type: ignore[arg-type]
    assert "abcdef0123456789" not in repr(settings)
    assert "s3cr3t" not in repr(settings)
    monkeypatch.setenv("LABELLOOP_BEARER_TOKEN", "x" * 10)
    monkeypatch.setenv("LABELLOOP_PORT", "99999")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "xxxxxxxxxx" not in str(info.value)
