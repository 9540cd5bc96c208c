"""``edgefleet fleet``: the operator's commands, spoken to a running fleet server's HTTP API.

Only the standard library talks HTTP here (``urllib``), so the command starts
fast and needs none of the server packages. Tables are for people; every
command takes ``--json`` to print the API's JSON for scripts. An error the
API reports is printed as ``error: ...`` with exit status 1.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from edge_runtime.atomic import atomic_write_bytes, atomic_write_text
from edge_runtime.config import parse_config
from edgefleet.commands._console import make_console
from edgefleet.commands.fleet_access import audit, tokens
from edgefleet.commands.fleet_ca import ca, ca_dir_option, open_ca, passphrase_option
from edgefleet.commands.fleet_drift import drift
from edgefleet.commands.fleet_field import field_data
from edgefleet.commands.fleet_shadow import rollout_shadow, shadow_options, shadow_wave
from edgefleet.commands.fleet_windows import waiting_line, windows
from fleet_server.errors import FleetError
from fleet_server.statuses import DeviceStatus

__all__ = ["fleet"]

_F = TypeVar("_F", bound=Callable[..., Any])
_TIMEOUT_S = 30.0
_STATUS_ORDER = tuple(status.value for status in DeviceStatus)
DEVICE_CA_FILE = "ca.crt"
"""The CA certificate a device trusts for the broker, beside its config."""
CLIENT_CERT_FILE, CLIENT_KEY_FILE = "client.crt", "client.key"


class FleetApiError(FleetError):
    """The fleet server cannot be reached, or it refused the request."""


@dataclass(frozen=True)
class FleetApi:
    """A tiny client of the fleet server's HTTP API."""

    server: str
    token_env: str
    """The environment variable holding the bearer token, read at each request (so that
    ``--help`` works without it)."""
    ca_file: Path | None = None
    """The CA certificate that signed an https:// server's certificate (None: the system's)."""

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON reply; :class:`FleetApiError` with the server's message otherwise."""
        return json.loads(self.request_bytes(method, path, body) or b"null")

    def request_bytes(self, method: str, path: str, body: Any = None) -> bytes:
        """The raw reply body; :class:`FleetApiError` with the server's message otherwise."""
        token = os.environ.get(self.token_env, "")
        if not token:
            raise click.UsageError(
                f"environment variable {self.token_env} (the API token) is empty or unset"
            )
        url = self.server.rstrip("/") + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=_TIMEOUT_S, context=self._tls_context(url)
            ) as reply:
                return bytes(reply.read())
        except urllib.error.HTTPError as exc:
            raise FleetApiError(f"{exc.code} {_error_message(exc.read())}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FleetApiError(
                f"cannot reach the fleet server at {self.server}: {reason}"
            ) from exc

    def _tls_context(self, url: str) -> ssl.SSLContext | None:
        """For https://: the system's CAs, or only ``ca_file``; certificate and host name checked."""
        if not url.startswith("https://"):
            if self.ca_file is not None:
                raise click.UsageError("--ca-file needs an https:// --server")
            return None
        try:
            return ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file)
            )
        except (OSError, ValueError) as exc:
            raise FleetApiError(f"cannot load the CA certificate {self.ca_file}: {exc}") from exc


def _error_message(raw: bytes) -> str:
    """The server's error: ``{"error": ...}``, or FastAPI's validation details, field by field."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500] or "no message"
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "; ".join(parts)
    return str(detail if detail is not None else payload)


def _json_option(function: _F) -> _F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _short(sha: str | None) -> str:
    return "-" if not sha else sha[:12]


def _ago(at: float | None) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, time.time() - at)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _csv(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.group()
@click.option(
    "--server",
    default="http://127.0.0.1:8080",
    show_default=True,
    envvar="EDGEFLEET_SERVER",
    help="The fleet server's HTTP API (env EDGEFLEET_SERVER).",
)
@click.option(
    "--token-env",
    default="EDGEFLEET_TOKEN",
    show_default=True,
    help="Environment variable holding the API's bearer token.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="EDGEFLEET_CA_FILE",
    help="CA certificate that signed an https:// server's certificate (env EDGEFLEET_CA_FILE). "
    "Default: the system's CAs.",
)
@click.pass_context
def fleet(ctx: click.Context, server: str, token_env: str, ca_file: Path | None) -> None:
    """Devices, bundles, staged rollouts and provisioning, on a running `edgefleet serve`.

    \b
    Examples:
      edgefleet fleet devices
      edgefleet fleet rollout create SHA --tags line1 --canary 1 --waves 50,100 --previous OLD
      edgefleet fleet rollout status 3 --watch
      edgefleet fleet tokens create alice --role operator
      edgefleet fleet audit --since 1d
    """
    ctx.obj = FleetApi(server, token_env, ca_file)


# --- devices and bundles -------------------------------------------------------------


@fleet.command("devices")
@click.option("--tag", "tags", multiple=True, help="Only devices carrying this tag (repeatable).")
@_json_option
@click.pass_obj
def devices(api: FleetApi, tags: tuple[str, ...], as_json: bool) -> None:
    """List devices: tags, availability, phase, active and pinned bundle, runtime version."""
    query = "".join(f"&tag={t}" for t in _csv(tags)).replace("&", "?", 1)
    rows = api.request("GET", f"/devices{query}")
    if as_json:
        _print_json(rows)
        return
    table = Table(
        "device", "tags", "availability", "phase", "active", "pinned", "runtime", "last seen"
    )
    for d in rows:
        active = d.get("active_version") or _short(d.get("active_bundle"))
        table.add_row(
            d["id"],
            ",".join(d["tags"]) or "-",
            d["availability"],
            d.get("phase") or "-",
            active,
            _short(d.get("pinned_bundle")),
            d.get("runtime_version") or "-",
            _ago(d.get("last_seen")),
        )
    console = make_console()
    console.print(table)
    console.print(f"{len(rows)} device(s)")


@fleet.command("bundles")
@_json_option
@click.pass_obj
def bundles(api: FleetApi, as_json: bool) -> None:
    """List imported bundles with their baseline figures."""
    rows = api.request("GET", "/bundles")
    if as_json:
        _print_json(rows)
        return
    table = Table("sha256", "name", "version", "format", "precision", "size", "accuracy")
    for b in rows:
        accuracy = b.get("baseline_accuracy")
        table.add_row(
            _short(b["sha256"]),
            b["name"],
            b["version"],
            b["format"],
            b["precision"],
            f"{b['size']:,}",
            "-" if accuracy is None else f"{accuracy:.3f}",
        )
    make_console().print(table)


@fleet.command("import")
@click.argument("path")
@_json_option
@click.pass_obj
def import_bundle(api: FleetApi, path: str, as_json: bool) -> None:
    """Import a released bundle file; PATH is on the fleet server's machine."""
    bundle = api.request("POST", "/bundles/import", {"path": path})
    if as_json:
        _print_json(bundle)
        return
    make_console().print(f"imported {bundle['name']} {bundle['version']} as {bundle['sha256']}")


@fleet.command("provision")
@click.argument("device_id")
@click.option("--tags", multiple=True, help="Tags (groups), comma-separated or repeated.")
@click.option("--profile", help="Hardware profile name (e.g. raspberry-pi-4).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write device.yaml (with the device's broker credentials, mode 0600) and root.json "
    "here, ready to copy to the device.",
)
@click.option(
    "--device-dir",
    default="/etc/edgefleet",
    show_default=True,
    help="Where those files will live on the device (the config points at root.json there).",
)
@click.option(
    "--source",
    "source_uri",
    default="0",
    show_default=True,
    help="The device's camera: index, file, rtsp:// URL or GStreamer pipeline.",
)
@click.option(
    "--client-cert",
    is_flag=True,
    help="Issue the device a client certificate from the fleet CA (--ca-dir; its common name "
    "is the device id) and write it, with its key (0600), beside the config: for a broker "
    "that logs devices in by certificate. Needs --out.",
)
@ca_dir_option
@passphrase_option
@_json_option
@click.pass_obj
def provision(
    api: FleetApi,
    device_id: str,
    tags: tuple[str, ...],
    profile: str | None,
    out: Path | None,
    device_dir: str,
    source_uri: str,
    client_cert: bool,
    ca_dir: Path | None,
    ca_passphrase_env: str | None,
    as_json: bool,
) -> None:
    """Register DEVICE_ID ahead of its first contact and give it what it needs to connect.

    \b
    With --out, writes a ready device.yaml and the trusted root.json; else
    prints the config. When the server manages broker credentials
    (`serve --broker-auth-dir`), the device's broker password is in that
    config: it is shown this once (the server keeps only its hash;
    `fleet credentials rotate` issues a new one). With an mqtts:// device
    broker the config speaks TLS, trusting the CA certificate the server
    names (written as ca.crt); --client-cert adds client.crt and client.key.
    """
    fleet_ca = None
    if client_cert:
        if out is None:
            raise click.UsageError("--client-cert needs --out (the device's key goes to a file)")
        fleet_ca = open_ca(ca_dir, ca_passphrase_env)  # before anything is registered
    reply = api.request(
        "POST", "/devices", {"id": device_id, "tags": _csv(tags), "profile": profile}
    )
    device, mqtt = reply["device"], reply.get("mqtt") or {}
    if out is None:
        if as_json:
            _print_json(reply)
            return
        click.echo(f"# provisioned {device['id']} with tags {list(device['tags'])}", err=True)
        if mqtt.get("ca_pem"):
            click.echo(
                f"# the device needs the broker's CA certificate at {device_dir}/ca.crt "
                "(--out writes it)",
                err=True,
            )
        click.echo(
            yaml.safe_dump(device_config(device, mqtt, device_dir, source_uri), sort_keys=False)
        )
        return
    root = api.request_bytes("GET", "/trust/root")
    files: dict[str, tuple[bytes, int]] = {}
    if mqtt.get("ca_pem"):
        files[DEVICE_CA_FILE] = (str(mqtt["ca_pem"]).encode("ascii"), 0o644)
    if fleet_ca is not None:
        if not mqtt.get("tls"):
            click.echo(
                "warning: the server's device broker is not mqtts://; the config speaks TLS "
                "anyway (a client certificate needs it): check its port",
                err=True,
            )
        pair = fleet_ca.issue_client(device["id"])
        files[CLIENT_CERT_FILE] = (pair.cert_pem, 0o644)
        files[CLIENT_KEY_FILE] = (pair.key_pem, 0o600)
    config = device_config(device, mqtt, device_dir, source_uri, client_cert=fleet_ca is not None)
    written = write_device_files(out, config, root, files)
    if as_json:
        _print_json(
            {
                **reply,
                "mqtt": {k: v for k, v in mqtt.items() if k != "password"},
                "files": [str(p) for p in written],
            }
        )
        return
    click.echo(f"provisioned {device['id']} with tags {list(device['tags'])}")
    for path in written:
        click.echo(f"  wrote {path}")
    click.echo(
        f"copy them to {device_dir}/ on the device, then: edgefleet device run --config "
        f"{device_dir}/device.yaml"
    )


fleet.add_command(ca)


@fleet.group("credentials")
def credentials() -> None:
    """A device's broker credentials (servers run with `serve --broker-auth-dir`)."""


@credentials.command("rotate")
@click.argument("device_id")
@click.option(
    "--out",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Update the password in this folder's device.yaml (written by `fleet provision --out`).",
)
@click.pass_obj
def rotate(api: FleetApi, device_id: str, out: Path | None) -> None:
    """Issue DEVICE_ID a new broker password (the old one stops at the broker's reload)."""
    reply = api.request("POST", f"/devices/{device_id}/credentials")
    password = reply["mqtt"]["password"]
    if out is None:
        click.echo(password)
        return
    config_path = out / "device.yaml"
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        config["mqtt"]["password"] = password
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise FleetApiError(
            f"cannot update {config_path}: {exc}; the new password is {password}"
        ) from exc
    atomic_write_text(config_path, yaml.safe_dump(config, sort_keys=False), mode=0o600)
    click.echo(f"new broker password written to {config_path}")


@credentials.command("revoke")
@click.argument("device_id")
@click.pass_obj
def revoke(api: FleetApi, device_id: str) -> None:
    """Remove DEVICE_ID's broker credentials: it cannot connect once the broker reloads."""
    api.request("DELETE", f"/devices/{device_id}/credentials")
    click.echo(f"revoked the broker credentials of {device_id}")


def device_config(
    device: dict[str, Any],
    mqtt: dict[str, Any],
    device_dir: str,
    source_uri: str,
    *,
    client_cert: bool = False,
) -> dict[str, Any]:
    """A complete device config for a provisioned device (valid for ``edgefleet device run``).

    TLS when the server's device broker is ``mqtts://`` (or with ``client_cert``):
    the CA file the server gave and the client certificate are expected in
    ``device_dir`` under the names :func:`write_device_files` gives them.
    """
    broker: dict[str, Any] = {
        "host": mqtt.get("host", "127.0.0.1"),
        "port": mqtt.get("port", 1883),
        "topic_prefix": mqtt.get("topic_prefix", "edgefleet"),
    }
    if mqtt.get("username"):
        broker |= {"username": mqtt["username"], "password": mqtt["password"]}
    folder = device_dir.rstrip("/")
    if mqtt.get("tls") or client_cert:
        tls: dict[str, str] = {}
        if mqtt.get("ca_pem"):
            tls["ca_file"] = f"{folder}/{DEVICE_CA_FILE}"
        if client_cert:
            tls |= {
                "cert_file": f"{folder}/{CLIENT_CERT_FILE}",
                "key_file": f"{folder}/{CLIENT_KEY_FILE}",
            }
        broker["tls"] = tls
    uri: str | int = int(source_uri) if source_uri.isdigit() else source_uri
    return {
        "device_id": device["id"],
        "source": {"type": "video", "uri": uri},
        "store": "/var/lib/edgefleet",
        "mqtt": broker,
        "update": {
            "trusted_root": f"{folder}/root.json",
            "groups": list(device["tags"]),
        },
    }


def write_device_files(
    out: Path,
    config: dict[str, Any],
    root: bytes,
    files: dict[str, tuple[bytes, int]] | None = None,
) -> list[Path]:
    """Write device.yaml (0600: it holds the broker password), root.json and ``files``
    (name: bytes and mode; a private key 0600), each atomically, the config last."""
    text = yaml.safe_dump(config, sort_keys=False)
    parse_config(text, "the generated device.yaml")  # never hand out a config the device refuses
    out.mkdir(parents=True, exist_ok=True)
    config_path, root_path = out / "device.yaml", out / "root.json"
    written = [config_path, root_path]
    for name, (data, mode) in (files or {}).items():
        atomic_write_bytes(out / name, data, mode=mode)
        written.append(out / name)
    atomic_write_bytes(root_path, root)
    atomic_write_text(config_path, text, mode=0o600)
    return written


# --- rollouts ------------------------------------------------------------------------


@fleet.group("rollout")
def rollout() -> None:
    """Create, watch and steer staged rollouts."""


@fleet.command("rollouts")
@_json_option
@click.pass_obj
def rollouts(api: FleetApi, as_json: bool) -> None:
    """List rollouts, oldest first."""
    rows = api.request("GET", "/rollouts")
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "status", "bundle", "previous", "target", "reason")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["status"],
            _short(r["bundle_sha256"]),
            _short(r.get("previous_sha256")),
            json.dumps(r["target"]),
            r.get("reason") or "",
        )
    make_console().print(table)


@rollout.command("create")
@click.argument("bundle_sha")
@click.option("--tags", multiple=True, help="Target devices carrying every tag (comma-separated).")
@click.option("--devices", "device_ids", multiple=True, help="Target these devices (a,b,...).")
@click.option(
    "--canary",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Devices in the first (canary) wave; 0 for none.",
)
@click.option(
    "--waves",
    default="100",
    show_default=True,
    help="Waves after the canary, each a percentage of the whole target (capped at what remains); end with 100.",
)
@click.option("--previous", "previous_sha", help="Bundle a rollback re-assigns.")
@click.option("--device-timeout", type=float, default=3600.0, show_default=True, help="Seconds.")
@click.option("--health-window", type=float, default=600.0, show_default=True, help="Seconds.")
@click.option("--approve-waves", is_flag=True, help="Wait for `approve` after every wave.")
@click.option(
    "--four-eyes",
    is_flag=True,
    help="Every approval needs two different people's tokens (implies --approve-waves).",
)
@click.option(
    "--ignore-windows",
    is_flag=True,
    help="Send every wave at once, whatever the devices' maintenance windows (an emergency: "
    "recorded in the rollout's timeline and the audit log).",
)
@shadow_options
@_json_option
@click.pass_obj
def rollout_create(
    api: FleetApi,
    /,
    bundle_sha: str,
    tags: tuple[str, ...],
    device_ids: tuple[str, ...],
    canary: int,
    waves: str,
    previous_sha: str | None,
    device_timeout: float,
    health_window: float,
    approve_waves: bool,
    four_eyes: bool,
    ignore_windows: bool,
    as_json: bool,
    **shadow: Any,
) -> None:
    """Start a staged rollout of BUNDLE_SHA (all devices unless --tags or --devices); with
    --shadow, begin with a shadow wave whose figures decide whether it goes on."""
    tag_list, id_list = _csv(tags), _csv(device_ids)
    if tag_list and id_list:
        raise click.UsageError("give --tags or --devices, not both")
    target: dict[str, Any] = {"kind": "all", "values": []}
    if tag_list:
        target = {"kind": "tags", "values": tag_list}
    elif id_list:
        target = {"kind": "devices", "values": id_list}
    common = {
        "device_timeout_s": device_timeout,
        "health_window_s": health_window,
        "approval_before_next": approve_waves or four_eyes,
        "approvals_required": 2 if four_eyes else 1,
    }
    try:
        percents = [float(p) for p in _csv((waves,))]
    except ValueError as exc:
        raise click.BadParameter(
            f"not a list of percentages: {waves}", param_hint="--waves"
        ) from exc
    spec = [{"count": canary, **common}] if canary else []
    shadow_spec = shadow_wave(**shadow, common=common)
    spec = [shadow_spec, *spec] if shadow_spec else spec
    spec += [{"percent": p, **common} for p in percents]
    body: dict[str, Any] = {"bundle_sha256": bundle_sha, "target": target, "waves": spec}
    if previous_sha:
        body["previous_sha256"] = previous_sha
    if ignore_windows:
        body["ignore_windows"] = True
    created = api.request("POST", "/rollouts", body)
    if as_json:
        _print_json(created)
        return
    console = make_console()
    console.print(f"rollout {created['id']} created: {created['status']}")
    console.print(_status_view(created))


def _approvals(planner: dict[str, Any]) -> str:
    """Who approved the next wave so far, and how many more must (four-eyes: two people)."""
    needed, done = planner.get("approvals_required", 1), planner.get("approved_by") or []
    if not done:
        return f"waits for approval ({needed} {'person' if needed == 1 else 'different people'})"
    return f"approved by {', '.join(done)}; waits for {needed - len(done)} more person's approval"


def _status_view(view: dict[str, Any]) -> Group:
    planner = view.get("planner") or {}
    head = (
        f"rollout {view['id']}  [bold]{view['status']}[/]  bundle {_short(view['bundle_sha256'])}"
        f"  previous {_short(view.get('previous_sha256'))}  target {json.dumps(view['target'])}"
    )
    if view.get("reason"):
        head += f"\nreason: {view['reason']}"
    if planner.get("skipped"):
        skipped = planner["skipped"]
        head += "\nskipped: " + ", ".join(f"{d} ({skipped[d]})" for d in sorted(skipped))
    if view["status"] == "awaiting-approval":
        head += f"\n{_approvals(planner)}"
    if planner.get("waiting_for_window"):
        head += f"\n{waiting_line(planner)}"
    if planner.get("ignore_windows"):
        head += "\nmaintenance windows ignored (--ignore-windows)"
    table = Table("wave", "status", "devices", *_STATUS_ORDER)
    # the rollout's own field names them once it ended (older servers: the planner's, if followed)
    shadow = view.get("shadow_devices") or planner.get("shadow_devices") or []
    for wave in view["waves"]:
        counts = wave["counts"]
        label = " (canary)" if wave["index"] == (1 if shadow else 0) else ""
        if shadow and wave["index"] == 0:
            label = " (shadow)"  # its devices are counted in the waves that activate the bundle
        table.add_row(
            str(wave["index"] + 1) + label,
            wave["status"],
            str(len(shadow) if label == " (shadow)" else wave["devices"]),
            *(str(counts.get(s, 0)) for s in _STATUS_ORDER),
        )
    totals = view["counts"]
    table.add_row(
        "all",
        "",
        str(sum(totals.values())),
        *(str(totals.get(s, 0)) for s in _STATUS_ORDER),
        style="bold",
    )
    return Group(head, table)


@rollout.command("status")
@click.argument("rollout_id", type=int)
@click.option("--watch", is_flag=True, help="Refresh every second until the rollout finishes.")
@_json_option
@click.pass_obj
def rollout_status(api: FleetApi, rollout_id: int, watch: bool, as_json: bool) -> None:
    """A rollout's status and its devices per wave and status."""
    view = api.request("GET", f"/rollouts/{rollout_id}")
    if as_json:  # with --watch: quietly wait for the end, then print the final status
        while watch and not view.get("finished"):
            time.sleep(1.0)
            view = api.request("GET", f"/rollouts/{rollout_id}")
        _print_json(view)
        return
    console = make_console()
    if not watch:
        console.print(_status_view(view))
        return
    with Live(_status_view(view), console=console, refresh_per_second=4) as live:
        while not view.get("finished"):
            time.sleep(1.0)
            view = api.request("GET", f"/rollouts/{rollout_id}")
            live.update(_status_view(view))


def _command(verb: str, summary: str) -> click.Command:
    @click.command(name=verb, help=f"{summary}\n\nROLLOUT_ID is the id `rollout create` printed.")
    @click.argument("rollout_id", type=int)
    @click.option("--reason", default="operator abort", show_default=True, help="Why (abort only).")
    @_json_option
    @click.pass_obj
    def command(api: FleetApi, rollout_id: int, reason: str, as_json: bool) -> None:
        view = api.request("POST", f"/rollouts/{rollout_id}/{verb}", {"reason": reason})
        if as_json:
            _print_json(view)
            return
        line = f"rollout {rollout_id}: {view['status']}"
        if view["status"] == "awaiting-approval":
            line += f" ({_approvals(view.get('planner') or {})})"
        make_console().print(line)

    return command


rollout.add_command(_command("pause", "Pause a running rollout: no new wave starts."))
rollout.add_command(_command("resume", "Resume a paused rollout."))
rollout.add_command(
    _command(
        "approve",
        "Let a rollout awaiting approval start its next wave. A four-eyes rollout needs the "
        "approval of two different tokens: the second one releases the wave.",
    )
)
rollout.add_command(_command("abort", "Stop a rollout and roll its devices back."))


@rollout.command("shadow")
@click.argument("rollout_id", type=int)
@_json_option
@click.pass_obj
def rollout_shadow_command(api: FleetApi, rollout_id: int, as_json: bool) -> None:
    """What a rollout's shadow wave saw: agreement with the active model, confidence, class
    shift and time a frame, per device and in all, and the gate's verdict."""
    rollout_shadow(api, rollout_id, as_json)


@rollout.command("timeline")
@click.argument("rollout_id", type=int)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_json_option
@click.pass_obj
def rollout_timeline(api: FleetApi, rollout_id: int, limit: int, as_json: bool) -> None:
    """What happened to a rollout, oldest first."""
    rows = api.request("GET", f"/rollouts/{rollout_id}/timeline?limit={limit}")
    if as_json:
        _print_json(rows)
        return
    table = Table("at", "kind", "device", "message")
    for t in rows:
        at = time.strftime("%H:%M:%S", time.localtime(t["at"]))
        # a device's words are shown as they are: '[belt-1: ...]' is not rich markup
        table.add_row(at, t["kind"], t.get("device_id") or "", escape(t["message"]))
    make_console().print(table)


fleet.add_command(tokens)
fleet.add_command(audit)
fleet.add_command(windows)
fleet.add_command(drift)
fleet.add_command(field_data)
