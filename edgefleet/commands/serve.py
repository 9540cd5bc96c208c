"""``edgefleet serve``: run the fleet server (database, TUF repository, MQTT, HTTP API)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from fleet_server.tls import ServeTls

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["serve"]


def _file_option(name: str, help: str) -> Callable[[_F], _F]:
    """An option naming a file that must exist."""
    return click.option(
        name,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        metavar="FILE",
        help=help,
    )


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
    metavar="mqtt[s]://HOST:PORT",
    help="MQTT broker to use (mqtts:// speaks TLS only, port 8883 by default); without it an "
    "embedded broker runs in this process.",
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
    help="Environment variable holding the API's bootstrap token: an admin (named 'bootstrap' "
    "in the audit log) that makes everyone's own tokens with `edgefleet fleet tokens create`.",
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
    metavar="mqtt[s]://HOST:PORT",
    help="The broker address written into provisioned device configs, when devices reach the "
    "broker elsewhere than the server does (with --broker-auth-dir: Mosquitto's device "
    "listener, while the server uses its own; see docs/operations.md). Default: --broker.",
)
@click.option(
    "--replica-id",
    help="This server's name among several replicas on one database (PostgreSQL) and one "
    "broker; each needs its own. Default: the host name.",
)
@click.option(
    "--shared-subscriptions",
    "share_group",
    metavar="GROUP",
    help="Split device reports and chunk requests among the replicas through MQTT shared "
    "subscriptions ($share/GROUP/..., Mosquitto 2): every report is handled by exactly one.",
)
@click.option(
    "--lease-ttl",
    "lease_ttl_s",
    type=click.FloatRange(min=1.0),
    default=10.0,
    show_default=True,
    help="Seconds the rollout leader's lease lasts unrenewed: how long a dead leader's "
    "rollouts wait before another replica takes them over.",
)
@click.option(
    "--drift-interval",
    "drift_interval_s",
    type=click.FloatRange(min=1.0),
    default=60.0,
    show_default=True,
    help="Seconds between two drift passes over the fleet (each device's and group's "
    "confidence and class mix against its bundle's baseline; run on the leading replica; "
    "`fleet drift check` runs one now).",
)
@_file_option(
    "--broker-ca",
    help="CA certificate that signed the broker's (mqtts://). Default: the system's CAs.",
)
@_file_option(
    "--broker-cert",
    help="Client certificate to show an mqtts:// broker that asks for one (with --broker-key).",
)
@_file_option("--broker-key", help="The private key of --broker-cert.")
@_file_option(
    "--device-ca",
    help="CA certificate provisioned devices trust for an mqtts:// device broker; `fleet "
    "provision --out` writes it beside their config. Default: --broker-ca.",
)
@_file_option(
    "--fleet-ca",
    help="The fleet CA's certificate (`fleet ca init`; never its key): revocation lists that "
    "`fleet ca revoke` sends must be signed by it before the broker gets them "
    "(with --broker-auth-dir).",
)
@_file_option("--https-cert", help="Serve the HTTP API over HTTPS with this certificate.")
@_file_option("--https-key", help="The private key of --https-cert.")
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
    replica_id: str | None,
    share_group: str | None,
    lease_ttl_s: float,
    drift_interval_s: float,
    broker_ca: Path | None,
    broker_cert: Path | None,
    broker_key: Path | None,
    device_ca: Path | None,
    fleet_ca: Path | None,
    https_cert: Path | None,
    https_key: Path | None,
) -> None:
    """Run the fleet server until Ctrl-C or SIGTERM.

    \b
    It keeps devices, bundles, rollouts and their timeline in the database,
    signs assignments, snapshot and timestamp with the online keys (never
    the release key), serves bundle chunks and drives staged rollouts over
    MQTT, and answers the operator's `edgefleet fleet` commands on its HTTP
    API (bearer tokens with roles, viewer, operator and admin, on every
    route but /healthz, checked before a body is read; every change recorded
    in the audit log, `edgefleet fleet audit`; bodies over 1 MiB refused;
    OpenAPI docs at /docs).

    \b
    Example:
      export EDGEFLEET_TOKEN=$(openssl rand -hex 16)
      edgefleet serve --state state --repo repo --keys keys --broker mqtt://127.0.0.1:1883

    \b
    With per-device credentials (Mosquitto reads the generated files):
      edgefleet serve --state state --repo repo --keys keys --broker mqtt://broker:1883 \\
        --broker-auth-dir /etc/mosquitto/edgefleet --broker-reload 'systemctl reload mosquitto'

    \b
    TLS everywhere (certificates from `edgefleet fleet ca`; docs/operations.md):
      edgefleet serve ... --broker mqtts://localhost:8884 --broker-ca ca.crt \\
        --device-broker mqtts://broker.plant:8883 --fleet-ca ca.crt \\
        --https-cert api.crt --https-key api.key

    \b
    Two replicas on PostgreSQL (one leads the rollouts; either takes over within --lease-ttl):
      edgefleet serve ... --db postgresql://fleet@db/fleet --broker mqtt://broker:1883 \\
        --replica-id a --shared-subscriptions edgefleet --http-port 8080
    """
    from fleet_server.process import ServeOptions, run_server
    from fleet_server.tls import BrokerTls, ServeTls

    tls = ServeTls(
        broker=BrokerTls(ca_file=broker_ca, cert_file=broker_cert, key_file=broker_key),
        device_ca_file=device_ca,
        fleet_ca_file=fleet_ca,
        https_cert=https_cert,
        https_key=https_key,
    )
    _check_tls_options(broker_url, device_broker_url, tls)

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
            replica_id=replica_id,
            share_group=share_group,
            lease_ttl_s=lease_ttl_s,
            drift_interval_s=drift_interval_s,
            tls=tls,
        )
    )


def _check_tls_options(broker_url: str | None, device_url: str | None, tls: ServeTls) -> None:
    """Refuse TLS options that would be silently ignored."""
    broker_tls = tls.broker
    if not (broker_url or "").startswith("mqtts://") and (
        broker_tls.ca_file or broker_tls.cert_file or broker_tls.key_file
    ):
        raise click.UsageError("--broker-ca, --broker-cert and --broker-key need --broker mqtts://")
    if (broker_tls.cert_file is None) != (broker_tls.key_file is None):
        raise click.UsageError("give --broker-cert and --broker-key together")
    if (tls.https_cert is None) != (tls.https_key is None):
        raise click.UsageError("give --https-cert and --https-key together")
    if tls.device_ca_file is not None and not (device_url or broker_url or "").startswith(
        "mqtts://"
    ):
        raise click.UsageError("--device-ca needs an mqtts:// device broker (--device-broker)")
