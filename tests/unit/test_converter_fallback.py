"""The accuracy-aware fallback's search, the sensitivity ranking and the manifest record: plain values."""

from __future__ import annotations

import json

import pytest

from converter.fallback import FallbackLimits, Selection, Trial, search_fallback
from converter.sensitivity import FloatCandidate, QuantOp, measure_candidates, rank_ops
from edge_runtime.bundle import ManifestSpec, dump_manifest, load_manifest
from edge_runtime.bundle.manifest import FloatFallback


def _op(name: str, macs: int, inputs: tuple[str, ...] = (), kind: str = "CONV_2D") -> QuantOp:
    return QuantOp(name, kind, (f"{name}:out",), inputs, macs)


def _candidate(op: QuantOp, ratio: float, *also: QuantOp) -> FloatCandidate:
    return FloatCandidate(op, (op, *also), ratio, 0.0)


class _Model:
    """The fake quantiser and gate: the gate passes once every op in ``needed`` is in float."""

    def __init__(self, needed: set[str], slow: frozenset[str] = frozenset()) -> None:
        self.needed = needed
        self.slow = slow
        self.requests: list[list[str]] = []

    def quantize(self, excluded: list[str]) -> bytes:
        self.requests.append(sorted(excluded))
        return json.dumps(sorted(excluded)).encode()

    def check(self, model: bytes) -> Trial:
        kept = set(json.loads(model))
        found = len(self.needed & kept)
        return Trial(self.needed <= kept, 0.9 + 0.01 * found, 0.0)

    def latency(self, model: bytes) -> float:
        return 1.5 if self.slow & set(json.loads(model)) else 1.02


def test_search_keeps_the_most_helpful_ops_until_the_gate_passes() -> None:
    a, b, c, d = _op("a", 5), _op("b", 5), _op("c", 5), _op("d", 5)
    model = _Model({"a", "b"})
    outcome = search_fallback(
        [_candidate(a, 0.2), _candidate(b, 0.5), _candidate(c, 0.6), _candidate(d, 0.7)],
        100,
        model.quantize,
        model.check,
        model.latency,
    )
    assert outcome.passed and outcome.stopped == "gate passed"
    assert [op.name for op in outcome.float_ops] == ["a", "b"]
    assert outcome.float_mac_fraction == pytest.approx(0.10)
    assert model.requests == [["a"], ["a", "b"]]  # c and d never tried
    assert [step.action for step in outcome.steps] == ["kept in float", "kept in float"]
    assert outcome.steps[-1].passed and outcome.steps[-1].agreement == pytest.approx(0.92)
    assert outcome.model == model.quantize(["a", "b"])


def test_search_passes_over_an_op_beyond_the_mac_budget_and_tries_a_cheaper_one() -> None:
    big, small = _op("big", 30), _op("small", 5)
    model = _Model({"small"})
    outcome = search_fallback(
        [_candidate(big, 0.1), _candidate(small, 0.4)],
        100,
        model.quantize,
        model.check,
        model.latency,
        limits=FallbackLimits(max_float_fraction=0.10),
    )
    assert outcome.passed
    assert [op.name for op in outcome.float_ops] == ["small"]
    assert outcome.steps[0].action == "passed over (MACs)"
    assert outcome.steps[0].float_mac_fraction == pytest.approx(0.30)
    assert ["big"] not in model.requests


def test_search_takes_back_an_op_over_the_latency_limit() -> None:
    slow, fast = _op("slow", 1), _op("fast", 1)
    model = _Model({"fast"}, slow=frozenset({"slow"}))
    outcome = search_fallback(
        [_candidate(slow, 0.1), _candidate(fast, 0.2)],
        100,
        model.quantize,
        model.check,
        model.latency,
    )
    assert outcome.passed
    assert [op.name for op in outcome.float_ops] == ["fast"]
    assert outcome.steps[0].action == "taken back (latency)"
    assert outcome.steps[0].latency_ratio == pytest.approx(1.5)
    assert model.requests == [["slow"], ["fast"]]


def test_search_stops_at_the_step_limit_and_keeps_the_last_model() -> None:
    ops = [_op(f"op{i}", 1) for i in range(5)]
    model = _Model({"never"})
    outcome = search_fallback(
        [_candidate(op, 0.1 + i / 10) for i, op in enumerate(ops)],
        100,
        model.quantize,
        model.check,
        model.latency,
        limits=FallbackLimits(max_steps=3),
    )
    assert not outcome.passed
    assert "3 re-quantisations" in outcome.stopped
    assert len(model.requests) == 3
    assert [op.name for op in outcome.float_ops] == ["op0", "op1", "op2"]


def test_candidates_that_do_not_help_are_never_tried() -> None:
    model = _Model({"a"})
    outcome = search_fallback(
        [_candidate(_op("a", 1), 1.0), _candidate(_op("b", 1), 1.3)],
        100,
        model.quantize,
        model.check,
        model.latency,
    )
    assert not outcome.passed and outcome.steps == [] and model.requests == []
    assert outcome.model is None


def test_a_group_brings_its_readers_and_counts_each_op_once() -> None:
    a = _op("a", 4)
    b = _op("b", 6, inputs=("a:out",))
    model = _Model({"a", "b"})
    outcome = search_fallback(
        [_candidate(a, 0.1, b), _candidate(b, 0.2)],
        100,
        model.quantize,
        model.check,
        model.latency,
    )
    assert outcome.passed and len(outcome.steps) == 1
    assert outcome.float_mac_fraction == pytest.approx(0.10)


@pytest.mark.parametrize(
    "kwargs", [{"max_float_fraction": 1.5}, {"max_latency_ratio": 0.9}, {"max_steps": 0}]
)
def test_limits_refuse_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FallbackLimits(**kwargs)  # type: ignore[arg-type]


def test_measure_candidates_groups_readers_and_ranks_by_what_they_remove() -> None:
    first = _op("first", 10)
    second = _op("second", 10, inputs=("first:out",))
    add = _op("add", 0, inputs=("first:out", "second:out"), kind="ADD")
    huge = _op("huge", 80, inputs=("add:out",))
    errors = {(): 1.0, ("add", "first", "second"): 0.5, ("add", "second"): 0.8}
    asked: list[tuple[str, ...]] = []

    def error(excluded: list[str]) -> float:
        asked.append(tuple(sorted(excluded)))
        return errors.get(tuple(sorted(excluded)), 1.0)

    ranked = measure_candidates([first, second, add, huge], error, max_float_fraction=0.25)
    assert [c.op.name for c in ranked] == ["first", "second"]  # huge (80%) is not measured
    assert [op.name for op in ranked[0].group] == ["first", "second", "add"]
    assert ranked[0].error_ratio == pytest.approx(0.5) and ranked[0].gain == pytest.approx(0.5)
    assert ranked[0].mac_share == pytest.approx(0.2)
    assert ("huge",) not in asked


def test_rank_ops_attributes_the_noise_each_op_adds() -> None:
    conv = _op("conv", 100, inputs=("image",))
    relu = _op("relu", 0, inputs=("conv:out",), kind="RELU")
    head = _op("head", 10, inputs=("relu:out",), kind="FULLY_CONNECTED")
    errors = {
        "conv:out": (100.0, 1.0),  # NSR 1%
        "relu:out": (100.0, 1.0),  # adds nothing
        "head:out": (100.0, 11.0),  # NSR 11%: adds 10 points
    }
    report = rank_ops([conv, relu, head, _op("unmeasured", 5)], errors, "tflite", 8)
    assert [row.op.name for row in report.ranked] == ["head", "conv", "relu"]
    assert report.ranked[0].added_noise == pytest.approx(0.10)
    assert report.ranked[0].sqnr_db == pytest.approx(9.586, abs=1e-3)
    assert report.ranked[2].added_noise == 0.0
    assert report.total_macs == 115 and report.images == 8
    assert report.to_dict()["ops"][0]["op"] == "head"


def _manifest(float_fallback: FloatFallback | None) -> ManifestSpec:
    tensor = {"name": "x", "shape": [1, 4, 4, 3], "dtype": "float32"}
    return ManifestSpec.model_validate(
        {
            "name": "m",
            "version": "1.0.0",
            "model": {
                "file": "model.onnx",
                "format": "onnx",
                "precision": "int8",
                "inputs": [tensor],
                "outputs": [{"name": "y", "shape": [1, 2], "dtype": "float32"}],
                "float_fallback": float_fallback.model_dump() if float_fallback else None,
            },
            "preprocessing": {"height": 4, "width": 4},
            "labels": ["a", "b"],
            "postprocessing": {"apply_softmax": True},
        }
    )


def test_the_manifest_records_ops_in_float_and_omits_the_field_without_fallback() -> None:
    plain = dump_manifest(_manifest(None))
    assert b"float_fallback" not in plain  # the same bytes as before the field existed
    mixed = _manifest(FloatFallback(ops=["head/MatMul;"], float_mac_fraction=0.001))
    loaded = load_manifest(dump_manifest(mixed))
    assert loaded.model.float_fallback == FloatFallback(
        ops=["head/MatMul;"], float_mac_fraction=0.001
    )
    with pytest.raises(ValueError):
        FloatFallback(ops=[], float_mac_fraction=0.0)


def test_an_op_reading_the_model_input_is_a_candidate_even_without_macs() -> None:
    transpose = _op("transpose", 0, inputs=("image",), kind="Transpose")
    conv = _op("conv", 10, inputs=("transpose:out",))
    ranked = measure_candidates(
        [transpose, conv], lambda excluded: 0.5 if "transpose" in excluded else 1.0
    )
    assert [c.op.name for c in ranked] == ["transpose", "conv"]
    assert [op.name for op in ranked[0].group] == ["transpose", "conv"]  # the input stays float


class _Chooser(_Model):
    """The fake quantiser with a selection figure: each op in float removes ``gains[op]`` of
    the score error (an op missing from ``gains`` removes nothing)."""

    def __init__(self, needed: set[str], gains: dict[str, float]) -> None:
        super().__init__(needed)
        self.gains = gains
        self.checked: list[list[str]] = []

    def check(self, model: bytes) -> Trial:
        self.checked.append(json.loads(model))
        return super().check(model)

    def select(self, model: bytes) -> Selection:
        kept = json.loads(model)
        return Selection(1.0 - sum(self.gains.get(op, 0.0) for op in kept), 0.9)


def test_a_step_that_does_not_help_on_the_selection_set_is_taken_back_and_costs_no_macs() -> None:
    useless, a, b = _op("useless", 3), _op("a", 2), _op("b", 2)
    model = _Chooser({"a", "b"}, {"a": 0.2, "b": 0.1})
    outcome = search_fallback(
        [_candidate(useless, 0.1), _candidate(a, 0.2), _candidate(b, 0.3)],
        100,
        model.quantize,
        model.check,
        model.latency,
        limits=FallbackLimits(max_float_fraction=0.05),
        select=model.select,
        baseline=Selection(1.0, 0.9),
    )
    assert outcome.passed
    assert [op.name for op in outcome.float_ops] == ["a", "b"]  # fits only without "useless"
    assert outcome.float_mac_fraction == pytest.approx(0.04)
    assert [step.action for step in outcome.steps] == [
        "taken back (no gain)",
        "kept in float",
        "kept in float",
    ]
    first = outcome.steps[0]
    assert first.agreement is None and first.selection == Selection(1.0, 0.9)
    assert model.checked == [["a"], ["a", "b"]]  # the gate judged only the kept steps
    assert outcome.steps[2].selection == Selection(pytest.approx(0.7), 0.9)  # type: ignore[arg-type]
    assert outcome.to_dict()["full_int8_selection"] == {"score_error": 1.0, "agreement": 0.9}
    assert outcome.to_dict()["steps"][0]["selection"] == {"score_error": 1.0, "agreement": 0.9}


def test_the_gate_passing_does_not_keep_a_step_the_selection_set_did_not_choose() -> None:
    model = _Chooser({"a"}, {"b": 0.1})  # the gate wants "a"; only "b" helps on selection
    outcome = search_fallback(
        [_candidate(_op("a", 1), 0.1), _candidate(_op("b", 1), 0.2)],
        100,
        model.quantize,
        model.check,
        model.latency,
        select=model.select,
        baseline=Selection(1.0, 0.9),
    )
    assert not outcome.passed
    assert [op.name for op in outcome.float_ops] == ["b"]
    assert model.checked == [["b"]]
    assert [s.action for s in outcome.steps] == ["taken back (no gain)", "kept in float"]


def test_selection_figures_compare_by_error_then_agreement() -> None:
    assert Selection(0.1, 0.5).better_than(Selection(0.2, 0.9))
    assert Selection(0.1, 0.9).better_than(Selection(0.1, 0.8))
    assert not Selection(0.1, 0.8).better_than(Selection(0.1, 0.8))
    with pytest.raises(ValueError, match="baseline"):
        search_fallback([], 1, bytes, lambda m: Trial(True, 1.0, 0.0), len, select=len)  # type: ignore[arg-type]
