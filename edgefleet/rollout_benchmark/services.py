"""The services a fleet benchmark starts on loopback: Mosquitto, PostgreSQL, ``edgefleet serve``.

Each is its own process, so its RSS and CPU are its own. PostgreSQL is a
throw-away cluster in a temporary folder (trust authentication on
127.0.0.1, default durability); PostgreSQL refuses to run as root, so as root
it belongs to the ``postgres`` user the Debian package creates, like the
test suite's (``tests/postgres.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.rollout_benchmark.options import FleetBenchError
from fleet_server.broker_auth import mosquitto_binary
from fleet_server.process import free_port

__all__ = [
    "Api",
    "NotLeaderError",
    "ServerBusyError",
    "ServerReplica",
    "broker",
    "postgres_cluster",
    "serve_options",
    "start_replicas",
    "stop_replicas",
]

TOKEN = "fleet-bench"  # noqa: S105 (loopback servers started and stopped by the benchmark)
_ERROR_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ ERROR ")
"""A line ``edgefleet serve`` logs at ERROR (its log lines start with the date and time)."""
SHARED_GROUP = "edgefleet"
"""The shared-subscription group the replicas join (``edgefleet serve``'s default)."""


class ServerBusyError(FleetBenchError):
    """A server replica did not answer an HTTP call (refused, reset, timed out), or said 503."""


class NotLeaderError(ServerBusyError):
    """A replica answered 503: it does not lead the rollouts (only the leader changes them)."""


class Api:
    """The HTTP API of the server replicas; calls go to each in turn, as behind a balancer."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._next = 0

    def __call__(
        self, method: str, path: str, body: Any = None, *, replica: int | None = None
    ) -> Any:
        if replica is None:
            replica, self._next = self._next, (self._next + 1) % len(self.urls)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (loopback, our own server)
            self.urls[replica] + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            message = f"{method} {path}: {exc.code} {exc.read()[:300]!r}"
            if exc.code == 503:
                raise NotLeaderError(message) from exc
            raise FleetBenchError(message) from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, or no answer in 60 s
            raise ServerBusyError(
                f"{method} {path}: {self.urls[replica]} did not answer: {exc}"
            ) from exc

    def to_any(self, method: str, path: str, body: Any = None, *, patience_s: float = 30.0) -> Any:
        """The call to the first replica that takes it (rollout changes go to the leader only);
        while the lead changes hands (every replica says 503), tried again for ``patience_s``."""
        deadline = time.monotonic() + patience_s
        while True:
            for replica in range(len(self.urls)):
                try:
                    return self(method, path, body, replica=replica)
                except NotLeaderError:  # not a time-out: that one may have acted on it
                    if replica == len(self.urls) - 1 and time.monotonic() >= deadline:
                        raise
            time.sleep(1.0)

    def metrics(self, replica: int) -> str | None:
        """Replica ``replica``'s ``/metrics`` text, or None when it does not answer one."""
        request = urllib.request.Request(  # noqa: S310 (loopback, our own server)
            self.urls[replica] + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
                return str(reply.read().decode())
        except (urllib.error.URLError, OSError):
            return None


@dataclass
class ServerReplica:
    """One ``edgefleet serve`` process of the benchmark."""

    replica_id: str
    process: subprocess.Popen[bytes]
    http_url: str
    log_path: Path
    log_file: Any

    def log_errors(self) -> tuple[int, str | None]:
        """How many ERROR lines this replica has logged so far, and the first of them."""
        self.log_file.flush()
        errors = [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if _ERROR_LINE.match(line)
        ]
        return len(errors), (errors[0][:300] if errors else None)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise FleetBenchError(
                    f"edgefleet serve ({self.replica_id}) exited with status"
                    f" {self.process.returncode}:\n{tail}"
                )
            try:
                with urllib.request.urlopen(self.http_url + "/healthz", timeout=1):  # noqa: S310
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise FleetBenchError(
            f"edgefleet serve ({self.replica_id}) did not answer /healthz in 60 s"
        )


def serve_options() -> set[str]:
    """The options this installation's ``edgefleet serve`` takes (``--replica-id``, ...)."""
    from edgefleet.commands.serve import serve

    return {opt for param in serve.params for opt in param.opts if opt.startswith("--")}


def start_replicas(
    *,
    count: int,
    workdir: Path,
    broker_url: str,
    db_url: str | None,
) -> list[ServerReplica]:
    """Start ``count`` ``edgefleet serve`` processes on one database, one broker, one state folder.

    With more than one, each gets ``--replica-id`` and joins the shared
    subscriptions: this installation's ``edgefleet serve`` must offer both.
    """
    options = serve_options()
    extra: list[list[str]] = [[] for _ in range(count)]
    if count > 1:
        missing = {"--replica-id", "--shared-subscriptions"} - options
        if missing:
            raise FleetBenchError(
                f"--replicas {count}: this edgefleet serve has no {', '.join(sorted(missing))}"
                " (no replica support yet)"
            )
        extra = [
            ["--replica-id", f"replica-{i + 1}", "--shared-subscriptions", SHARED_GROUP]
            for i in range(count)
        ]
    replicas: list[ServerReplica] = []
    try:
        for i in range(count):
            http_port = free_port()
            log_path = workdir / (f"server-{i + 1}.log" if count > 1 else "server.log")
            log_file = log_path.open("wb")
            command = [
                sys.executable,
                "-m",
                "edgefleet",
                "--log-level",
                "warning",
                "serve",
                "--state",
                str(workdir / "state"),
                "--repo",
                str(workdir / "repo"),
                "--keys",
                str(workdir / "keys"),
                "--broker",
                broker_url,
                "--http-port",
                str(http_port),
                *(["--db", db_url] if db_url is not None else []),
                *extra[i],
            ]
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "EDGEFLEET_TOKEN": TOKEN},
            )
            replicas.append(
                ServerReplica(
                    f"replica-{i + 1}", process, f"http://127.0.0.1:{http_port}", log_path, log_file
                )
            )
            # one at a time: the first creates the schema, the others find it
            replicas[-1].wait_healthy()
    except BaseException:
        stop_replicas(replicas)
        raise
    return replicas


def stop_replicas(replicas: list[ServerReplica]) -> None:
    """SIGTERM every replica, then wait (kill after 30 s)."""
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGTERM)
    for replica in replicas:
        try:
            replica.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(timeout=10)
        replica.log_file.close()


@contextmanager
def broker(
    url: str | None, folder: Path
) -> Iterator[tuple[str, int, subprocess.Popen[bytes] | None]]:
    """The broker to use: ``url`` as it is, or a Mosquitto started for the run."""
    if url is not None:
        from fleet_server.process import parse_broker_url

        host, port = parse_broker_url(url)
        yield host, port, None
        return
    with _mosquitto(folder) as (host, port, process):
        yield host, port, process


@contextmanager
def _mosquitto(folder: Path) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    binary = mosquitto_binary()
    if binary is None:
        raise FleetBenchError(
            "mosquitto is not installed: `apt-get install mosquitto`, or give --broker mqtt://HOST:PORT"
        )
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\nmax_queued_messages 10000\n"
    )
    log_file = (folder / "mosquitto.log").open("wb")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=log_file)
    try:
        _wait_port(port, process, "mosquitto")
        yield "127.0.0.1", port, process
    finally:
        process.terminate()
        process.wait(timeout=10)
        log_file.close()


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise FleetBenchError(f"{what} did not start") from None
            time.sleep(0.05)
        else:
            return


def _createdb(
    bin_dir: Path, port: int, env: dict[str, str], run_as: dict[str, Any], process: Any
) -> None:
    """Create the benchmark's database, retrying while the server is still starting up."""
    deadline = time.monotonic() + 30
    while True:
        created = subprocess.run(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "edgefleet",
                "edgefleet_bench",
            ],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
            **run_as,
        )
        if created.returncode == 0:
            return
        if time.monotonic() > deadline or process.poll() is not None:
            why = created.stderr.decode(errors="replace")
            raise FleetBenchError(f"PostgreSQL did not start (createdb: {why})")
        time.sleep(0.2)


def _postgres_bin() -> Path | None:
    """The folder with ``initdb`` and ``postgres``: the newest Debian one, else ``PATH``'s."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


@contextmanager
def postgres_cluster() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throw-away PostgreSQL cluster on a free loopback port: (database URL, server process)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        raise FleetBenchError(
            "PostgreSQL is not installed (apt-get install postgresql), so no cluster for"
            " --replicas or --postgres; or give --db postgresql://..."
        )
    if importlib.util.find_spec("psycopg") is None:
        raise FleetBenchError("no PostgreSQL driver: pip install 'psycopg[binary]'")
    run_as: dict[str, Any] = {}
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise FleetBenchError(
                "PostgreSQL refuses to run as root and there is no 'postgres' user"
            ) from None
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    # not the benchmark's workdir: as root that is 0700 root, which the postgres user cannot enter
    root = Path(tempfile.mkdtemp(prefix="edgefleet-bench-pg-"))
    sockets = root / "sockets"
    sockets.mkdir()
    log_path = root / "postgres.log"
    log_path.touch()
    if owner is not None:
        for path in (root, sockets, log_path):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
    if owner is not None:
        env |= {"HOME": str(root), "USER": owner.pw_name, "LOGNAME": owner.pw_name}
    port = free_port()
    process: subprocess.Popen[bytes] | None = None
    try:
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "edgefleet",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            cwd=root,
            env=env,
            timeout=120,
            check=False,
            **run_as,
        )
        if initdb.returncode != 0:
            output = (initdb.stdout + initdb.stderr).decode(errors="replace")[-1500:]
            raise FleetBenchError(f"PostgreSQL initdb failed: {output}")
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(root / "data"),
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(sockets),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                start_new_session=True,
                **run_as,
            )
        _wait_port(port, process, "PostgreSQL", timeout=30)
        _createdb(bin_dir, port, env, run_as, process)
        yield f"postgresql+psycopg://edgefleet@127.0.0.1:{port}/edgefleet_bench", process
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
