"""The device's TUF client: retained MQTT metadata in, verified assignments and bundle targets out.

The fleet server publishes TUF metadata retained on ``PREFIX/tuf/<suffix>``
(``docs/protocol.md``). The MQTT layer hands every such message to
:meth:`TrustClient.offer`; :meth:`TrustClient.refresh` runs python-tuf's
``ngclient.Updater`` over those payloads through :class:`MetadataFetcher`, so
every check of the TUF client workflow (signature thresholds, root rotation,
rollback, freeze and mix-and-match protection) is ngclient's own. The trusted
metadata lives in the device's metadata folder, which ngclient keeps.

Assignments live in hashed bins (``bins/assignments-bin-<hex>``, TUF TAP 15):
ngclient's delegation walk for ``assignments/devices/<id>`` loads the
``assignments`` role and then only the one bin that path hashes into. The
client keeps every bin payload it is offered as bytes, but verifies (and so
parses) only the bins ngclient asks for: those holding the paths
:meth:`TrustClient.assignment` was asked about. :meth:`TrustClient.offer`
tells the caller to refresh only for new payloads that matter to it, so a
wave that re-signs other devices' bins costs this device nothing but the new
snapshot and timestamp.

A device runs an assignment's bundle only if the release-signed ``targets``
role lists that bundle with the same hash: :meth:`TrustClient.assignment`
checks that, and :func:`verify_file` checks the downloaded bytes against the
signed length and sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from securesystemslib.exceptions import FormatError
from securesystemslib.formats import encode_canonical
from tuf.api import exceptions as tuf_errors

# tuf.api.metadata re-exports its classes without __all__,
# which mypy (no implicit re-export) reads as private; the types still resolve.
from tuf.api.metadata import Metadata, TargetFile, Targets  # type: ignore[attr-defined, unused-ignore]
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from edge_runtime.errors import (
    IncompleteMetadataError,
    MetadataExpiredError,
    TargetMismatchError,
    TrustError,
    UnknownTargetError,
)
from edge_runtime.trust._diagnosis import explain, read_trusted
from edge_runtime.trust._names import (
    BIN_NAME_PREFIX,
    ROLE_SUFFIXES,
    bin_of_suffix,
    suffix_for_role,
    suffix_for_url_name,
)

__all__ = [
    "BIN_NAME_PREFIX",
    "BUNDLE_PREFIX",
    "Assignment",
    "BundleTarget",
    "MetadataFetcher",
    "TrustClient",
    "suffix_for_role",
    "suffix_for_url_name",
    "verify_file",
]

log = logging.getLogger(__name__)

BUNDLE_PREFIX = "bundles/"
"""Target paths of release-signed bundles: ``bundles/<sha256>.efb``."""

_BUNDLE_PATH_RE = re.compile(r"^bundles/([0-9a-f]{64})\.efb$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ROOT_NAME_RE = re.compile(r"^([1-9][0-9]{0,9})\.root\.json$")
_ROOT_SUFFIX_RE = re.compile(r"^root/[1-9][0-9]{0,9}$")
_BASE_URL = "mqtt-retained://edgefleet/tuf/"
_READ_CHUNK = 1024 * 1024


def _failed_root(served: Sequence[str]) -> str | None:
    """The topic suffix of the root ngclient was verifying when it failed, if that was a root.

    ngclient fetches ``N.root.json`` for each version after the trusted one
    before anything else; when the last file it was served is such a root,
    that root is what it refused.
    """
    if not served:
        return None
    match = _ROOT_NAME_RE.match(served[-1])
    return None if match is None else f"root/{match.group(1)}"


class MetadataFetcher(FetcherInterface):
    """ngclient's network: serves metadata from a fixed map of retained payloads (topic suffix -> bytes).

    A file no payload answers for is reported as HTTP 404, which ngclient
    treats as missing (the end of the root chain, or metadata not arrived yet).
    """

    def __init__(self, payloads: Mapping[str, bytes]) -> None:
        self._payloads = dict(payloads)
        self.served: list[str] = []
        """ngclient file names answered so far, in order."""

    @property
    def payloads(self) -> Mapping[str, bytes]:
        """What this fetcher serves, topic suffix -> bytes (read-only)."""
        return MappingProxyType(self._payloads)

    def add_missing(self, payloads: Mapping[str, bytes]) -> None:
        """Also serve the payloads of suffixes it has none for; what it serves already stays."""
        for suffix, payload in payloads.items():
            self._payloads.setdefault(suffix, payload)

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rsplit("/", 1)[-1]
        suffix = suffix_for_url_name(name)
        payload = self._payloads.get(suffix) if suffix is not None else None
        if payload is None:
            where = f"tuf/{suffix}" if suffix is not None else "no edgefleet topic carries it"
            raise tuf_errors.DownloadHTTPError(f"no retained message for {name} yet ({where})", 404)
        self.served.append(name)
        return iter((payload,))


@dataclass(frozen=True)
class BundleTarget:
    """A bundle the release key signed: its sha256, length and custom fields (name, version, format, precision)."""

    sha256: str
    length: int
    custom: Mapping[str, Any] = field(hash=False)

    @property
    def path(self) -> str:
        """The target path, ``bundles/<sha256>.efb``."""
        return f"{BUNDLE_PREFIX}{self.sha256}.efb"


@dataclass(frozen=True)
class Assignment:
    """Which release-signed bundle a device should run, and the assignment that says so."""

    bundle_path: str
    bundle_sha256: str
    length: int
    assignment: int
    source: str
    """``devices/<id>`` or ``groups/<name>``: the assignment target that matched."""


@dataclass
class _View:
    """The updater of the last successful refresh, with the payloads its fetcher serves.

    Bins not looked up during the refresh are loaded (and verified) from the
    same payloads on first use, so a view never mixes two repository states.
    """

    updater: Updater
    fetcher: MetadataFetcher


class TrustClient:
    """Verified TUF metadata for one device, fed by retained MQTT messages.

    Thread-safe: the MQTT thread may :meth:`offer` while another thread
    refreshes or queries. Queries answer from the last successful
    :meth:`refresh`; a refresh that fails keeps that view, except when
    metadata has expired (then queries raise until a refresh succeeds).

    The client remembers the assignment paths :meth:`assignment` was asked
    about (the device's own and its groups'): :meth:`refresh` verifies the
    bins holding them, and :meth:`offer` reports a new bin only when it is
    one of those. A bin that arrives before the client knows that is served
    to the next lookup or refresh all the same.
    """

    def __init__(
        self, metadata_dir: str | os.PathLike[str], config: UpdaterConfig | None = None
    ) -> None:
        self.metadata_dir = Path(metadata_dir)
        self._anchor()
        self._config = config or UpdaterConfig()
        self._payloads: dict[str, bytes] = {}
        self._payload_lock = threading.Lock()
        self._lock = threading.RLock()
        self._view: _View | None = None
        self._last_error: TrustError | None = None
        self._interest: dict[str, None] = {}
        """Assignment target paths looked up so far, in first-asked order."""
        self._relevant: frozenset[str] | None = None
        """Bins holding :attr:`_interest` under the trusted ``assignments`` role; None: not known yet."""
        self._relevant_source: tuple[bytes, int] | None = None
        self._warnings: list[str] = []

    @classmethod
    def provision(
        cls,
        metadata_dir: str | os.PathLike[str],
        root_bytes: bytes,
        config: UpdaterConfig | None = None,
    ) -> TrustClient:
        """Install ``root_bytes`` as the device's trust anchor in ``metadata_dir`` and open it.

        The root must be valid TUF root metadata signed by its own threshold.
        Provisioning again with a root the folder already trusted is a no-op;
        a different root is refused (a device changes roots only through the
        signed root chain).
        """
        folder = Path(metadata_dir)
        anchor = folder / "root.json"
        history = sorted((folder / "root_history").glob("*.root.json"))
        if anchor.exists() or anchor.is_symlink() or history:
            if any(_read_or_none(path) == root_bytes for path in history):
                return cls(folder, config)
            raise TrustError(
                f"{folder} is already provisioned with another root; keys change only through "
                "new signed root versions (remove the folder to provision from scratch)"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            Updater(
                str(folder),
                _BASE_URL,
                fetcher=MetadataFetcher({}),
                config=config,
                bootstrap=root_bytes,
            )
        except tuf_errors.RepositoryError as exc:
            raise TrustError(
                f"cannot provision {folder}: not valid TUF root metadata signed by its own "
                f"threshold of root keys ({exc})"
            ) from exc
        except OSError as exc:
            raise TrustError(f"cannot provision {folder}: {exc}") from exc
        log.info("provisioned trusted root in %s", folder)
        return cls(folder, config)

    @property
    def last_error(self) -> TrustError | None:
        """Why the last :meth:`refresh` did not succeed (None after a success)."""
        return self._last_error

    def offer(self, suffix: str, payload: bytes) -> bool:
        """Keep ``payload`` as the latest retained message of ``PREFIX/tuf/<suffix>``; True if worth a refresh.

        ``suffix`` is ``root/<N>``, ``timestamp``, ``snapshot``, ``targets``,
        ``assignments`` or ``bins/assignments-bin-<hex>``; anything else is
        ignored. An empty payload (MQTT's "retained message cleared") forgets
        the suffix. Nothing is verified or parsed here: :meth:`refresh` does
        that. True only when the payload differs from the one kept and, for a
        bin, when the trusted ``assignments`` role puts one of the paths
        :meth:`assignment` was asked about in that bin; False tells the caller
        a refresh would find nothing new for it. (Before the client knows its
        bins it reports none: a device connecting to a broker holding 64 bins
        would otherwise refresh 64 times. The lookup that needs a bin uses the
        bin kept by then, or makes the bin relevant for when it arrives.)
        """
        bin_name = bin_of_suffix(suffix)
        if bin_name is None and suffix not in ROLE_SUFFIXES and not _ROOT_SUFFIX_RE.match(suffix):
            log.debug("ignoring metadata on unknown topic suffix %r", suffix)
            return False
        if len(payload) > self._config.targets_max_length:
            log.warning(
                "ignoring %d-byte payload on tuf/%s: over the %d-byte cap",
                len(payload),
                suffix,
                self._config.targets_max_length,
            )
            return False
        with self._payload_lock:
            current = self._payloads.get(suffix)
            if payload:
                if current == payload:
                    return False
                self._payloads[suffix] = bytes(payload)
            else:
                if current is None:
                    return False
                del self._payloads[suffix]
        relevant = self._relevant
        return bin_name is None or (relevant is not None and bin_name in relevant)

    def refresh(self) -> bool:
        """Verify what the broker holds with ngclient; True when it is all trusted now.

        Verifies the top-level roles and, for every assignment path
        :meth:`assignment` was asked about, the ``assignments`` role and the
        bins holding those paths (other bins are neither parsed nor checked).
        False (reason in :attr:`last_error`, an :class:`IncompleteMetadataError`)
        when a message is missing or the payloads come from two consecutive
        repository states, as while new metadata is still arriving: nothing new
        is trusted, and the caller refreshes again when the next message
        arrives. Raises a :class:`TrustError` subclass when metadata is refused
        (bad signature, rollback, expiry, mix-and-match).
        """
        with self._lock:
            with self._payload_lock:
                payloads = dict(self._payloads)
            first = self._attempt(payloads)
            if first is None:
                return True
            error, bad_root = first
            if bad_root is not None and not isinstance(error, IncompleteMetadataError):
                # A next root that does not verify (junk retained on its topic, or a forged
                # one) must not stop every later update: trust stays with the roots already
                # verified, as if that version had not been published, and the refusal is
                # reported. Should the rest need the new root, the root's error is the one
                # raised below.
                retry = self._attempt({k: v for k, v in payloads.items() if k != bad_root})
                if retry is None:
                    warning = f"ignored tuf/{bad_root}: {error}"
                    log.warning("TUF metadata: %s", warning)
                    self._warnings.append(warning)
                    return True
            self._last_error = error
            if isinstance(error, IncompleteMetadataError):
                log.info("TUF metadata not complete yet: %s", error)
                return False
            if isinstance(error, MetadataExpiredError):
                self._view = None
            log.warning("TUF metadata refused: %s", error)
            raise error

    def take_warnings(self) -> list[str]:
        """Metadata refused without stopping the refresh (an ignored next root), since last asked."""
        with self._lock:
            warnings, self._warnings = self._warnings, []
            return warnings

    def _attempt(self, payloads: dict[str, bytes]) -> tuple[TrustError, str | None] | None:
        """One ngclient refresh over ``payloads``: None on success, else the error and, when a
        root newer than the trusted one failed, its topic suffix."""
        before = read_trusted(self.metadata_dir)
        fetcher = MetadataFetcher(payloads)
        try:
            updater = Updater(
                str(self.metadata_dir),
                _BASE_URL,
                fetcher=fetcher,
                config=self._config,
                bootstrap=self._anchor(),
            )
            updater.refresh()
            for path in self._interest:
                updater.get_targetinfo(path)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            after = read_trusted(self.metadata_dir)
            error = explain(exc, before, after, payloads, fetcher.served)
            error.__cause__ = exc
            return error, _failed_root(fetcher.served)
        except OSError as exc:
            error = TrustError(f"cannot read or store metadata in {self.metadata_dir}: {exc}")
            self._last_error = error
            raise error from exc
        finally:
            self._update_relevant()  # ngclient may have verified assignments before failing
        self._view = _View(updater, fetcher)
        self._last_error = None
        log.debug("TUF metadata verified: %s", sorted(fetcher.served))
        return None

    def assignment(self, device_id: str, groups: Sequence[str] = ()) -> Assignment | None:
        """The verified assignment for ``device_id``: its own first, then its groups in order.

        Loads and verifies, from the payloads of the last successful refresh,
        only the bins holding these paths, and remembers the paths for later
        refreshes and offers. None when nothing is assigned, or when a bin
        this lookup needs has not arrived yet (:attr:`last_error` says which;
        the bin's arrival makes :meth:`offer` return True). Raises
        :class:`UnknownTargetError` when the assignment names a bundle the
        release-signed ``targets`` role does not list with that hash,
        :class:`TrustError` when it is malformed, its bin is refused (bad
        signature, rollback, expiry, mix-and-match) or no refresh has succeeded.
        """
        candidates = [("devices", device_id), *(("groups", group) for group in groups)]
        for kind, name in candidates:
            if not _NAME_RE.match(name):
                raise ValueError(f"{kind[:-1]} name {name!r} is not a valid assignment name")
        paths = [(f"assignments/{kind}/{name}", f"{kind}/{name}") for kind, name in candidates]
        with self._lock:
            view = self._require_view()
            new = [path for path, _ in paths if path not in self._interest]
            self._interest.update(dict.fromkeys(new))
            try:
                for path, source in paths:
                    info = self._lookup_assignment(view, path)
                    if info is not None:
                        return _resolve(view, info, source)
            except IncompleteMetadataError as exc:
                self._last_error = exc
                log.info("assignment of %s not known yet: %s", device_id, exc)
                return None
            finally:
                if new:
                    self._update_relevant()
        return None

    def bundle_target(self, sha256: str) -> BundleTarget:
        """The release-signed target of bundle ``sha256``; :class:`UnknownTargetError` if none."""
        if not _SHA256_RE.match(sha256):
            raise UnknownTargetError(f"{sha256!r} is not a bundle sha256 (64 lowercase hex digits)")
        with self._lock:
            return _bundle(self._require_view(), sha256)

    @staticmethod
    def verify_file(path: str | os.PathLike[str], target: BundleTarget | Assignment) -> None:
        """See :func:`verify_file`."""
        verify_file(path, target)

    def _anchor(self) -> bytes | None:
        """ngclient's bootstrap: None to use ``root.json``, else the newest root it verified.

        ngclient re-creates the ``root.json`` link after each root update; a
        power cut at that moment leaves only ``root_history/<N>.root.json``.
        """
        if (self.metadata_dir / "root.json").is_file():
            return None
        history = sorted(
            (int(m.group(1)), path)
            for path in (self.metadata_dir / "root_history").glob("*.root.json")
            if (m := _ROOT_NAME_RE.match(path.name))
        )
        anchor = _read_or_none(history[-1][1]) if history else None
        if anchor is None:
            raise TrustError(
                f"{self.metadata_dir} holds no trusted root.json: provision the device first"
            )
        return anchor

    def _require_view(self) -> _View:
        if self._view is None:
            reason = f" (last error: {self._last_error})" if self._last_error else ""
            raise TrustError(f"no verified TUF metadata: no refresh has succeeded{reason}")
        return self._view

    def _lookup_assignment(self, view: _View, path: str) -> TargetFile | None:
        """ngclient's lookup of ``path``, loading its bin if needed; failures explained like a refresh's."""
        with self._payload_lock:
            bins = {k: v for k, v in self._payloads.items() if bin_of_suffix(k) is not None}
        view.fetcher.add_missing(
            bins
        )  # bins that arrived since the refresh; snapshot still pins them
        before = read_trusted(self.metadata_dir)
        served = len(view.fetcher.served)
        try:
            return view.updater.get_targetinfo(path)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            after = read_trusted(self.metadata_dir)
            error = explain(exc, before, after, view.fetcher.payloads, view.fetcher.served[served:])
            if not isinstance(error, IncompleteMetadataError):
                log.warning("TUF metadata refused: %s", error)
            raise error from exc
        except OSError as exc:
            raise TrustError(
                f"cannot read or store metadata in {self.metadata_dir}: {exc}"
            ) from exc

    def _update_relevant(self) -> None:
        """Work out which bins hold the paths of interest, from the trusted ``assignments`` role.

        ngclient persists a role only after verifying it, so the file read
        here is trusted; it only decides which offers are worth a refresh.
        """
        if not self._interest:
            return
        try:
            data = (self.metadata_dir / "assignments.json").read_bytes()
        except OSError:
            return  # not loaded yet: every bin may matter
        source = (data, len(self._interest))  # the interest only grows
        if source == self._relevant_source:
            return
        try:
            signed = Metadata[Targets].from_bytes(data).signed
        except tuf_errors.RepositoryError:
            return
        delegations = signed.delegations if isinstance(signed, Targets) else None
        succinct = delegations.succinct_roles if delegations is not None else None
        if succinct is None:
            relevant: frozenset[str] = frozenset()  # no bins: assignments are in the role itself
        else:
            relevant = frozenset(succinct.get_role_for_target(path) for path in self._interest)
        self._relevant, self._relevant_source = relevant, source


def verify_file(path: str | os.PathLike[str], target: BundleTarget | Assignment) -> None:
    """Check the file at ``path`` against the signed length, then the signed sha256.

    Reads at most the signed length (plus one byte to see that nothing
    follows); raises :class:`TargetMismatchError` for any difference or an
    unreadable file.
    """
    if isinstance(target, Assignment):
        sha256, length = target.bundle_sha256, target.length
    else:
        sha256, length = target.sha256, target.length
    name = f"bundle {sha256[:12]}..."
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != length:
                raise TargetMismatchError(_length_message(name, path, size, length))
            remaining = length
            while remaining:
                chunk = handle.read(min(_READ_CHUNK, remaining))
                if not chunk:
                    raise TargetMismatchError(
                        f"{name}: {path} ended after {length - remaining} bytes, "
                        f"before the signed length of {length}"
                    )
                digest.update(chunk)
                remaining -= len(chunk)
            if handle.read(1):
                raise TargetMismatchError(
                    f"{name}: {path} grew past the signed length of {length} bytes while read"
                )
    except OSError as exc:
        raise TargetMismatchError(f"{name}: cannot read {path}: {exc.strerror or exc}") from exc
    actual = digest.hexdigest()
    if actual != sha256:
        raise TargetMismatchError(
            f"{name}: {path} has sha256 {actual[:12]}..., the signed sha256 is "
            f"{sha256[:12]}... (tampered or corrupt)"
        )


def _length_message(name: str, path: str | os.PathLike[str], size: int, length: int) -> str:
    relation = "longer" if size > length else "shorter"
    return (
        f"{name}: {path} is {size} bytes, {relation} than the signed length of {length} "
        "(not read past the signed length)"
    )


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _lookup(view: _View, path: str) -> TargetFile | None:
    try:
        return view.updater.get_targetinfo(path)
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
        raise TrustError(f"cannot look up target {path}: {exc}") from exc


def _canonical(value: Any) -> bytes:
    encoded = encode_canonical(value)
    if not isinstance(encoded, str):
        raise FormatError("canonical JSON encoding produced nothing")
    return encoded.encode("utf-8")


def _resolve(view: _View, info: TargetFile, source: str) -> Assignment:
    custom = info.custom
    bundle = custom.get("bundle") if isinstance(custom, dict) else None
    number = custom.get("assignment") if isinstance(custom, dict) else None
    match = _BUNDLE_PATH_RE.match(bundle) if isinstance(bundle, str) else None
    if match is None or not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise TrustError(
            f"assignment {source} is malformed: its custom data {custom!r} needs "
            '"bundle": "bundles/<sha256>.efb" and an integer "assignment"'
        )
    try:
        info.verify_length_and_hashes(_canonical(custom))
    except (tuf_errors.LengthOrHashMismatchError, FormatError) as exc:
        raise TrustError(
            f"assignment {source}: its signed length/hashes do not describe its custom data ({exc})"
        ) from exc
    sha256 = match.group(1)
    target = _bundle(view, sha256, f"assignment {source} (assignment {number})")
    return Assignment(
        bundle_path=target.path,
        bundle_sha256=sha256,
        length=target.length,
        assignment=number,
        source=source,
    )


def _bundle(view: _View, sha256: str, context: str | None = None) -> BundleTarget:
    path = f"{BUNDLE_PREFIX}{sha256}.efb"
    info = _lookup(view, path)
    if info is None:
        subject = f"{context} names bundle" if context else "bundle"
        raise UnknownTargetError(
            f"{subject} {sha256[:12]}..., which is not a target of the "
            "release-signed targets role: no release key signed it"
        )
    signed_hash = info.hashes.get("sha256")
    if signed_hash != sha256:
        raise UnknownTargetError(
            f"{context or path}: target {path} is signed with sha256 {str(signed_hash)[:12]}..., "
            "not the hash its path names"
        )
    custom = info.custom
    return BundleTarget(
        sha256=sha256,
        length=info.length,
        custom=MappingProxyType(dict(custom) if isinstance(custom, dict) else {}),
    )
