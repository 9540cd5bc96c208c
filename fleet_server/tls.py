"""The fleet server's TLS settings: towards an ``mqtts://`` broker, for devices, for HTTPS.

Only file paths and checks live here; the certificates themselves come from
the fleet CA (:mod:`fleet_server.fleet_ca`, on the operator's machine) or
from any other CA the plant uses.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from fleet_server.errors import FleetError

__all__ = ["BrokerTls", "ServeTls", "check_https_files", "set_client_tls"]


@dataclass(frozen=True)
class BrokerTls:
    """TLS towards the broker: the CA that signed its certificate, and a client certificate
    and key for a broker that asks for one."""

    ca_file: Path | None = None
    """None: the system's trusted CAs."""
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class ServeTls:
    """Everything TLS that ``edgefleet serve`` is told."""

    broker: BrokerTls = field(default_factory=BrokerTls)
    """Used when the broker URL is ``mqtts://``."""
    device_ca_file: Path | None = None
    """The CA certificate provisioned devices trust for an ``mqtts://`` device broker
    (default: ``broker.ca_file``); ``fleet provision`` writes it beside the device config."""
    fleet_ca_file: Path | None = None
    """The fleet CA's certificate (never its key): revocation lists pushed by ``fleet ca
    revoke`` must be signed by it before the broker gets them."""
    https_cert: Path | None = None
    """Serve the HTTP API over HTTPS with this certificate (chain) ..."""
    https_key: Path | None = None
    """... and this private key."""

    def device_ca_pem(self) -> str | None:
        """The CA certificate(s) devices are given, PEM text; None to use the system's."""
        path = self.device_ca_file or self.broker.ca_file
        if path is None:
            return None
        try:
            return path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise FleetError(f"cannot read the devices' CA certificate {path}: {exc}") from exc

    def device_settings(self, tls: bool) -> dict[str, Any]:
        """What ``POST /devices`` tells a device about TLS towards its broker."""
        return {"tls": tls, "ca_pem": self.device_ca_pem() if tls else None}

    def uvicorn_ssl(self) -> dict[str, Any]:
        """uvicorn's TLS arguments (none: plain HTTP), after checking that the pair loads."""
        if self.https_cert is None or self.https_key is None:
            return {}
        check_https_files(self.https_cert, self.https_key)
        return {"ssl_certfile": str(self.https_cert), "ssl_keyfile": str(self.https_key)}

    def fleet_ca_pem(self) -> bytes | None:
        """The fleet CA's certificate, PEM; None when not given."""
        if self.fleet_ca_file is None:
            return None
        try:
            return self.fleet_ca_file.read_bytes()
        except OSError as exc:
            raise FleetError(
                f"cannot read the fleet CA certificate {self.fleet_ca_file}: {exc}"
            ) from exc


def set_client_tls(client: mqtt.Client, tls: BrokerTls) -> None:
    """Make ``client`` speak TLS, verifying the broker's certificate and name."""
    try:
        client.tls_set(
            ca_certs=None if tls.ca_file is None else str(tls.ca_file),
            certfile=None if tls.cert_file is None else str(tls.cert_file),
            keyfile=None if tls.key_file is None else str(tls.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise FleetError(f"cannot load the broker TLS files: {exc}") from exc


def check_https_files(cert: Path, key: Path) -> None:
    """:class:`FleetError` unless ``cert`` and ``key`` load as a matching pair (before uvicorn does)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:
        raise FleetError(f"cannot serve HTTPS with {cert} and {key}: {exc}") from exc
