"""A real PostgreSQL server on loopback for tests, started from Debian's packages.

:func:`postgres_server` (session-scoped) finds ``initdb`` and ``postgres``
(``$EDGEFLEET_POSTGRES_BIN``, else the newest ``/usr/lib/postgresql/*/bin``,
else ``PATH``), creates a throw-away cluster in a temporary folder with trust
authentication, and runs ``postgres`` on a free ``127.0.0.1`` port with its
socket in that folder. PostgreSQL refuses to run as root, so as root the
cluster belongs to the ``postgres`` user the Debian package creates and both
programs run as that user. :func:`postgres_url` gives each test a fresh,
empty database on that server; :func:`database_url` runs a test once on a
SQLite file and once on PostgreSQL.

With ``$EDGEFLEET_TEST_POSTGRES_URL`` (an admin URL such as
``postgresql+psycopg://user:pw@host:5432/postgres``) no server is started
and the test databases are created there. Where PostgreSQL or a driver is
missing, or the server cannot start, the PostgreSQL tests fail with a message
that says why; SQLite tests still run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError

from edgefleet.testing.broker import free_port
from tests.services import service_missing

__all__ = [
    "NOT_INSTALLED",
    "PostgresServer",
    "database_url",
    "find_postgres_bin",
    "postgres_driver",
    "postgres_server",
    "postgres_url",
]

NOT_INSTALLED = "PostgreSQL is not installed (make test installs it: apt-get install postgresql)"
_NO_DRIVER = (
    "no PostgreSQL driver for SQLAlchemy is installed "
    "(pip install 'psycopg[binary]'; the server extra lists it)"
)
_SUPERUSER = "edgefleet"
_START_TIMEOUT_S = 30.0


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    override = os.environ.get("EDGEFLEET_POSTGRES_BIN")
    candidates = [Path(override)] if override else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    if found := shutil.which("initdb"):
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def postgres_driver() -> str | None:
    """The SQLAlchemy driver name of an installed PostgreSQL DBAPI (psycopg 3 first)."""
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    return None


class PostgresServer:
    """A running PostgreSQL server (started here or given) where tests create databases."""

    def __init__(self, admin_url: URL, process: subprocess.Popen[bytes] | None = None) -> None:
        self.admin_url = admin_url
        self.process = process
        self._admin: Engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop the database, disconnecting whoever still uses it."""
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        """Release the admin connections (the server itself is stopped by its owner)."""
        self._admin.dispose()


class _LocalCluster:
    """A throw-away cluster: initdb, postgres on loopback, fast shutdown and removal."""

    def __init__(self, bin_dir: Path, driver: str) -> None:
        self.bin_dir = bin_dir
        self.driver = driver
        self.run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError:
                service_missing(
                    "PostgreSQL refuses to run as root and there is no 'postgres' user "
                    "(the Debian package creates it: apt-get install postgresql)"
                )
        # Not pytest's tmp_path: as root that folder is 0700 root, which the postgres user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.log = self.root / "postgres.log"
        self.log.touch()
        if self.run_as is not None:
            for path in (self.root, self.sockets, self.log):
                os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def _popen_user(self) -> dict[str, object]:
        if self.run_as is None:
            return {}
        return {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.run_as is not None:
            env.update(HOME=str(self.root), USER=self.run_as.pw_name, LOGNAME=self.run_as.pw_name)
        return env

    def start(self) -> PostgresServer:
        """Initialise and start the cluster; fail the test with the server's words if it fails."""
        initdb = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                _SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            cwd=self.root,
            env=self._env(),
            timeout=120,
            **self._popen_user(),  # type: ignore[arg-type]
        )
        if initdb.returncode != 0:
            output = (initdb.stdout + initdb.stderr).decode(errors="replace")[-2000:]
            self.remove()
            service_missing(f"PostgreSQL initdb failed (exit {initdb.returncode}): {output}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.sockets),
                    # a test cluster: durability is not what these tests measure
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,
                **self._popen_user(),  # type: ignore[arg-type]
            )
        admin_url = URL.create(
            f"postgresql+{self.driver}",
            username=_SUPERUSER,
            host="127.0.0.1",
            port=self.port,
            database="postgres",
        )
        self._wait_ready(admin_url)
        return PostgresServer(admin_url, self.process)

    def _wait_ready(self, admin_url: URL) -> None:
        engine = create_engine(admin_url)
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    reason = f"exited with status {self.process.returncode}"
                    break
                try:
                    with engine.connect() as connection:
                        connection.execute(text("SELECT 1"))
                except OperationalError:
                    if time.monotonic() > deadline:
                        reason = f"not ready after {_START_TIMEOUT_S:.0f} s"
                        break
                    time.sleep(0.1)
                else:
                    return
        finally:
            engine.dispose()
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        service_missing(f"PostgreSQL could not start on 127.0.0.1:{self.port} ({reason}): {tail}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the cluster's folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.remove()

    def remove(self) -> None:
        """Delete the cluster's folder."""
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (see the module docstring)."""
    driver = postgres_driver()
    if driver is None:
        service_missing(_NO_DRIVER)
    external = os.environ.get("EDGEFLEET_TEST_POSTGRES_URL")
    if external:
        server = PostgresServer(make_url(external))
        yield server
        server.close()
        return
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        service_missing(NOT_INSTALLED)
    cluster = _LocalCluster(bin_dir, driver)
    server = cluster.start()
    try:
        yield server
    finally:
        server.close()
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's PostgreSQL server, dropped after."""
    name = f"edgefleet_test_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        with contextlib.suppress(OperationalError):
            postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file in ``tmp_path``, then a PostgreSQL database."""
    if request.param == "sqlite":
        from fleet_server.db import sqlite_url

        return sqlite_url(tmp_path / "fleet.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
