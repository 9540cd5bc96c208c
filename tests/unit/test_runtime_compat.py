"""``compatibility.min_runtime_version``: version order, the manifest's error, the planner's skip,
the coordinator's refusal (plain values and a real registry)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.packaging import assemble_bundle
from edge_runtime import __version__
from edge_runtime.bundle import Compatibility, dump_manifest, load_manifest, parse_bundle
from edge_runtime.bundle.compat import (
    compatibility_problem,
    declared_min_runtime,
    runtime_too_old,
    version_key,
)
from edge_runtime.bundle.fields import (
    FIELDS_SINCE,
    manifest_fields,
    required_runtime,
    schema_fields,
)
from edge_runtime.bundle.manifest import FloatFallback
from edge_runtime.errors import ManifestError, RuntimeTooOldError
from fleet_server.coordinator import RolloutCoordinator
from fleet_server.errors import RolloutError
from fleet_server.records import TargetSelector
from fleet_server.registry import Registry
from fleet_server.rollout_plan import Action, Assign, EventKind, RolloutState
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec
from tests.conftest import manifest_for
from tests.media import make_bundle as make_model_bundle
from tests.models import tiny_onnx_model

NEW = "b" * 64
OTHER = "c" * 64

# ascending by semantic-version precedence
ORDERED = [
    "0.1.0",
    "0.1.1",
    "0.2.0",
    "0.10.0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "2.0.0",
]


def test_versions_sort_by_semantic_version_precedence() -> None:
    shuffled = sorted(ORDERED, key=lambda v: v[::-1])
    assert sorted(shuffled, key=version_key) == ORDERED
    assert version_key("1.0.0+build.7") == version_key("1.0.0")  # build metadata ignored


@given(
    st.tuples(*[st.integers(0, 50)] * 3),
    st.tuples(*[st.integers(0, 50)] * 3),
    st.text("abcrc0123456789.", min_size=1, max_size=8).filter(lambda t: "" not in t.split(".")),
)
def test_release_versions_order_as_numbers_and_pre_releases_come_first(
    a: tuple[int, int, int], b: tuple[int, int, int], pre: str
) -> None:
    first, second = ".".join(map(str, a)), ".".join(map(str, b))
    assert (version_key(first) < version_key(second)) == (a < b)
    assert version_key(f"{first}-{pre}") < version_key(first)  # any pre-release of it
    assert runtime_too_old(first, f"{first}-{pre}") and not runtime_too_old(f"{first}-{pre}", first)


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "1.0.0.0", "", "01.a.0", "1.0.0-"])
def test_a_malformed_version_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a version"):
        version_key(bad)


def test_compatibility_problem_names_both_versions() -> None:
    assert not runtime_too_old("0.1.0", "0.1.0") and runtime_too_old("0.2.0", "0.1.0")
    assert runtime_too_old("1.0.0", "1.0.0-rc.1")  # a pre-release is older than its release
    assert compatibility_problem("0.1.0", "0.1.0") is None
    assert compatibility_problem("0.0.9", "0.1.0") is None
    assert compatibility_problem("0.2.0", "0.1.0") == (
        "the bundle needs edge_runtime >= 0.2.0; this runtime is 0.1.0"
    )
    assert compatibility_problem("9.0.0", None) is None  # never reported: not refused here
    assert compatibility_problem("9.0.0", "custom-build") is None
    assert compatibility_problem("9.0.0") is not None  # this runtime is older than 9.0.0


def _raw_manifest(min_runtime: str, extra: dict[str, object]) -> bytes:
    spec = manifest_for("onnx", compatibility=Compatibility(min_runtime_version=min_runtime))
    data = json.loads(dump_manifest(spec))
    data["model"].update(extra)  # a field from a runtime newer than this one
    return json.dumps(data).encode()


def test_a_manifest_from_a_newer_runtime_says_which_runtime_it_needs() -> None:
    raw = _raw_manifest("99.0.0", {"future_field": {"ops": ["x"]}})
    assert declared_min_runtime(json.loads(raw)) == "99.0.0"
    with pytest.raises(RuntimeTooOldError) as refused:
        load_manifest(raw)
    message = str(refused.value)
    assert f"needs edge_runtime >= 99.0.0; this runtime is {__version__}" in message
    assert "model.future_field" in message  # and still what it could not read


def test_an_invalid_manifest_for_this_runtime_stays_a_plain_manifest_error() -> None:
    raw = _raw_manifest(__version__, {"future_field": 1})
    with pytest.raises(ManifestError) as refused:
        load_manifest(raw)
    assert not isinstance(refused.value, RuntimeTooOldError)
    assert "is invalid: model.future_field" in str(refused.value)
    # a garbled version is not trusted either: the plain error
    data = json.loads(_raw_manifest("99.0.0", {"future_field": 1}))
    data["compatibility"]["min_runtime_version"] = "ninety-nine"
    assert declared_min_runtime(data) is None
    with pytest.raises(ManifestError, match="is invalid") as garbled:
        load_manifest(json.dumps(data).encode())
    assert not isinstance(garbled.value, RuntimeTooOldError)


# --- which runtime a manifest needs ------------------------------------------------------


def test_every_manifest_field_names_the_first_runtime_that_reads_it() -> None:
    missing = schema_fields() - set(FIELDS_SINCE)
    assert not missing, (
        f"manifest fields without a first runtime version: {sorted(missing)}: bump "
        "edge_runtime.__version__ and add them to edge_runtime.bundle.fields.FIELDS_SINCE"
    )
    assert not set(FIELDS_SINCE) - schema_fields()  # nothing listed that the schema lost
    assert all(version_key(v) <= version_key(__version__) for v in FIELDS_SINCE.values())


def test_a_bundle_needs_the_runtime_of_its_newest_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain = manifest_for("onnx")
    fallback = FloatFallback(ops=["head"], float_mac_fraction=0.001)
    with_fallback = plain.model_copy(
        update={"model": plain.model.model_copy(update={"float_fallback": fallback})}
    )
    paths = set(manifest_fields(json.loads(dump_manifest(with_fallback))))
    assert {"model.float_fallback.ops", "model.inputs[].shape", "golden.vectors[].input"} <= paths
    assert "model.float_fallback" not in set(manifest_fields(json.loads(dump_manifest(plain))))
    assert required_runtime(plain) == required_runtime(with_fallback) == "0.1.0"  # all 0.1.0
    # were the fallback's field new in 0.3.0: only bundles that carry it would need 0.3.0
    monkeypatch.setitem(FIELDS_SINCE, "model.float_fallback", "0.3.0")
    assert required_runtime(with_fallback) == "0.3.0" and required_runtime(plain) == "0.1.0"
    # and the packer writes it into the bundle (never lowering what the caller declared)
    base = make_model_bundle(tmp_path / "plain.efb", tiny_onnx_model(), "onnx", softmax=True)
    assert base.manifest.compatibility.min_runtime_version == "0.1.0"
    written = set(manifest_fields(json.loads(dump_manifest(base.manifest))))
    assert {"files{}", "files{}.sha256"} <= written <= set(FIELDS_SINCE)  # map keys are data
    manifest = base.manifest
    made = assemble_bundle(
        tmp_path / "fallback.efb",
        name=manifest.name,
        version=manifest.version,
        model=base.model_bytes,
        model_format="onnx",
        precision="fp32",
        preprocessing=manifest.preprocessing,
        labels=list(manifest.labels),
        postprocessing=manifest.postprocessing,
        golden_frames=[],
        golden_atol=1e-4,
        float_fallback=fallback,
    )
    assert made.manifest.compatibility.min_runtime_version == "0.3.0"
    declared = make_model_bundle(
        tmp_path / "declared.efb",
        tiny_onnx_model(),
        "onnx",
        softmax=True,
        min_runtime_version="5.0.0",
    )
    assert declared.manifest.compatibility.min_runtime_version == "5.0.0"


# --- the fleet server ---------------------------------------------------------------------


def test_the_planner_skips_devices_on_an_older_runtime_with_the_reason() -> None:
    devices = (
        TargetDevice(device_id="cam-00", runtime_version="0.1.0"),
        TargetDevice(device_id="cam-01"),  # never reported: sent, the device checks itself
        TargetDevice(device_id="cam-02", runtime_version="1.0.0"),
        TargetDevice(device_id="cam-03", runtime_version="0.1.0", pinned_bundle=OTHER),
        TargetDevice(device_id="cam-04", runtime_version="1.0.0-rc.1"),
    )
    spec = RolloutSpec(
        bundle=NEW, devices=devices, waves=(WaveSpec(percent=100),), min_runtime_version="1.0.0"
    )
    state = RolloutState.create(spec, now=0.0)
    assert state.skipped == {
        "cam-00": "runtime 0.1.0, the bundle needs >= 1.0.0",
        "cam-03": f"pinned to {OTHER[:12]}",  # pinned: the pin is the reason
        "cam-04": "runtime 1.0.0-rc.1, the bundle needs >= 1.0.0",
    }
    assert state.waves[0].devices == ("cam-01", "cam-02")
    step = state.start(0.0)
    skipped = [e for e in step.events if e.kind is EventKind.DEVICES_SKIPPED]
    assert len(skipped) == 1
    assert "cam-00 (runtime 0.1.0, the bundle needs >= 1.0.0)" in skipped[0].message
    sent = {d for a in step.actions if isinstance(a, Assign) for d in a.device_ids}
    assert sent == {"cam-01", "cam-02"}
    # without the bundle's figure (rollouts stored before it), nobody is skipped for it
    unknown = RolloutState.create(spec.model_copy(update={"min_runtime_version": None}), 0.0)
    assert set(unknown.skipped) == {"cam-03"}


@pytest.fixture
def bundle_needing(registry: Registry, make_bundle: Callable[..., bytes]) -> Callable[[str], str]:
    def make(needed: str) -> str:
        made = parse_bundle(
            make_bundle(version="2.0.0", compatibility=Compatibility(min_runtime_version=needed))
        )
        registry.import_bundle(made)
        return made.sha256

    return make


def _report(registry: Registry, device_id: str, runtime: str, at: float) -> None:
    registry.record_state(
        device_id,
        {
            "protocol": 1,
            "device_id": device_id,
            "state": "idle",
            "runtime_version": runtime,
            "updated_at": at,
        },
    )


def test_the_coordinator_refuses_a_rollout_no_target_device_can_run(
    registry: Registry, bundle_needing: Callable[[str], str]
) -> None:
    sha = bundle_needing("99.0.0")
    for name in ("cam-1", "cam-2"):
        registry.provision_device(name, ["line-a"])
        _report(registry, name, "0.1.0", 100.0)
    sent: list[Action] = []
    coordinator = RolloutCoordinator(registry, sent.extend)

    def create(now: float) -> int:
        waves = [WaveSpec(percent=100)]
        target = TargetSelector.tags(["line-a"])
        return coordinator.create(sha, target, waves, None, now, min_runtime_version="99.0.0")

    with pytest.raises(RolloutError) as refused:
        create(200.0)
    message = str(refused.value)
    assert "none of the 2 target devices that are not pinned can run this bundle" in message
    assert "cam-1: runtime 0.1.0, the bundle needs >= 99.0.0" in message
    assert "upgrade their edge_runtime" in message
    assert registry.rollouts() == [] and sent == []  # refused before anything was written

    _report(registry, "cam-2", "99.0.1", 300.0)  # one device upgraded
    rollout_id = create(400.0)
    assert sent == [Assign(device_ids=("cam-2",), bundle_sha=sha)]
    state = registry.rollout_state(rollout_id)
    assert state is not None
    assert state.skipped == {"cam-1": "runtime 0.1.0, the bundle needs >= 99.0.0"}
    assert state.spec.min_runtime_version == "99.0.0"
