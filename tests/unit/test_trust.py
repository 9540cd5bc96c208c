"""TUF end to end: a real repository in tmp_path, the real ngclient on the device, no mocks.

A plain dict stands in for what the MQTT broker holds (the latest retained
payload per ``PREFIX/tuf/<suffix>``); attacks are played by offering the
device other payloads, or metadata signed with the wrong keys through the
python-tuf Metadata API.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pytest
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Root, TargetFile, Targets, Timestamp

from edge_runtime.errors import (
    BadSignatureError,
    IncompleteMetadataError,
    InconsistentMetadataError,
    MetadataExpiredError,
    RollbackError,
    TargetMismatchError,
    TrustError,
    UnknownTargetError,
)
from edge_runtime.trust import Assignment, TrustClient, suffix_for_url_name, verify_file
from fleet_server.errors import KeyManagementError, ReleaseError
from fleet_server.trust import (
    ONLINE_ROLES,
    Expiry,
    KeySet,
    Repository,
    generate_key,
    init_keys,
    load_keys,
)


@dataclass
class Fleet:
    """A repository, its keys, and the broker's retained TUF payloads."""

    repo: Repository
    keys: KeySet
    online: KeySet
    broker: dict[str, bytes] = field(default_factory=dict)

    def publish(self) -> dict[str, bytes]:
        """What the fleet server does after a change: new snapshot + timestamp, retained."""
        self.repo.snapshot_and_timestamp(
            self.online.role("snapshot"), self.online.role("timestamp")
        )
        self.broker.update(self.repo.published())
        return dict(self.broker)


@dataclass(frozen=True)
class Bundles:
    """Two released-to-be bundles (1.0.0 and 1.1.0) and one never released (2.0.0)."""

    paths: Mapping[str, Path]
    sha: Mapping[str, str]


@pytest.fixture
def bundles(tmp_path: Path, make_bundle: Callable[..., bytes]) -> Bundles:
    import hashlib

    paths, shas = {}, {}
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        data = make_bundle(version=version)
        path = tmp_path / "bundles" / f"tiny-{version}.efb"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        paths[version], shas[version] = path, hashlib.sha256(data).hexdigest()
    return Bundles(paths, shas)


def make_fleet(
    tmp_path: Path, expiry: Expiry | None = None, counts: Mapping[str, int] | None = None
) -> Fleet:
    keys = init_keys(tmp_path / "keys", counts=counts)
    repo = Repository.create(tmp_path / "repo", keys, expiry)
    # The fleet server loads only the online keys; the release key stays with the releaser.
    online = load_keys(tmp_path / "keys", ONLINE_ROLES)
    fleet = Fleet(repo, keys, online)
    fleet.broker.update(repo.published())
    return fleet


def provision(tmp_path: Path, fleet: Fleet, name: str = "cam-1") -> TrustClient:
    return TrustClient.provision(tmp_path / "devices" / name, fleet.repo.root_bytes(1))


def deliver(client: TrustClient, payloads: Mapping[str, bytes]) -> None:
    """Hand the device every payload, as the broker does (offer says which were worth a refresh)."""
    for suffix, payload in payloads.items():
        client.offer(suffix, payload)


def bin_topic(fleet: Fleet, kind: Literal["devices", "groups"], name: str) -> str:
    """The topic suffix of the bin that holds ``assignments/<kind>/<name>``."""
    return f"bins/{fleet.repo.bin_for(kind, name)}"


def released_and_assigned(
    tmp_path: Path,
    bundles: Bundles,
    expiry: Expiry | None = None,
    counts: Mapping[str, int] | None = None,
) -> Fleet:
    """A fleet with 1.0.0 and 1.1.0 released and cam-1 on 1.0.0."""
    fleet = make_fleet(tmp_path, expiry, counts)
    release = fleet.keys.role("targets")[0]
    fleet.repo.release(bundles.paths["1.0.0"], release)
    fleet.repo.release(bundles.paths["1.1.0"], release)
    fleet.repo.assign("devices", "cam-1", bundles.sha["1.0.0"], fleet.online.role("assignments"))
    fleet.publish()
    return fleet


def sign_with(md: Metadata[Targets], signer: Signer, path: Path) -> None:
    """Bump ``md``, sign it with ``signer`` alone and write it where the repository keeps it."""
    md.signed.version += 1
    md.sign(signer)
    path.write_bytes(md.to_bytes())


# --- happy path ---------------------------------------------------------------------


def test_release_assign_refresh_and_verify(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    fleet.repo.assign("groups", "line-a", bundles.sha["1.1.0"], fleet.online.role("assignments"))
    published = fleet.publish()
    bins = [f"bins/assignments-bin-{i:02x}" for i in range(64)]
    assert list(published) == ["root/1", "assignments", *bins, "targets", "snapshot", "timestamp"]

    client = provision(tmp_path, fleet)
    deliver(client, published)
    assert client.refresh() is True
    assert client.last_error is None

    own = client.assignment("cam-1", ["line-a"])
    assert own == Assignment(
        bundle_path=f"bundles/{bundles.sha['1.0.0']}.efb",
        bundle_sha256=bundles.sha["1.0.0"],
        length=bundles.paths["1.0.0"].stat().st_size,
        assignment=1,
        source="devices/cam-1",
    )
    group = client.assignment("cam-2", ["line-b", "line-a"])
    assert group is not None
    assert (group.source, group.bundle_sha256) == ("groups/line-a", bundles.sha["1.1.0"])
    assert client.assignment("cam-3", ["line-b"]) is None

    target = client.bundle_target(bundles.sha["1.1.0"])
    assert dict(target.custom) == {
        "name": "tiny-classifier",
        "version": "1.1.0",
        "format": "onnx",
        "precision": "fp32",
    }
    verify_file(bundles.paths["1.0.0"], own)
    client.verify_file(bundles.paths["1.1.0"], target)
    # the device folder now holds what ngclient verified
    names = {p.name for p in client.metadata_dir.iterdir()}
    assert {"root.json", "timestamp.json", "snapshot.json", "targets.json", "assignments.json"} <= (
        names
    )
    # ...and of the 64 bins only those holding the paths it looked up
    looked_up = [("devices", "cam-1"), ("groups", "line-a"), ("devices", "cam-2")]
    looked_up += [("groups", "line-b"), ("devices", "cam-3")]
    expected = {f"{fleet.repo.bin_for(kind, name)}.json" for kind, name in looked_up}  # type: ignore[arg-type]
    assert {n for n in names if n.startswith("assignments-bin-")} == expected


def test_refresh_waits_for_missing_retained_messages(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    client = provision(tmp_path, fleet)
    assert client.refresh() is False
    assert isinstance(client.last_error, IncompleteMetadataError)
    assert "no retained message for timestamp.json" in str(client.last_error)
    with pytest.raises(TrustError, match="no refresh has succeeded"):
        client.assignment("cam-1")

    own_bin = bin_topic(fleet, "devices", "cam-1")
    deliver(client, {k: v for k, v in fleet.broker.items() if k not in ("assignments", own_bin)})
    assert client.refresh() is True  # the top-level roles are complete
    assert client.assignment("cam-1") is None  # but the assignments role is not there yet
    assert isinstance(client.last_error, IncompleteMetadataError)
    assert "assignments.json" in str(client.last_error)
    assert client.offer("assignments", fleet.broker["assignments"]) is True
    # the client now knows which paths matter: refresh checks them, and cam-1's bin is missing
    assert client.refresh() is False
    assert f"no retained message for {own_bin.removeprefix('bins/')}.json" in str(client.last_error)
    assert client.offer(own_bin, fleet.broker[own_bin]) is True
    assert client.offer(own_bin, fleet.broker[own_bin]) is False  # unchanged
    assert client.refresh() is True
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.bundle_sha256 == bundles.sha["1.0.0"]
    assert client.offer("bundles/x/meta", b"{}") is False


def test_topic_suffixes_map_to_ngclient_file_names() -> None:
    assert suffix_for_url_name("1.root.json") == "root/1"
    assert suffix_for_url_name("12.root.json") == "root/12"
    for role in ("timestamp", "snapshot", "targets", "assignments"):
        assert suffix_for_url_name(f"{role}.json") == role
    assert suffix_for_url_name("assignments-bin-3f.json") == "bins/assignments-bin-3f"
    assert suffix_for_url_name("assignments-bin-000.json") == "bins/assignments-bin-000"
    for other in (
        "root.json",
        "0.root.json",
        "3.snapshot.json",
        "bundles/x.efb",
        "evil.json",
        "assignments-bin-.json",
        "assignments-bin-zz.json",
        "assignments-bin-3f",
        "../assignments-bin-3f.json",
    ):
        assert suffix_for_url_name(other) is None


# --- tampered and oversized bytes -----------------------------------------------------


def test_tampered_bundle_bytes_fail_verification(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    client = provision(tmp_path, fleet)
    deliver(client, fleet.broker)
    assert client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None
    data = bytearray(bundles.paths["1.0.0"].read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.efb"
    tampered.write_bytes(bytes(data))
    with pytest.raises(TargetMismatchError, match=r"has sha256 .* \(tampered or corrupt\)"):
        verify_file(tampered, assignment)


def test_file_longer_than_signed_length_is_refused_without_reading_it(
    tmp_path: Path, bundles: Bundles
) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    client = provision(tmp_path, fleet)
    deliver(client, fleet.broker)
    assert client.refresh()
    target = client.bundle_target(bundles.sha["1.0.0"])
    longer = tmp_path / "longer.efb"
    longer.write_bytes(bundles.paths["1.0.0"].read_bytes() + b"\0")
    with pytest.raises(TargetMismatchError, match="longer than the signed length"):
        verify_file(longer, target)
    # 4 GiB past the signed length (sparse): refused at once, nothing past the length is hashed
    with longer.open("r+b") as handle:
        handle.truncate(target.length + (4 << 30))
    started = time.monotonic()
    with pytest.raises(TargetMismatchError, match=f"than the signed length of {target.length}"):
        verify_file(longer, target)
    assert time.monotonic() - started < 0.5


# --- unknown bundles ----------------------------------------------------------------


def test_assigning_an_unreleased_bundle_is_refused_by_the_server(
    tmp_path: Path, bundles: Bundles
) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    with pytest.raises(ReleaseError, match="is not released"):
        fleet.repo.assign(
            "devices", "cam-1", bundles.sha["2.0.0"], fleet.online.role("assignments")
        )


def test_device_refuses_an_assignment_to_a_bundle_no_release_key_signed(
    tmp_path: Path, bundles: Bundles
) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    # A compromised fleet server signs an assignment to unreleased bytes with its online key.
    path = fleet.repo.folder / f"{fleet.repo.bin_for('devices', 'cam-1')}.json"
    md = Metadata[Targets].from_bytes(path.read_bytes())
    custom = {"bundle": f"bundles/{bundles.sha['2.0.0']}.efb", "assignment": 9}
    encoded = encode_canonical(custom)
    assert encoded is not None
    info = TargetFile.from_data("assignments/devices/cam-1", encoded.encode("utf-8"))
    info.unrecognized_fields["custom"] = custom
    md.signed.targets[info.path] = info
    sign_with(md, fleet.online.role("assignments")[0], path)
    client = provision(tmp_path, fleet)
    deliver(client, fleet.publish())
    assert client.refresh() is True  # the metadata itself is validly signed...
    with pytest.raises(UnknownTargetError, match="not a target of the release-signed targets role"):
        client.assignment("cam-1")  # ...but the bundle was never released
    with pytest.raises(UnknownTargetError, match="no release key signed it"):
        client.bundle_target(bundles.sha["2.0.0"])


def test_bundle_signed_only_by_an_online_key_is_refused(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    online = fleet.online.role("assignments")[0]
    with pytest.raises(KeyManagementError, match="is not one of the targets keys"):
        fleet.repo.release(bundles.paths["2.0.0"], online)
    client = provision(tmp_path, fleet)
    deliver(client, fleet.broker)
    assert client.refresh()

    path = fleet.repo.folder / "targets.json"
    md = Metadata[Targets].from_bytes(path.read_bytes())
    forged = TargetFile.from_file(
        f"bundles/{bundles.sha['2.0.0']}.efb", str(bundles.paths["2.0.0"])
    )
    md.signed.targets[forged.path] = forged
    sign_with(md, online, path)
    deliver(client, fleet.publish())
    with pytest.raises(
        BadSignatureError, match=r"targets metadata version 4 is not signed by a threshold"
    ):
        client.refresh()
    assert isinstance(client.last_error, BadSignatureError)
    with pytest.raises(UnknownTargetError):
        client.bundle_target(bundles.sha["2.0.0"])
    assert client.assignment("cam-1") is not None  # the last verified view keeps serving


# --- replay, freeze, mix-and-match ------------------------------------------------------


def test_replayed_older_metadata_is_refused(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    old = dict(fleet.broker)
    assignments = fleet.online.role("assignments")
    fleet.repo.assign("devices", "cam-1", bundles.sha["1.1.0"], assignments)
    new = fleet.publish()
    client = provision(tmp_path, fleet)
    deliver(client, new)
    assert client.refresh()

    deliver(client, old)  # the broker (or an attacker) replays the older retained set
    with pytest.raises(
        RollbackError, match=r"timestamp version 2 is older than trusted 3 \(replay\)"
    ):
        client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None
    assert (assignment.bundle_sha256, assignment.assignment) == (bundles.sha["1.1.0"], 2)

    newer = fleet.publish()  # a newer timestamp, with the old snapshot replayed under it
    deliver(client, {**newer, "snapshot": old["snapshot"]})
    with pytest.raises(
        RollbackError, match=r"snapshot version 2 is older than trusted 3 \(replay\)"
    ):
        client.refresh()
    deliver(client, newer)
    assert client.refresh()


def test_expired_timestamp_is_refused(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles, expiry=Expiry(timestamp=timedelta(seconds=2)))
    client = provision(tmp_path, fleet)
    deliver(client, fleet.broker)
    assert client.refresh()
    # Freeze: nothing new is published and the last timestamp runs out.
    expires = Metadata[Timestamp].from_bytes(fleet.broker["timestamp"]).signed.expires
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(MetadataExpiredError, match=f"timestamp metadata expired at {stamp}"):
        client.refresh()
    with pytest.raises(TrustError, match="no refresh has succeeded"):
        client.assignment("cam-1")
    deliver(client, fleet.publish())  # the server signs a fresh timestamp: the device recovers
    assert client.refresh()
    assert client.assignment("cam-1") is not None


def test_metadata_from_two_states_is_refused(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    client = provision(tmp_path, fleet)
    deliver(client, fleet.broker)
    assert client.refresh()
    assert client.assignment("cam-1") is not None
    old = dict(fleet.broker)
    fork = Repository(shutil.copytree(fleet.repo.folder, tmp_path / "fork"))
    own_bin = bin_topic(fleet, "devices", "cam-1")
    name = own_bin.removeprefix("bins/")

    assignments = fleet.online.role("assignments")
    fleet.repo.assign("devices", "cam-1", bundles.sha["1.1.0"], assignments)
    new = fleet.publish()
    # Timestamp and snapshot of the new state, cam-1's bin of the old: not trusted (yet).
    deliver(client, {**new, own_bin: old[own_bin]})
    assert client.refresh() is False
    assert isinstance(client.last_error, IncompleteMetadataError)
    assert f"names {name} version 3; the broker holds {name} version 2 so far" in str(
        client.last_error
    )
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.bundle_sha256 == bundles.sha["1.0.0"]

    # A forked state with the same versions but other content: a mix, refused outright.
    neighbour = next(
        f"cam-{i}" for i in range(2, 10_000) if bin_topic(fleet, "devices", f"cam-{i}") == own_bin
    )
    fork.assign("devices", neighbour, bundles.sha["1.0.0"], assignments)
    fork.snapshot_and_timestamp(fleet.online.role("snapshot"), fleet.online.role("timestamp"))
    deliver(client, {**new, own_bin: fork.published()[own_bin]})
    with pytest.raises(InconsistentMetadataError, match=rf"{name} version 3 .*mix-and-match"):
        client.refresh()
    deliver(client, new)
    assert client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.bundle_sha256 == bundles.sha["1.1.0"]


# --- keys: rotation and revocation ------------------------------------------------------


def test_root_key_rotation_reaches_devices_without_reprovisioning(
    tmp_path: Path, bundles: Bundles
) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    client = provision(tmp_path, fleet)
    deliver(client, fleet.broker)
    assert client.refresh()

    old_root = fleet.keys.role("root")[0]
    new_root = generate_key(tmp_path / "keys" / "root-new.pem")
    with pytest.raises(KeyManagementError, match="needs a threshold of signatures"):
        fleet.repo.rotate_key("root", old_root.public_key, new_root.public_key, [new_root])
    assert (
        fleet.repo.rotate_key(
            "root", old_root.public_key, new_root.public_key, [old_root, new_root]
        )
        == 2
    )
    # root v3, signed by the new root key alone, moves timestamp to a new key
    old_ts = fleet.online.role("timestamp")[0]
    new_ts = generate_key(tmp_path / "keys" / "timestamp-new.pem")
    assert fleet.repo.rotate_key("timestamp", old_ts.public_key, new_ts.public_key, [new_root]) == 3
    fleet.repo.snapshot_and_timestamp(fleet.online.role("snapshot"), new_ts)
    fleet.broker.update(fleet.repo.published())
    assert [s for s in fleet.broker if s.startswith("root/")] == ["root/1", "root/2", "root/3"]

    deliver(client, fleet.broker)
    assert client.refresh() is True  # walked root/2 and root/3, then the new timestamp key
    assert (
        Metadata[Root].from_bytes((client.metadata_dir / "root.json").read_bytes()).signed.version
        == 3
    )
    assert client.assignment("cam-1") is not None
    # a power cut while ngclient re-links root.json: the newest verified root still anchors trust
    (client.metadata_dir / "root.json").unlink()
    reopened = TrustClient(client.metadata_dir)
    deliver(reopened, fleet.broker)
    assert reopened.refresh() is True
    assert (client.metadata_dir / "root.json").resolve().name == "3.root.json"

    # A root v2 without the old root key's signature does not verify on a v1 device.
    forged = Metadata[Root].from_bytes(fleet.broker["root/2"])
    del forged.signatures[old_root.public_key.keyid]
    fresh = provision(tmp_path, fleet, "cam-fresh")
    deliver(fresh, {**fleet.broker, "root/2": forged.to_bytes()})
    with pytest.raises(BadSignatureError, match="root version 2 is not signed by a threshold"):
        fresh.refresh()


def test_revoked_release_key_cannot_sign_bundles(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles, counts={"targets": 2})
    client = provision(tmp_path, fleet)
    deliver(client, fleet.broker)
    assert client.refresh()
    revoked, kept = fleet.keys.role("targets")
    assert fleet.repo.revoke_key("targets", revoked.public_key.keyid, fleet.keys.role("root")) == 2
    with pytest.raises(KeyManagementError, match="is not one of the targets keys"):
        fleet.repo.release(bundles.paths["2.0.0"], revoked)

    path = fleet.repo.folder / "targets.json"
    good = path.read_bytes()
    md = Metadata[Targets].from_bytes(good)
    extra = TargetFile.from_file(f"bundles/{bundles.sha['2.0.0']}.efb", str(bundles.paths["2.0.0"]))
    md.signed.targets[extra.path] = extra
    sign_with(md, revoked, path)
    deliver(client, fleet.publish())
    with pytest.raises(BadSignatureError, match="targets metadata version 4 is not signed"):
        client.refresh()
    with pytest.raises(UnknownTargetError):
        client.bundle_target(bundles.sha["2.0.0"])

    path.write_bytes(good)
    fleet.repo.release(bundles.paths["2.0.0"], kept)
    deliver(client, fleet.publish())
    assert client.refresh()
    assert (
        client.bundle_target(bundles.sha["2.0.0"]).length == bundles.paths["2.0.0"].stat().st_size
    )


def test_operator_rollback_is_new_metadata_and_a_replay_stays_refused(
    tmp_path: Path, bundles: Bundles
) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    assignments = fleet.online.role("assignments")
    assert fleet.repo.assign("devices", "cam-1", bundles.sha["1.1.0"], assignments) == 2
    on_new = fleet.publish()
    client = provision(tmp_path, fleet)
    deliver(client, on_new)
    assert client.refresh()

    # 1.1.0 misbehaves: the operator assigns 1.0.0 again, in new signed metadata
    assert fleet.repo.assign("devices", "cam-1", bundles.sha["1.0.0"], assignments) == 3
    deliver(client, fleet.publish())
    assert client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None
    assert (assignment.bundle_sha256, assignment.assignment) == (bundles.sha["1.0.0"], 3)

    deliver(client, on_new)  # replaying the metadata that pointed at 1.1.0
    with pytest.raises(RollbackError, match="older than trusted"):
        client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.bundle_sha256 == bundles.sha["1.0.0"]

    # unassign then assign again: the assignment number keeps growing
    assert fleet.repo.unassign("devices", "cam-1", assignments) is True
    assert fleet.repo.assign("devices", "cam-1", bundles.sha["1.1.0"], assignments) == 4
    deliver(client, fleet.publish())
    assert client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.assignment == 4


# --- provisioning --------------------------------------------------------------------


def test_provisioning_checks_the_root(tmp_path: Path, bundles: Bundles) -> None:
    fleet = released_and_assigned(tmp_path, bundles)
    with pytest.raises(TrustError, match="not valid TUF root metadata"):
        TrustClient.provision(tmp_path / "bad", fleet.broker["timestamp"])
    client = provision(tmp_path, fleet)
    assert provision(tmp_path, fleet).metadata_dir == client.metadata_dir  # idempotent
    other = make_fleet(tmp_path / "other")
    with pytest.raises(TrustError, match="already provisioned"):
        TrustClient.provision(client.metadata_dir, other.repo.root_bytes())
    with pytest.raises(TrustError, match="provision the device first"):
        TrustClient(tmp_path / "empty")


def test_junk_retained_on_the_next_root_topic_is_ignored_and_reported(
    tmp_path: Path, bundles: Bundles
) -> None:
    """Issue #15, item 4: one retained message must not stop a device from taking updates."""
    fleet = released_and_assigned(tmp_path, bundles)
    unsigned = Metadata[Root].from_bytes(fleet.repo.root_bytes(1))
    unsigned.signed.version = 2
    unsigned.signatures.clear()
    for junk in (b"not metadata at all", b"{}", unsigned.to_bytes()):
        client = provision(tmp_path, fleet, f"cam-{len(junk)}")
        deliver(client, {**fleet.broker, "root/2": junk})
        assert client.refresh() is True
        assert client.assignment("cam-1") is not None
        warnings = client.take_warnings()
        assert len(warnings) == 1 and warnings[0].startswith("ignored tuf/root/2: ")
        assert client.take_warnings() == []
        trusted = Metadata[Root].from_bytes((client.metadata_dir / "root.json").read_bytes())
        assert trusted.signed.version == 1
    # once the junk is replaced by a real root v2, the device walks to it
    old_root = fleet.keys.role("root")[0]
    new_root = generate_key(tmp_path / "keys" / "root-new.pem")
    fleet.repo.rotate_key("root", old_root.public_key, new_root.public_key, [old_root, new_root])
    fleet.publish()
    deliver(client, fleet.broker)
    assert client.refresh() is True and client.take_warnings() == []
    trusted = Metadata[Root].from_bytes((client.metadata_dir / "root.json").read_bytes())
    assert trusted.signed.version == 2
