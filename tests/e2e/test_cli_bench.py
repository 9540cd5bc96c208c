"""`edgefleet bench` as a user runs it, on tiny real bundles, in a subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from converter.synthetic import draw_frame
from edge_runtime.bench.report import BenchReport, ConfigResult
from tests.media import make_bundle
from tests.models import slow_onnx_model, tiny_onnx_model

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
FAST = ["--warmup", "2", "--runs", "24"]


def run(*args: str, prelude: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    command = [*EDGEFLEET, *args]
    if prelude is not None:  # run the CLI in-process after some setup (e.g. hide a package)
        script = f"{prelude}\nimport sys\nfrom edgefleet.cli import main\nsys.argv = {['edgefleet', *args]!r}\nmain()"
        command = [sys.executable, "-c", script]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, tflite_model: bytes) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench-bundles")
    made = {
        "tflite": folder / "tiny-tflite.efb",
        "onnx": folder / "tiny-onnx.efb",
        "slow": folder / "slow-onnx.efb",
    }
    make_bundle(made["tflite"], tflite_model, "tflite")
    make_bundle(made["onnx"], tiny_onnx_model(), "onnx", softmax=True)
    # same bundle name, format and precision as "onnx": the same configuration, made slower
    make_bundle(made["slow"], slow_onnx_model(rows=60), "onnx", softmax=True)
    return made


@pytest.fixture(scope="module")
def labelled_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for label in ("cardboard", "glass"):
        (folder / label).mkdir()
        for index in range(3):
            cv2.imwrite(str(folder / label / f"{index}.jpg"), draw_frame(label, index, 120, 160))
    return folder


def test_bench_group_lists_its_commands() -> None:
    result = run("bench", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("latency", "compare", "swap", "fleet"):
        assert f"  {command} " in result.stdout, command


def test_latency_report_has_every_field(
    bundles: dict[str, Path], labelled_images: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "box.yaml"
    profile.write_text(
        "name: box\ncores: 2\nthreads: [1]\nbackends: [litert, onnxruntime]\n"
        "budgets:\n  - family: tiny\n    match: ['tiny-*']\n    p95_ms: {fp32: 1000}\n"
    )
    out = tmp_path / "report"
    result = run(
        "bench", "latency", str(bundles["tflite"]), str(bundles["onnx"]),
        "--threads", "1,2", "--images", str(labelled_images), "--profile", str(profile),
        "--single-stream", "--min-queries", "10", "--min-duration", "0.001",
        "--warmup", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "single stream" in result.stdout and "VALID" in result.stdout
    data = json.loads((out / "latency.json").read_text())
    report = BenchReport.model_validate(data)
    assert report.profile == "box"
    assert {(r.format, r.backend, r.threads) for r in report.results} == {
        ("tflite", "litert", 1),
        ("tflite", "litert", 2),
        ("onnx", "onnxruntime", 1),
        ("onnx", "onnxruntime", 2),
    }
    for raw in data["results"]:
        assert set(raw) == set(ConfigResult.model_fields)
    for r in report.results:
        assert r.runs >= 10 and len(r.samples.end_to_end) == r.runs
        assert len(r.samples.bare_invoke) >= r.runs - 8
        assert r.stages.decode is not None  # images are decoded in the timed path
        e = r.stages.end_to_end
        assert 0 < e.min <= e.p50 <= e.p90 <= e.p95 <= e.p99 <= e.max
        assert e.p50 >= r.stages.invoke.p50
        assert r.init_ms > 0 and r.first_inference_ms > 0 and r.load_ms > 0
        assert r.throughput_fps > 0 and r.cpu_percent > 0
        assert r.accuracy is not None and r.accuracy_images == 6
        assert r.budget_p95_ms == 1000 and r.budget_pass is True
        assert r.single_stream is not None and r.single_stream.valid
        assert r.bare.bare_invoke.p50 > 0 and r.bare.invoke_ratio > 0
    assert report.results[0].xnnpack is not None  # LiteRT says whether XNNPACK is on
    assert report.environment.libraries["onnxruntime"]
    assert report.environment.logical_cores >= 1
    with (out / "latency.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and float(rows[0]["end_to_end_p95_ms"]) > 0
    html = (out / "report.html").read_text()
    assert "invoke/bare" in html
    for png in ("latency-cdf.png", "fp32-vs-int8.png", "stages.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG"), png
        assert png in html
    rendered = run("bench", "report", str(out / "latency.json"), "--out", str(tmp_path / "again"))
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "again" / "stages.png").exists()


def test_latency_without_matplotlib_names_the_extra_and_still_writes_data(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = run(
        "bench", "latency", str(bundles["onnx"]), *FAST, "--out", str(out),
        prelude="import sys; sys.modules['matplotlib'] = None",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pip install 'edgefleet[plot]'" in result.stdout
    report = BenchReport.model_validate_json((out / "latency.json").read_text())
    assert report.results[0].stages.decode is None  # synthetic frames: nothing to decode
    assert (out / "latency.csv").exists() and (out / "report.html").exists()
    assert not list(out.glob("*.png"))


def test_compare_flags_a_slowed_bundle_and_passes_identical_runs(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    for name, bundle in (("a", "onnx"), ("b", "slow"), ("a2", "onnx")):
        result = run("bench", "latency", str(bundles[bundle]), *FAST, "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    a, b, a2 = (str(tmp_path / n / "latency.json") for n in ("a", "b", "a2"))

    slowed = run("bench", "compare", a, b, "--threshold", "10")
    assert slowed.returncode == 3, slowed.stdout + slowed.stderr
    assert "slower" in slowed.stdout and "regression" in slowed.stderr

    same = run("bench", "compare", a, a, "--threshold", "0")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "same" in same.stdout

    # a second run of the same bundle: its invoke takes ~0.04 ms, so scheduler noise on a
    # shared 2-core machine alone can move the median by half; only a tripling is a regression
    rerun = run("bench", "compare", a, a2, "--threshold", "200", "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert json.loads(rerun.stdout)["rows"][0]["verdict"] in ("same", "faster")


def test_swap_reports_the_gap(bundles: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "swap.json"
    result = run(
        "bench", "swap", str(bundles["onnx"]), "--swaps", "2", "--fps", "30", "--json", str(out)
    )
    assert result.returncode in (0, 3), result.stderr  # 3: past the 2x target on a busy machine
    assert "worst gap" in result.stdout
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 2
    assert all(run["steady_interval_ms"] > 20 for run in data["runs"])  # ~33 ms at 30 fps
    assert data["worst_gap_ratio"] >= 1.0
