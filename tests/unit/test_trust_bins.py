"""Assignments in hashed bins (TUF TAP 15): a device loads only its bins, a change re-signs only its bin.

A real repository in tmp_path and the real ngclient on the device, as in
``test_trust.py``; a plain dict stands in for the broker's retained payloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Targets

import fleet_server.trust.repository._signing as signing_module
from edge_runtime.errors import BadSignatureError, InconsistentMetadataError, RollbackError
from edge_runtime.trust import TrustClient
from fleet_server.trust import ONLINE_ROLES, Expiry, KeySet, Repository, init_keys, load_keys
from tests.media import make_bundle
from tests.models import tiny_onnx_model


@dataclass
class Fleet:
    repo: Repository
    keys: KeySet
    online: KeySet
    sha: Mapping[str, str]
    broker: dict[str, bytes]

    @property
    def assigner(self) -> list[Signer]:
        return self.online.role("assignments")

    def publish(self) -> dict[str, bytes]:
        self.repo.snapshot_and_timestamp(
            self.online.role("snapshot"), self.online.role("timestamp")
        )
        self.broker.update(self.repo.published())
        return dict(self.broker)

    def device(self, folder: Path) -> TrustClient:
        client = TrustClient.provision(folder, self.repo.root_bytes(1))
        offer_all(client, self.broker)
        return client


def offer_all(client: TrustClient, payloads: Mapping[str, bytes]) -> list[str]:
    """Offer every payload; the suffixes the client said were worth a refresh."""
    return [suffix for suffix, payload in payloads.items() if client.offer(suffix, payload)]


def make_fleet(tmp_path: Path, bins: int = 64) -> Fleet:
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry(), bins=bins)
    sha = {}
    for version in ("1.0.0", "1.1.0"):
        path = tmp_path / f"tiny-{version}.efb"
        sha[version] = make_bundle(path, tiny_onnx_model(), "onnx", version, True).sha256
        repo.release(path, keys.role("targets"))
    fleet = Fleet(repo, keys, load_keys(tmp_path / "keys", ONLINE_ROLES), sha, {})
    fleet.publish()
    return fleet


def bins_on_device(client: TrustClient) -> set[str]:
    """The bins ngclient verified and persisted on the device."""
    return {
        p.name.removesuffix(".json") for p in client.metadata_dir.glob("assignments-bin-*.json")
    }


def bin_versions(repo: Repository) -> dict[str, int]:
    published = repo.published()
    return {
        name: int(json.loads(published[f"bins/{name}"])["signed"]["version"])
        for name in repo.bins()
    }


@pytest.fixture
def signatures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The type of every metadata signature the repository makes (``targets`` for bins)."""
    made: list[str] = []
    original = signing_module.add_signature

    def counting(md: Metadata[Any], signer: Signer) -> None:
        made.append(md.signed.type)
        original(md, signer)

    monkeypatch.setattr(signing_module, "add_signature", counting)
    yield made


# --- (a) a device resolves its own and its group's assignment ---------------------------


@pytest.mark.parametrize("bins", [2, 16, 256])
def test_device_resolves_own_and_group_assignment_from_its_bins(tmp_path: Path, bins: int) -> None:
    fleet = make_fleet(tmp_path, bins)
    fleet.repo.assign_many(
        "devices", [f"cam-{i}" for i in range(40)], fleet.sha["1.0.0"], fleet.assigner
    )
    fleet.repo.assign("groups", "line-a", fleet.sha["1.1.0"], fleet.assigner)
    fleet.publish()
    assert len(fleet.repo.bins()) == bins

    client = fleet.device(tmp_path / "cam-7")
    assert client.refresh()
    own = client.assignment("cam-7", ["line-a"])
    assert own is not None
    assert (own.source, own.bundle_sha256, own.assignment) == (
        "devices/cam-7",
        fleet.sha["1.0.0"],
        1,
    )
    group = client.assignment("cam-99", ["line-a"])  # not assigned itself: its group's
    assert group is not None and (group.source, group.bundle_sha256) == (
        "groups/line-a",
        fleet.sha["1.1.0"],
    )
    assert client.assignment("cam-98", ["line-b"]) is None
    looked_up = [("devices", "cam-7"), ("groups", "line-a"), ("devices", "cam-99")]
    looked_up += [("devices", "cam-98"), ("groups", "line-b")]
    assert bins_on_device(client) == {fleet.repo.bin_for(k, n) for k, n in looked_up}  # type: ignore[arg-type]


# --- (b) one change re-signs one bin ---------------------------------------------------


def test_changing_one_assignment_re_signs_only_its_bin(
    tmp_path: Path, signatures: list[str]
) -> None:
    fleet = make_fleet(tmp_path)
    names = [f"cam-{i}" for i in range(200)]
    fleet.repo.assign_many("devices", names, fleet.sha["1.0.0"], fleet.assigner)
    old = fleet.publish()
    client = fleet.device(tmp_path / "cam-5")
    assert client.refresh()
    assert client.assignment("cam-5") is not None
    before = bin_versions(fleet.repo)

    signatures.clear()
    assert fleet.repo.assign("devices", "cam-5", fleet.sha["1.1.0"], fleet.assigner) == 2
    assert signatures == ["targets"]  # one bin, one signature
    own = fleet.repo.bin_for("devices", "cam-5")
    after = bin_versions(fleet.repo)
    assert {name for name in after if after[name] != before[name]} == {own}
    assert after[own] == before[own] + 1
    new = fleet.publish()
    changed = {suffix for suffix in new if new[suffix] != old[suffix]}
    assert changed == {f"bins/{own}", "snapshot", "timestamp"}

    # the device is told to refresh for its own bin, snapshot and timestamp, nothing else
    assert sorted(offer_all(client, new)) == sorted(changed)
    assert client.refresh()
    assignment = client.assignment("cam-5")
    assert assignment is not None and (assignment.bundle_sha256, assignment.assignment) == (
        fleet.sha["1.1.0"],
        2,
    )
    # another device's bin changing is stored but not worth a refresh to cam-5
    other = next(n for n in names if fleet.repo.bin_for("devices", n) != own)
    fleet.repo.assign("devices", other, fleet.sha["1.1.0"], fleet.assigner)
    newer = fleet.publish()
    assert sorted(offer_all(client, newer)) == ["snapshot", "timestamp"]
    assert client.refresh()
    assert bins_on_device(client) == {own}


# --- (c) tampered and replayed bins ----------------------------------------------------


def test_tampered_bin_is_refused(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    fleet.repo.assign("devices", "cam-1", fleet.sha["1.0.0"], fleet.assigner)
    fleet.publish()
    client = fleet.device(tmp_path / "cam-1")
    assert client.refresh() and client.assignment("cam-1") is not None
    own = fleet.repo.bin_for("devices", "cam-1")

    fleet.repo.assign("devices", "cam-1", fleet.sha["1.1.0"], fleet.assigner)
    new = fleet.publish()
    # the broker (or anyone on the way) flips a byte of the bin the snapshot pins
    tampered = bytearray(new[f"bins/{own}"])
    at = tampered.index(fleet.sha["1.1.0"].encode())
    tampered[at] = ord("0") if tampered[at] != ord("0") else ord("1")
    offer_all(client, {**new, f"bins/{own}": bytes(tampered)})
    with pytest.raises(
        InconsistentMetadataError, match=rf"{own} version 3 does not match .*tampered"
    ):
        client.refresh()
    kept = client.assignment("cam-1")  # the last verified view keeps serving
    assert kept is not None and kept.bundle_sha256 == fleet.sha["1.0.0"]


def test_bin_signed_with_a_key_not_trusted_for_it_is_refused(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    fleet.repo.assign("devices", "cam-1", fleet.sha["1.0.0"], fleet.assigner)
    fleet.publish()
    client = fleet.device(tmp_path / "cam-1")
    assert client.refresh() and client.assignment("cam-1") is not None
    own = fleet.repo.bin_for("devices", "cam-1")

    # a bin re-signed with the snapshot key (online, but not trusted for bins), then snapshotted
    path = fleet.repo.folder / f"{own}.json"
    md = Metadata[Targets].from_bytes(path.read_bytes())
    md.signed.version += 1
    md.sign(fleet.online.role("snapshot")[0])
    path.write_bytes(md.to_bytes())
    offer_all(client, fleet.publish())
    with pytest.raises(
        BadSignatureError, match=rf"{own} metadata version 3 is not signed by a threshold"
    ):
        client.refresh()


def test_replayed_bin_is_refused(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    fleet.repo.assign("devices", "cam-1", fleet.sha["1.0.0"], fleet.assigner)
    on_old = fleet.publish()  # bin v2
    own = fleet.repo.bin_for("devices", "cam-1")
    fleet.repo.assign("devices", "cam-1", fleet.sha["1.1.0"], fleet.assigner)
    client = fleet.device(tmp_path / "cam-1")
    offer_all(client, fleet.publish())  # bin v3
    assert client.refresh() and client.assignment("cam-1") is not None

    # an old bin offered under the current snapshot: ngclient keeps the verified v3, nothing changes
    assert offer_all(client, {f"bins/{own}": on_old[f"bins/{own}"]}) == [f"bins/{own}"]
    assert client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.assignment == 2

    # a new snapshot (bin v4) with the old bin v2 replayed under it: refused as a rollback
    fleet.repo.assign("devices", "cam-1", fleet.sha["1.0.0"], fleet.assigner)
    offer_all(client, {**fleet.publish(), f"bins/{own}": on_old[f"bins/{own}"]})
    with pytest.raises(RollbackError, match=rf"{own} version 2 is older than trusted 3 \(replay\)"):
        client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.assignment == 2
    offer_all(client, fleet.broker)
    assert client.refresh()
    assignment = client.assignment("cam-1")
    assert assignment is not None and assignment.assignment == 3


# --- (d) a fleet of 1,000 -------------------------------------------------------------------


def test_thousand_devices_one_signature_per_bin_and_one_bin_per_device(
    tmp_path: Path, signatures: list[str]
) -> None:
    fleet = make_fleet(tmp_path)
    names = [f"cam-{i:04d}" for i in range(1000)]
    signatures.clear()
    numbers = fleet.repo.assign_many("devices", names, fleet.sha["1.0.0"], fleet.assigner)
    assert set(numbers.values()) == {1}
    touched = {fleet.repo.bin_for("devices", name) for name in names}
    assert len(touched) == 64  # 1,000 paths fill every bin
    assert signatures == ["targets"] * len(touched)  # one signature per touched bin
    published = fleet.publish()
    largest = max(len(published[f"bins/{name}"]) for name in fleet.repo.bins())
    assert largest < 16 * 1024  # a bin holds ~16 of the 1,000 assignments

    client = fleet.device(tmp_path / "cam-0500")
    assert client.refresh()
    assignment = client.assignment("cam-0500")
    assert assignment is not None and assignment.bundle_sha256 == fleet.sha["1.0.0"]
    assert bins_on_device(client) == {fleet.repo.bin_for("devices", "cam-0500")}

    # a wave of 100 devices: at most one signature per bin they touch
    signatures.clear()
    wave = names[:100]
    fleet.repo.assign_many("devices", wave, fleet.sha["1.1.0"], fleet.assigner)
    assert len(signatures) == len({fleet.repo.bin_for("devices", name) for name in wave})
    offer_all(client, fleet.publish())
    assert client.refresh()
    assert bins_on_device(client) == {fleet.repo.bin_for("devices", "cam-0500")}


def test_bins_are_not_worth_a_refresh_until_the_device_knows_its_own(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    fleet.repo.assign("devices", "cam-1", fleet.sha["1.0.0"], fleet.assigner)
    published = fleet.publish()
    own = f"bins/{fleet.repo.bin_for('devices', 'cam-1')}"
    client = TrustClient.provision(tmp_path / "cam-1", fleet.repo.root_bytes(1))
    # connecting to a broker that holds 64 bins: the top-level roles ask for a refresh, bins do not
    told = offer_all(client, {k: v for k, v in published.items() if k != own})
    assert not [suffix for suffix in told if suffix.startswith("bins/")]
    assert client.refresh()
    assert client.offer(own, published[own]) is False  # arrived after the refresh took its payloads
    assignment = client.assignment("cam-1")  # ...and the lookup still finds it
    assert assignment is not None and assignment.bundle_sha256 == fleet.sha["1.0.0"]
