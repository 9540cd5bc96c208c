"""The release/server side of trust: key files and the TUF repository's own refusals."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Snapshot, Targets, Timestamp

from fleet_server.errors import KeyManagementError, ReleaseError
from fleet_server.trust import (
    ASSIGNMENT_PATHS,
    ONLINE_ROLES,
    Expiry,
    Repository,
    generate_key,
    init_keys,
    load_keys,
    load_public_key,
    load_signer,
    public_key_path,
)

# --- key files ----------------------------------------------------------------------


def test_generated_key_is_private_and_loads_back(tmp_path: Path) -> None:
    signer = generate_key(tmp_path / "keys" / "targets-1.pem", passphrase="correct horse")
    private = tmp_path / "keys" / "targets-1.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    public = json.loads(public_key_path(private).read_text())
    assert public["keyid"] == signer.public_key.keyid
    assert public["keytype"] == "ed25519"
    assert load_public_key(private) == signer.public_key
    loaded = load_signer(private, "correct horse")
    assert loaded.public_key == signer.public_key
    assert not [p for p in private.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(KeyManagementError, match="refusing to overwrite"):
        generate_key(private)


def test_key_loading_errors_say_what_is_wrong(tmp_path: Path) -> None:
    encrypted = tmp_path / "root-1.pem"
    generate_key(encrypted, passphrase=b"secret")
    with pytest.raises(KeyManagementError, match="wrong passphrase"):
        load_signer(encrypted, "not the secret")
    with pytest.raises(KeyManagementError, match="is encrypted: a passphrase is needed"):
        load_signer(encrypted)
    plain = tmp_path / "snapshot-1.pem"
    generate_key(plain)
    with pytest.raises(KeyManagementError, match="is not encrypted, but a passphrase was given"):
        load_signer(plain, "secret")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyManagementError, match="is not a PKCS#8 PEM private key"):
        load_signer(garbage)
    with pytest.raises(KeyManagementError, match="cannot read key"):
        load_signer(tmp_path / "missing.pem")
    public_key_path(plain).write_text(public_key_path(encrypted).read_text())
    with pytest.raises(KeyManagementError, match="does not match its public key file"):
        load_signer(plain)


def test_init_keys_checks_thresholds_and_load_keys_finds_online_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyManagementError, match="threshold 3 with 2 key"):
        init_keys(tmp_path / "bad", counts={"root": 2}, thresholds={"root": 3})
    with pytest.raises(KeyManagementError, match="unknown role"):
        init_keys(tmp_path / "bad2", counts={"release": 1})
    keys = init_keys(tmp_path / "keys", counts={"root": 3}, thresholds={"root": 2})
    assert len(keys.role("root")) == 3 and keys.threshold("root") == 2
    online = load_keys(tmp_path / "keys")
    assert set(online.signers) == set(ONLINE_ROLES)
    with pytest.raises(KeyManagementError, match="no targets key is loaded"):
        online.role("targets")
    with pytest.raises(KeyManagementError, match=r"no targets key \(targets-\*.pem\)"):
        load_keys(tmp_path / "bad", ["targets"])


# --- repository -----------------------------------------------------------------------


@pytest.fixture
def repo_and_keys(tmp_path: Path) -> tuple[Repository, object]:
    keys = init_keys(tmp_path / "keys", counts={"root": 2}, thresholds={"root": 2})
    return Repository.create(tmp_path / "repo", keys), keys


def test_created_repository_layout(
    tmp_path: Path, repo_and_keys: tuple[Repository, object]
) -> None:
    repo, keys = repo_and_keys
    names = {p.name for p in repo.folder.iterdir()}
    assert {
        "root.json",
        "1.root.json",
        "targets.json",
        "assignments.json",
        "assignments-bin-00.json",
        "assignments-bin-3f.json",
        "snapshot.json",
        "timestamp.json",
    } <= names
    assert repo.bins() == [f"assignments-bin-{i:02x}" for i in range(64)]
    root = Metadata.from_bytes(repo.root_bytes()).signed
    assert root.consistent_snapshot is False
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 2
    targets = Metadata[Targets].from_bytes(repo.published()["targets"]).signed
    assert targets.delegations is not None and targets.delegations.roles is not None
    delegation = targets.delegations.roles["assignments"]
    assert delegation.terminating and delegation.paths == ASSIGNMENT_PATHS
    assignments = Metadata[Targets].from_bytes(repo.published()["assignments"]).signed
    assert assignments.targets == {}
    assert assignments.delegations is not None and assignments.delegations.roles is None
    succinct = assignments.delegations.succinct_roles
    assert succinct is not None
    assert (succinct.bit_length, succinct.name_prefix) == (6, "assignments-bin")
    assert succinct.keyids == delegation.keyids
    snapshot = Metadata[Snapshot].from_bytes(repo.published()["snapshot"]).signed
    assert set(snapshot.meta) == {
        "targets.json",
        "assignments.json",
        *(f"{name}.json" for name in repo.bins()),
    }
    assert all(meta.hashes and meta.length for meta in snapshot.meta.values())
    timestamp = Metadata[Timestamp].from_bytes(repo.published()["timestamp"]).signed
    assert timestamp.snapshot_meta.hashes
    with pytest.raises(ReleaseError, match="already holds a TUF repository"):
        Repository.create(repo.folder, keys)  # type: ignore[arg-type]
    with pytest.raises(ReleaseError, match="holds no TUF repository"):
        Repository(tmp_path / "nothing")
    for bins in (1, 3, 8192):
        with pytest.raises(ReleaseError, match="bins must be a power of two"):
            Repository.create(tmp_path / f"bins-{bins}", keys, bins=bins)  # type: ignore[arg-type]
    small = Repository.create(tmp_path / "small", keys, bins=2)  # type: ignore[arg-type]
    assert small.bins() == ["assignments-bin-0", "assignments-bin-1"]


def test_release_is_idempotent_and_versions_are_unique(
    tmp_path: Path, make_bundle: Callable[..., bytes]
) -> None:
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys)
    release = keys.role("targets")
    first = tmp_path / "a.efb"
    first.write_bytes(make_bundle(version="1.0.0"))
    released = repo.release(first, release)
    assert released.custom == {
        "name": "tiny-classifier",
        "version": "1.0.0",
        "format": "onnx",
        "precision": "fp32",
    }
    version = Metadata[Targets].from_bytes(repo.published()["targets"]).signed.version
    assert repo.release(first, release) == released
    assert Metadata[Targets].from_bytes(repo.published()["targets"]).signed.version == version
    clash = tmp_path / "b.efb"
    clash.write_bytes(make_bundle(version="1.0.0", description="other bytes"))
    with pytest.raises(ReleaseError, match="already released as bundle"):
        repo.release(clash, release)
    broken = tmp_path / "broken.efb"
    broken.write_bytes(b"not a bundle")
    with pytest.raises(ReleaseError, match="cannot release"):
        repo.release(broken, release)
    online = load_keys(tmp_path / "keys")
    with pytest.raises(ReleaseError, match="'devices' or 'groups'"):
        repo.assign("cameras", "cam-1", released.sha256, online.role("assignments"))  # type: ignore[arg-type]
    with pytest.raises(ReleaseError, match="not a valid device name"):
        repo.assign("devices", "../cam", released.sha256, online.role("assignments"))
    with pytest.raises(KeyManagementError, match="is not one of the assignments keys"):
        repo.assign("devices", "cam-1", released.sha256, online.role("timestamp"))
    assert repo.assign("devices", "cam-1", released.sha256, online.role("assignments")) == 1
    assert repo.assignments() == {"devices/cam-1": {"bundle": released.path, "assignment": 1}}
    assert repo.unassign("groups", "nobody", online.role("assignments")) is False


def test_key_changes_keep_thresholds(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys", counts={"root": 2}, thresholds={"root": 2})
    repo = Repository.create(tmp_path / "repo", keys)
    first, second = keys.role("root")
    with pytest.raises(KeyManagementError, match="below its threshold"):
        repo.revoke_key("timestamp", keys.role("timestamp")[0].public_key.keyid, [first, second])
    with pytest.raises(KeyManagementError, match="is not used by targets"):
        repo.revoke_key("targets", "0" * 64, [first, second])
    new_snapshot = generate_key(tmp_path / "keys" / "snapshot-new.pem")
    old_snapshot = keys.role("snapshot")[0].public_key
    with pytest.raises(KeyManagementError, match="needs a threshold of signatures"):
        repo.rotate_key("snapshot", old_snapshot, new_snapshot.public_key, [first])
    new_assign = generate_key(tmp_path / "keys" / "assignments-new.pem")
    with pytest.raises(KeyManagementError, match="delegated by targets"):
        repo.rotate_key(
            "assignments",
            keys.role("assignments")[0].public_key,
            new_assign.public_key,
            [first, second],
        )
    repo.rotate_assignments_key(
        keys.role("assignments")[0].public_key,
        new_assign.public_key,
        keys.role("targets"),
        new_assign,
    )
    repo.snapshot_and_timestamp(keys.role("snapshot"), keys.role("timestamp"))
    published = repo.published()
    targets = Metadata[Targets].from_bytes(published["targets"]).signed
    assert targets.delegations is not None and targets.delegations.roles is not None
    assert targets.delegations.roles["assignments"].keyids == [new_assign.public_key.keyid]
    assignments = Metadata[Targets].from_bytes(published["assignments"])
    assert assignments.signed.delegations is not None
    succinct = assignments.signed.delegations.succinct_roles
    assert succinct is not None and succinct.keyids == [new_assign.public_key.keyid]
    targets.verify_delegate("assignments", assignments.signed_bytes, assignments.signatures)
    for name in repo.bins():  # every bin is signed by the new key, and only by it
        md = Metadata[Targets].from_bytes(published[f"bins/{name}"])
        assert list(md.signatures) == [new_assign.public_key.keyid]
        assignments.signed.verify_delegate(name, md.signed_bytes, md.signatures)
    assert repo.root_version == 1


def _bin_versions(repo: Repository) -> dict[str, int]:
    published = repo.published()
    return {
        name: json.loads(published[f"bins/{name}"])["signed"]["version"] for name in repo.bins()
    }


def test_assign_many_signs_each_touched_bin_once_and_numbers_each_path(tmp_path: Path) -> None:
    from tests.media import make_bundle
    from tests.models import tiny_onnx_model

    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry(), bins=4)
    bundle = make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", True)
    repo.release(tmp_path / "v1.efb", keys.role("targets"))
    delegating = repo.published()["assignments"]
    before = _bin_versions(repo)
    assert set(before.values()) == {1}
    repo.assign("devices", "cam-0", bundle.sha256, keys.role("assignments"))
    numbers = repo.assign_many(
        "devices", ["cam-0", "cam-1", "cam-2"], bundle.sha256, keys.role("assignments")
    )
    assert numbers == {"cam-0": 2, "cam-1": 1, "cam-2": 1}
    after = _bin_versions(repo)
    touched = {repo.bin_for("devices", f"cam-{i}") for i in range(3)}
    for name, version in after.items():
        # one version per call and touched bin, not per device; other bins keep theirs
        expected = int(name in touched) + int(name == repo.bin_for("devices", "cam-0"))
        assert version == before[name] + expected, name
    assert repo.published()["assignments"] == delegating  # the delegating role is not re-signed
    published = repo.published()
    held = {
        path
        for name in repo.bins()
        for path in json.loads(published[f"bins/{name}"])["signed"]["targets"]
        if repo.bin_for("devices", path.rsplit("/", 1)[1]) == name
    }
    assert sorted(held) == [f"assignments/devices/cam-{i}" for i in range(3)]
    assert repo.unassign_many("devices", ["cam-1", "cam-9"], keys.role("assignments")) == ["cam-1"]
    assert repo.unassign_many("devices", ["cam-9"], keys.role("assignments")) == []
    final = _bin_versions(repo)
    one = repo.bin_for("devices", "cam-1")
    assert {n: v for n, v in final.items() if v != after[n]} == {one: after[one] + 1}
    assert repo.assign("devices", "cam-1", bundle.sha256, keys.role("assignments")) == 2
    assert set(repo.assignments()) == {"devices/cam-0", "devices/cam-1", "devices/cam-2"}
    # resign("assignments") renews the delegating role and every bin (they expire together)
    renewed = _bin_versions(repo)
    version = repo.resign("assignments", keys.role("assignments"))
    assert version == json.loads(delegating)["signed"]["version"] + 1
    assert _bin_versions(repo) == {name: v + 1 for name, v in renewed.items()}
