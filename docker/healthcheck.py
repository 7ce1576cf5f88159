"""Container health checks for the labelloop images (the Dockerfiles' HEALTHCHECK runs this).

    python healthcheck.py backend   # GET /health on the local `labelloop serve` answers 200
    python healthcheck.py worker    # an RQ worker of this container is registered on the queue in Redis

Settings come from the same ``LABELLOOP_*`` environment as the process being checked. Exit code 0 when
healthy; otherwise 1 and one line on stderr that says what failed (never a secret).
"""

from __future__ import annotations

import base64
import socket
import sys
import urllib.error
import urllib.request

from ml_backend.settings import Settings, load_settings

TIMEOUT = 4.0


def check_backend(settings: Settings) -> str | None:
    """None when ``GET http://127.0.0.1:<port>/health`` answers 200, else what went wrong."""
    url = f"http://127.0.0.1:{settings.port}/health"
    request = urllib.request.Request(url)
    if settings.basic_auth_user and settings.basic_auth_password:
        pair = f"{settings.basic_auth_user}:{settings.basic_auth_password.get_secret_value()}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    elif settings.bearer_token:
        request.add_header("Authorization", "Bearer " + settings.bearer_token.get_secret_value())
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - fixed loopback URL
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        return f"backend: {url} did not answer: {exc}"
    return None if status == 200 else f"backend: {url} answered HTTP {status}"


def check_worker(settings: Settings, hostname: str | None = None) -> str | None:
    """None when an RQ worker running on ``hostname`` (default: this host) listens on the queue, else why not.

    RQ expires a worker's registration when its heartbeats stop, so a hung or dead worker fails this check.
    """
    import redis
    from rq import Queue, Worker

    hostname = hostname or socket.gethostname()
    try:
        connection = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        workers = Worker.all(connection=connection, queue=Queue(settings.queue_name, connection=connection))
    except redis.RedisError as exc:
        return f"worker: Redis did not answer: {exc}"
    if any(worker.hostname == hostname for worker in workers):
        return None
    return f"worker: no RQ worker of host {hostname!r} is registered on queue {settings.queue_name!r}"


def main(argv: list[str]) -> int:
    """Run the check named in ``argv`` and return the process exit code."""
    checks = {"backend": check_backend, "worker": check_worker}
    if len(argv) != 1 or argv[0] not in checks:
        sys.stderr.write("usage: healthcheck.py backend|worker\n")
        return 2
    problem = checks[argv[0]](load_settings())
    if problem:
        sys.stderr.write(problem + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
