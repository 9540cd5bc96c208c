"""The main job on one machine, as far as it is built today.

The full demo (fleet server, five devices, staged rollouts, a bad version
rolled back) is issue #8. Until its parts exist this runs the most complete
path that does: synthetic conveyor data -> a reference model trained from
scratch -> float32 TFLite -> a bundle with golden vectors and a measured
quality report -> the device side reading it without trust, replaying its
golden vectors and classifying frames -> a tampered copy refused.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from edge_runtime import __version__
from edge_runtime.bundle import Bundle, DatasetRef, Postprocessing, Provenance, read_bundle
from edge_runtime.bundle.ustar import sha256_hex
from edge_runtime.classifier import Classifier
from edge_runtime.errors import BundleError
from edgefleet.commands._console import progress_bar

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger(__name__)

CONFIDENCE_THRESHOLD = 0.4


@dataclass(frozen=True)
class DemoOptions:
    """What the demo does and where it writes."""

    workdir: Path
    data: Path | None = None
    fast: bool = False
    seed: int = 0


@dataclass(frozen=True)
class _DeviceRun:
    backend: str
    golden_vectors: int
    accuracy: float
    p50_ms: float
    p95_ms: float


def _progress(console: Console) -> Progress:
    return progress_bar(console, indent="  ")


class _Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.workdir = options.workdir

    def data(self) -> tuple[Any, Any, Path]:
        from converter.dataset import LabelledFolder
        from converter.synthetic import write_dataset

        if self.options.data is None:
            per_train, per_val = (40, 12) if self.options.fast else (100, 30)
            self.console.print(
                f"[bold]1/6 data[/]: drawing a synthetic conveyor set "
                f"({per_train}+{per_val} images per class)"
            )
            root = self.workdir / "data"
            write_dataset(root, per_train, per_val, size=128, seed=self.options.seed)
        else:
            self.console.print(f"[bold]1/6 data[/]: using {self.options.data}")
            root = self.options.data
        train = LabelledFolder.scan(root / "train")
        val = LabelledFolder.scan(root / "val", labels=train.labels)
        self.console.print(
            f"  {len(train.items)} training and {len(val.items)} validation images, "
            f"classes: {', '.join(train.labels)}"
        )
        return train, val, root

    def train(self, train: Any, val: Any) -> tuple[Any, Path, int]:
        from converter.reference import train_reference

        size = 64 if self.options.fast else 96
        epochs = 10 if self.options.fast else 15
        self.console.print(
            f"[bold]2/6 train[/]: a small reference CNN from scratch, {size}x{size}, {epochs} epochs"
        )
        with _progress(self.console) as progress:
            task = progress.add_task("training", total=epochs)

            def on_epoch(epoch: int, logs: dict[str, float]) -> None:
                progress.update(
                    task,
                    advance=1,
                    description=f"training (loss {logs.get('loss', 0):.3f}, "
                    f"val acc {logs.get('val_accuracy', 0):.2f})",
                )

            trained = train_reference(
                train,
                val,
                arch="tiny",
                size=size,
                epochs=epochs,
                seed=self.options.seed,
                on_epoch=on_epoch,
            )
        keras_path = self.workdir / "reference.keras"
        trained.model.save(keras_path)
        self.console.print(
            f"  Keras validation accuracy: {100 * (trained.val_accuracy or 0):.1f}%, "
            f"saved {keras_path}"
        )
        return trained, keras_path, size

    def bundle(self, trained: Any, keras_path: Path, size: int, val: Any, data_root: Path) -> Path:
        from converter.convert import tool_versions
        from converter.packaging import assemble_bundle
        from converter.parity import compare_scores
        from converter.reference import export_tflite_fp32, load_tensors
        from edgefleet.commands.bundle import print_summary

        self.console.print(
            "[bold]3/6 convert[/]: float32 TFLite "
            "(quantisation arrives with `edgefleet convert`, issue #3)"
        )
        tflite = export_tflite_fp32(trained.model, size)
        (self.workdir / "reference.tflite").write_bytes(tflite)
        self.console.print(f"  {self.workdir / 'reference.tflite'} ({len(tflite) / 1024:.0f} KiB)")

        self.console.print(
            "[bold]4/6 bundle[/]: measure parity through the runtime, pick golden frames, pack, check"
        )
        frames = list(val.frames())
        step = max(1, len(frames) // 4)
        common: dict[str, Any] = {
            "name": "conveyor-demo",
            "version": "1.0.0",
            "model": tflite,
            "model_format": "tflite",
            "precision": "fp32",
            "preprocessing": trained.preprocessing,
            "labels": trained.labels,
            "postprocessing": Postprocessing(
                apply_softmax=False, top_k=3, confidence_threshold=CONFIDENCE_THRESHOLD
            ),
            "golden_frames": [(frame, val.labels[label]) for _, frame, label in frames[::step][:4]],
            "golden_atol": 1e-3,
            "description": "Tiny reference CNN trained on the synthetic conveyor set (demo)",
            "provenance": Provenance(
                source_model_sha256=sha256_hex(keras_path.read_bytes()),
                parity_data_sha256=val.sha256(),
                created_by=f"edgefleet {__version__}",
                tools=tool_versions(),
            ),
        }
        draft_path = self.workdir / "draft.efb"
        draft = Classifier(assemble_bundle(draft_path, **common))
        draft_path.unlink()
        x_val, y_val = load_tensors(val, trained.preprocessing)
        float_scores = trained.model.predict(x_val, batch_size=64, verbose=0).astype(np.float32)
        scores = np.stack([draft.scores(frame) for _, frame, _ in frames])
        report = compare_scores(
            float_scores,
            scores,
            y_val,
            trained.labels,
            DatasetRef(name=str(data_root / "val"), sha256=val.sha256(), num_images=len(y_val)),
        )
        path = self.workdir / "conveyor-demo-1.0.0.efb"
        written = assemble_bundle(path, **common, quality=report)
        self.console.print(f"  wrote {path} ({written.size / 1024:.0f} KiB)\n")
        print_summary(written, self.console)
        return path

    def device(self, path: Path, val: Any) -> _DeviceRun:
        self.console.print(
            "\n[bold]5/6 device[/]: read the bundle without trusting it, smoke-test, classify"
        )
        classifier = Classifier(read_bundle(path), backend="auto", threads=1)
        golden = classifier.replay_golden()
        self.console.print(
            f"  smoke test: {golden.vectors} golden vectors reproduced on "
            f"{classifier.backend.name} (max score error {golden.max_abs_error:.2e})"
        )
        latencies: list[float] = []
        correct = 0
        frames = list(val.frames())
        with _progress(self.console) as progress:
            task = progress.add_task("classifying validation frames", total=len(frames))
            for _, frame, label in frames:
                result = classifier.classify(frame)
                latencies.append(result.total_ms)
                correct += result.answer.label == val.labels[label]
                progress.advance(task)
        p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95]))
        run = _DeviceRun(classifier.backend.name, golden.vectors, correct / len(frames), p50, p95)
        self.console.print(
            f"  {len(frames)} frames: accuracy {100 * run.accuracy:.1f}% (answers under the "
            f"{CONFIDENCE_THRESHOLD} confidence threshold count as wrong); per frame "
            f"(preprocess + invoke + postprocess) p50 {p50:.3f} ms, p95 {p95:.3f} ms"
        )
        return run

    def tamper(self, path: Path, model_size: int) -> bool:
        self.console.print(
            "[bold]6/6 tamper[/]: flip one byte of the model inside a copy of the bundle"
        )
        data = bytearray(path.read_bytes())
        data[data.index(b"TFL3") + model_size // 2] ^= 0x01
        tampered = self.workdir / "tampered.efb"
        tampered.write_bytes(bytes(data))
        try:
            read_bundle(tampered)
        except BundleError as exc:
            self.console.print(f"  refused: {exc}")
            self.console.print("  the device keeps serving the verified bundle")
            return True
        self.console.print("  [red]the tampered bundle was accepted: this is a bug[/]")
        return False

    def summary(self, bundle: Bundle, path: Path, run: _DeviceRun, took: float) -> None:
        quality = bundle.manifest.quality
        table = Table(title="Summary", show_header=False, box=None, padding=(0, 2))
        table.add_row("bundle", f"{path} ({bundle.id[:19]}…)")
        if quality is not None:
            table.add_row(
                "float vs bundle",
                f"accuracy {100 * (quality.float_accuracy or 0):.1f}% vs "
                f"{100 * quality.accuracy:.1f}%, "
                f"top-1 agreement {100 * (quality.top1_agreement or 0):.1f}%",
            )
        table.add_row(
            "device",
            f"{run.backend}, {run.golden_vectors} golden vectors ok, "
            f"p50 {run.p50_ms:.3f} ms per frame",
        )
        table.add_row("tampered copy", "refused")
        table.add_row(
            "not built yet",
            "quantisation (#3), camera runtime (#4), signing and updates (#5), "
            "fleet server (#6), benchmarks (#7), fleet demo (#8)",
        )
        table.add_row("took", f"{took:.0f} s; look again: edgefleet bundle inspect {path}")
        self.console.print()
        self.console.print(table)


def run_demo(options: DemoOptions, console: Console) -> int:
    """Run the demo; return the process exit status."""
    started = time.perf_counter()
    console.rule("[bold]edgefleet demo")
    console.print(
        "[yellow]The full end-to-end demo (fleet server, five devices, staged rollouts with a bad "
        "version rolled back) is issue #8 and not built yet.[/]\n"
        "This run covers the most complete path that exists today: data -> trained model -> "
        "TFLite -> verified bundle -> device-side smoke test and classification -> tamper refusal.\n"
    )
    if options.workdir.exists():
        shutil.rmtree(options.workdir)
    options.workdir.mkdir(parents=True)
    demo = _Demo(options, console)
    train, val, data_root = demo.data()
    trained, keras_path, size = demo.train(train, val)
    path = demo.bundle(trained, keras_path, size, val, data_root)
    run = demo.device(path, val)
    bundle = read_bundle(path)
    if not demo.tamper(path, len(bundle.model_bytes)):
        return 1
    demo.summary(bundle, path, run, time.perf_counter() - started)
    return 0
