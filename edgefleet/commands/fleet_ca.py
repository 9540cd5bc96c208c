"""``edgefleet fleet ca``: the fleet CA on the operator's machine (TLS certificates, revocation).

The CA's key never leaves its folder (like the release key); the broker and
the fleet server are given its certificate only. ``revoke`` and ``crl`` send
the newly signed revocation list to the fleet server, which checks it against
that certificate and hands it to the broker (``serve --broker-auth-dir``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from edgefleet.commands._console import make_console

if TYPE_CHECKING:
    from edgefleet.commands.fleet import FleetApi
    from fleet_server.fleet_ca import FleetCA

__all__ = ["ca", "ca_dir_option", "open_ca", "passphrase_option"]


def ca_dir_option(function: click.decorators.FC) -> click.decorators.FC:
    """``--ca-dir``: the CA's folder (env ``EDGEFLEET_CA_DIR``)."""
    return click.option(
        "--ca-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="EDGEFLEET_CA_DIR",
        help="The fleet CA's folder (env EDGEFLEET_CA_DIR).",
    )(function)


def passphrase_option(function: click.decorators.FC) -> click.decorators.FC:
    """``--ca-passphrase-env``: where the CA key's passphrase is."""
    return click.option(
        "--ca-passphrase-env",
        metavar="VAR",
        help="Environment variable holding the CA key's passphrase (its PEM is then encrypted).",
    )(function)


def _passphrase(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise click.UsageError(f"environment variable {variable} is empty or unset")
    return value


def open_ca(ca_dir: Path | None, passphrase_env: str | None) -> FleetCA:
    """The fleet CA in ``ca_dir`` (a usage error when none is named)."""
    from fleet_server.fleet_ca import FleetCA

    if ca_dir is None:
        raise click.UsageError("name the fleet CA's folder: --ca-dir DIR (or EDGEFLEET_CA_DIR)")
    return FleetCA.open(ca_dir, _passphrase(passphrase_env))


@click.group("ca")
def ca() -> None:
    """The fleet CA: TLS certificates for the broker, the API and each device, and revocation.

    \b
    Keep its folder on the operator's machine, like the release key; the
    broker and `edgefleet serve --fleet-ca` get its certificate (ca.crt) only.
    Example:
      edgefleet fleet ca init --ca-dir fleet-ca
      edgefleet fleet ca server-cert --ca-dir fleet-ca --host broker.plant --out broker-tls/
      edgefleet fleet provision cam-17 --out cam-17/ --client-cert --ca-dir fleet-ca
      edgefleet fleet ca revoke cam-17 --ca-dir fleet-ca
    """


@ca.command("init")
@ca_dir_option
@click.option("--name", default="edgefleet fleet CA", show_default=True, help="Its common name.")
@click.option("--days", type=click.IntRange(1), default=3650, show_default=True, help="Validity.")
@passphrase_option
def ca_init(ca_dir: Path | None, name: str, days: int, ca_passphrase_env: str | None) -> None:
    """Create the fleet CA: key (0600), certificate and an empty revocation list."""
    from fleet_server.fleet_ca import FleetCA

    if ca_dir is None:
        raise click.UsageError("name the fleet CA's folder: --ca-dir DIR (or EDGEFLEET_CA_DIR)")
    made = FleetCA.init(ca_dir, name=name, days=days, passphrase=_passphrase(ca_passphrase_env))
    console = make_console()
    console.print(f"created the fleet CA {name!r} in {ca_dir}")
    console.print(f"  certificate {made.folder / 'ca.crt'} (give it to the broker and the server)")
    console.print(f"  key         {made.folder / 'ca.key'} (keep it here, mode 0600)")
    console.print(f"  revocations {made.crl_path}")


@ca.command("server-cert")
@ca_dir_option
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A DNS name or IP address clients connect to (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write NAME.crt and NAME.key (0600) into, with ca.crt and crl.pem.",
)
@click.option("--name", default="broker", show_default=True, help="File name stem.")
@click.option("--days", type=click.IntRange(1), default=825, show_default=True, help="Validity.")
@passphrase_option
def ca_server_cert(
    ca_dir: Path | None,
    hosts: tuple[str, ...],
    out: Path,
    name: str,
    days: int,
    ca_passphrase_env: str | None,
) -> None:
    """Issue a server certificate (the broker's TLS listeners, or HTTPS for the API).

    \b
    OUT then holds what a Mosquitto TLS listener reads: certfile NAME.crt,
    keyfile NAME.key, cafile ca.crt (the fleet CA, which verifies device
    certificates) and crlfile crl.pem.
    """
    fleet_ca = open_ca(ca_dir, ca_passphrase_env)
    pair = fleet_ca.issue_server(list(hosts), days=days)
    from fleet_server.fleet_ca import write_pair

    cert_path, key_path = write_pair(out, name, pair)
    shutil.copyfile(fleet_ca.folder / "ca.crt", out / "ca.crt")
    shutil.copyfile(fleet_ca.crl_path, out / "crl.pem")
    console = make_console()
    console.print(
        f"issued a server certificate for {', '.join(hosts)} (serial {pair.record.serial})"
    )
    for path in (cert_path, key_path, out / "ca.crt", out / "crl.pem"):
        console.print(f"  wrote {path}")


@ca.command("client-cert")
@click.argument("device_id")
@ca_dir_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write client.crt and client.key (0600) into.",
)
@click.option("--days", type=click.IntRange(1), default=1095, show_default=True, help="Validity.")
@passphrase_option
def ca_client_cert(
    device_id: str, ca_dir: Path | None, out: Path, days: int, ca_passphrase_env: str | None
) -> None:
    """Issue DEVICE_ID a new client certificate (renewal, or a device provisioned without one).

    \b
    Its common name is the device id; copy both files to where the device's
    mqtt.tls cert_file and key_file point. Revoke the old one afterwards
    with `fleet ca revoke --serial` (`fleet ca list` shows serials).
    """
    fleet_ca = open_ca(ca_dir, ca_passphrase_env)
    pair = fleet_ca.issue_client(device_id, days=days)
    from fleet_server.fleet_ca import write_pair

    cert_path, key_path = write_pair(out, "client", pair)
    click.echo(f"issued a client certificate for {device_id} (serial {pair.record.serial})")
    click.echo(f"  wrote {cert_path}\n  wrote {key_path}")


def _push_crl(api: FleetApi, pem: bytes, crl_path: Path) -> None:
    from edgefleet.commands.fleet import FleetApiError

    try:
        reply = api.request("PUT", "/broker/crl", {"crl_pem": pem.decode("ascii")})
    except FleetApiError as exc:
        raise FleetApiError(
            f"{exc}; the revocation list is signed and kept in {crl_path}: send it again "
            "with `edgefleet fleet ca crl`, or install it as the broker's crlfile"
        ) from exc
    click.echo(
        f"the fleet server gave the broker revocation list number {reply['crl_number']} "
        f"({reply['revoked']} revoked)"
    )


@ca.command("revoke")
@click.argument("device_id", required=False)
@click.option("--serial", help="Revoke the one certificate with this serial (hex) instead.")
@ca_dir_option
@passphrase_option
@click.option(
    "--push/--no-push",
    default=True,
    show_default=True,
    help="Send the new revocation list to the fleet server (--server), which checks it and "
    "reloads the broker. --no-push: install crl.pem on the broker yourself.",
)
@click.pass_obj
def ca_revoke(
    api: FleetApi,
    device_id: str | None,
    serial: str | None,
    ca_dir: Path | None,
    ca_passphrase_env: str | None,
    push: bool,
) -> None:
    """Revoke DEVICE_ID's certificates: the broker refuses them at their next connection.

    \b
    A device connected now stays connected until it reconnects (Mosquitto
    checks the list at each TLS handshake): restart the broker to cut it off
    at once (docs/operations.md).
    """
    if (device_id is None) == (serial is None):
        raise click.UsageError("give DEVICE_ID or --serial, one of them")
    fleet_ca = open_ca(ca_dir, ca_passphrase_env)
    revoked = fleet_ca.revoke(device_id, serial=serial)
    for record in revoked:
        click.echo(
            f"revoked the {record.kind} certificate of {record.name} (serial {record.serial})"
        )
    click.echo(f"wrote {fleet_ca.crl_path}")
    if push:
        _push_crl(api, fleet_ca.crl_path.read_bytes(), fleet_ca.crl_path)


@ca.command("crl")
@ca_dir_option
@passphrase_option
@click.option("--days", type=click.IntRange(1), default=365, show_default=True, help="Validity.")
@click.option("--push/--no-push", default=True, show_default=True, help="As for `revoke`.")
@click.pass_obj
def ca_crl(
    api: FleetApi, ca_dir: Path | None, ca_passphrase_env: str | None, days: int, push: bool
) -> None:
    """Sign the revocation list again, before it expires (a broker refuses every device after)."""
    fleet_ca = open_ca(ca_dir, ca_passphrase_env)
    fleet_ca.sign_crl(days)
    click.echo(f"wrote {fleet_ca.crl_path}, valid until {fleet_ca.crl_next_update()}")
    if push:
        _push_crl(api, fleet_ca.crl_path.read_bytes(), fleet_ca.crl_path)


@ca.command("list")
@ca_dir_option
def ca_list(ca_dir: Path | None) -> None:
    """Every certificate the CA issued, and when its revocation list expires."""
    from fleet_server.fleet_ca import crl_expiry, issued_in

    if ca_dir is None:
        raise click.UsageError("name the fleet CA's folder: --ca-dir DIR (or EDGEFLEET_CA_DIR)")
    records = issued_in(ca_dir)
    table = Table("serial", "kind", "name", "valid until", "revoked")
    for record in records:
        table.add_row(
            record.serial, record.kind, record.name, record.not_after, record.revoked_at or "-"
        )
    console = make_console()
    console.print(table)
    console.print(f"revocation list valid until {crl_expiry(ca_dir)}")
