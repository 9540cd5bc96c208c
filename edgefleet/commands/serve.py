"""``edgefleet serve``: run the fleet server (database, TUF repository, MQTT, HTTP API)."""

from __future__ import annotations

import os
from pathlib import Path

import click

__all__ = ["serve"]


@click.command()
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Server state folder: the bundles devices download (and fleet.db by default).",
)
@click.option(
    "--repo",
    "repo_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The TUF repository folder (made by `edgefleet release`).",
)
@click.option(
    "--keys",
    "keys_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder with the ONLINE keys (snapshot, timestamp, assignments); only those are loaded.",
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="SQLAlchemy database URL.  [default: sqlite:///STATE/fleet.db]",
)
@click.option(
    "--broker",
    "broker_url",
    metavar="mqtt://HOST:PORT",
    help="MQTT broker to use; without it an embedded broker runs in this process.",
)
@click.option(
    "--broker-port",
    type=click.IntRange(1, 65535),
    help="Port of the embedded broker (on --http-host).  [default: a free port]",
)
@click.option("--http-host", default="127.0.0.1", show_default=True, help="HTTP API address.")
@click.option(
    "--http-port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="HTTP port."
)
@click.option(
    "--token-env",
    default="EDGEFLEET_TOKEN",
    show_default=True,
    help="Environment variable holding the API's bearer token.",
)
@click.option(
    "--broker-auth-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Give every device its own broker credentials: write Mosquitto's password_file "
    "(passwd) and acl_file (acl) here, and connect as user edgefleet-server. Without --broker "
    "the embedded broker checks the same file and topic rules.",
)
@click.option(
    "--broker-reload",
    metavar="COMMAND",
    help="Run after the password/ACL files change, e.g. 'systemctl reload mosquitto'.",
)
@click.option(
    "--mqtt-password-env",
    default="EDGEFLEET_MQTT_PASSWORD",
    show_default=True,
    help="Environment variable with the server's broker password (with --broker-auth-dir; "
    "if unset one is made and kept in STATE/broker-server.secret).",
)
@click.option(
    "--public-docs",
    is_flag=True,
    help="Serve /docs, /redoc and /openapi.json without the token (by default they need it, "
    "like every route but /healthz).",
)
@click.option(
    "--auto-register/--no-auto-register",
    default=None,
    help="Register devices that report before they were provisioned. Default: yes on an open "
    "broker (the embedded one), no with --broker-auth-dir.",
)
@click.option(
    "--device-broker",
    "device_broker_url",
    metavar="mqtt://HOST:PORT",
    help="The broker address written into provisioned device configs, when devices reach the "
    "broker elsewhere than the server does (with --broker-auth-dir: Mosquitto's device "
    "listener, while the server uses its own; see docs/operations.md). Default: --broker.",
)
def serve(
    state_dir: Path,
    repo_dir: Path,
    keys_dir: Path,
    db_url: str | None,
    broker_url: str | None,
    broker_port: int | None,
    http_host: str,
    http_port: int,
    token_env: str,
    broker_auth_dir: Path | None,
    broker_reload: str | None,
    mqtt_password_env: str,
    public_docs: bool,
    auto_register: bool | None,
    device_broker_url: str | None,
) -> None:
    """Run the fleet server until Ctrl-C or SIGTERM.

    \b
    It keeps devices, bundles, rollouts and their timeline in the database,
    signs assignments, snapshot and timestamp with the online keys (never
    the release key), serves bundle chunks and drives staged rollouts over
    MQTT, and answers the operator's `edgefleet fleet` commands on its HTTP
    API (bearer token on every route but /healthz, checked before a body is
    read; bodies over 1 MiB refused; OpenAPI docs at /docs).

    \b
    Example:
      export EDGEFLEET_TOKEN=$(openssl rand -hex 16)
      edgefleet serve --state state --repo repo --keys keys --broker mqtt://127.0.0.1:1883

    \b
    With per-device credentials (Mosquitto reads the generated files):
      edgefleet serve --state state --repo repo --keys keys --broker mqtt://broker:1883 \\
        --broker-auth-dir /etc/mosquitto/edgefleet --broker-reload 'systemctl reload mosquitto'
    """
    from fleet_server.process import ServeOptions, run_server

    token = os.environ.get(token_env, "")
    if not token:
        raise click.UsageError(
            f"environment variable {token_env} (the API token) is empty or unset"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    run_server(
        ServeOptions(
            db_url=db_url or f"sqlite:///{(state_dir / 'fleet.db').resolve()}",
            repo_dir=repo_dir,
            keys_dir=keys_dir,
            state_dir=state_dir,
            broker_url=broker_url,
            http_host=http_host,
            http_port=http_port,
            token=token,
            embedded_broker_host=http_host,
            embedded_broker_port=broker_port,
            broker_auth_dir=broker_auth_dir,
            broker_reload=broker_reload,
            mqtt_password=os.environ.get(mqtt_password_env) or None,
            public_docs=public_docs,
            auto_register=auto_register,
            device_broker_url=device_broker_url,
        )
    )
