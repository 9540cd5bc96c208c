"""Accuracy-aware quantisation targets (issue #19), measured in one run and printed side by side.

    .venv/bin/python benchmarks/quant_fallback.py --model mnv2-a050-128.keras [--data ../shared/datasets/trashnet]

For a model trained with `edgefleet convert train-reference` *without*
`--quant-noise` (the kind of model a user brings), it runs, as a user would:

1. `edgefleet convert MODEL --formats tflite,onnx --precision int8` with the
   defaults (the fallback on), 200 calibration photos from DATA/train and the
   328 parity photos of DATA/val, timed: the conversion time target;
2. the same with `--no-fallback` (full int8, round to nearest) and with
   `--no-fallback --rounding bias-correction`: what better rounding alone
   moves;
3. every bundle again on `--holdout` class-balanced DATA/train photos that
   were not calibration photos, against the float model (the fallback chose
   its ops on val/, so this is the check it did not tune on);
4. invoke p50 on one thread of fp32, full int8 and the fallback's model
   (LiteRT for TFLite, ONNX Runtime for ONNX), each timed alone in blocks of
   25 invokes, the blocks in turns (AAA BBB CCC AAA ...) in the same process
   so that other load hits all of them alike; medians and ratios.

It prints each target next to its figure and writes the JSON summary to
benchmarks/reports/quant-fallback-<model stem>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
EDGEFLEET = [sys.executable, "-m", "edgefleet"]
CALIBRATION_SAMPLES = 200
SELECTION_SAMPLES = 300
"""The converter's default ``--selection-samples``: the train/ photos after the calibration
ones in the same class-balanced draw, on which the fallback chooses its ops."""
CONVERT_ARGS: list[str] = []
"""Extra `edgefleet convert` options for every conversion (``--convert-args``)."""


def run_convert(
    model: Path, data: Path, out: Path, *extra: str
) -> tuple[list[dict[str, Any]], float]:
    """One `edgefleet convert` run (JSON summary) and its wall time."""
    command = [
        *EDGEFLEET,
        "convert",
        str(model),
        "--calibration",
        str(data / "train"),
        "--parity",
        str(data / "val"),
        "--calibration-samples",
        str(CALIBRATION_SAMPLES),
        "--formats",
        "tflite,onnx",
        "--mean",
        "127.5",
        "--std",
        "127.5",
        "--interpolation",
        "area",
        "--out",
        str(out),
        "--json",
        "--keep-failed",
        *CONVERT_ARGS,
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    (out / "stderr.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "stderr.log").write_text(result.stderr)
    if result.returncode not in (0, 3):
        sys.exit(f"conversion failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), wall


def holdout_folder(data: Path, count: int, work: Path) -> Path:
    """``count`` class-balanced train/ photos that are neither calibration nor selection
    photos, linked (not copied) into a labelled folder under ``work``.

    The converter calibrates on ``balanced(CALIBRATION_SAMPLES)`` and its fallback
    chooses on the next ``SELECTION_SAMPLES`` of the same draw; the held-out photos
    are the ``count`` after those.
    """
    import shutil

    from converter.dataset import LabelledFolder

    train = LabelledFolder.scan(data / "train")
    seen = {path for path, _ in train.balanced(CALIBRATION_SAMPLES + SELECTION_SAMPLES).items}
    folder = work / "holdout"
    shutil.rmtree(folder, ignore_errors=True)
    for path, label in train.balanced(CALIBRATION_SAMPLES + SELECTION_SAMPLES + count).items:
        if path not in seen:
            link = folder / train.labels[label] / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return folder


def holdout_agreement(model: Path, bundles: dict[str, Path], folder: Path) -> dict[str, Any]:
    """Agreement and accuracy drop of each bundle against the float model on ``folder``."""
    from converter.dataset import LabelledFolder
    from converter.source import load_source_model
    from edge_runtime.bundle import read_bundle
    from edge_runtime.classifier import Classifier
    from edge_runtime.postprocess import softmax
    from edge_runtime.preprocess import Preprocessor

    first = read_bundle(next(iter(bundles.values())))
    parity = LabelledFolder.scan(folder, first.manifest.labels)
    frames, labels = [], []
    for _, frame, label in parity.frames():
        frames.append(frame)
        labels.append(label)
    y = np.asarray(labels)
    contract = first.manifest.preprocessing
    from edge_runtime.bundle import TensorSpec

    spec = TensorSpec(name="image", shape=[1, contract.height, contract.width, 3], dtype="float32")
    pre = Preprocessor(contract, spec)
    source = load_source_model(model)
    raw = np.concatenate([source.float_scores(pre(f).astype(np.float32)) for f in frames])
    if not (np.all(raw >= 0) and np.allclose(raw.sum(axis=1), 1.0, atol=1e-3)):
        raw = softmax(raw)
    float_pred = raw.argmax(axis=1)
    figures: dict[str, Any] = {
        "images": len(frames),
        "float_accuracy": float(np.mean(float_pred == y)),
    }
    for name, path in bundles.items():
        classifier = Classifier(read_bundle(path))
        pred = np.array([classifier.scores(f).argmax() for f in frames])
        figures[name] = {
            "agreement": float(np.mean(pred == float_pred)),
            "accuracy": float(np.mean(pred == y)),
            # in whole photos (4 of 400 is exactly 1.00 point, not 1.0000000000000009)
            "accuracy_drop_points": round(
                100.0 * float(np.sum(float_pred == y) - np.sum(pred == y)) / len(y), 4
            ),
        }
    return figures


def invoke_p50(
    models: dict[str, tuple[str, bytes]], rounds: int, block: int = 25
) -> dict[str, float]:
    """Invoke p50 (ms) of each model, one thread, each timed *alone*: blocks of ``block``
    invokes in a row (after 3 untimed ones), the models' blocks in turns (ABC ABC ...)
    so that a change of load hits every model alike.

    Timing every model once in turns (ABCDEF ABCDEF ...) measured each invoke with the
    caches full of the other models' weights and activations: it made every model slower
    (full int8 TFLite 0.58 against 0.48 ms alone) and a model with float layers, whose
    float weights and activations are more bytes to fetch again, slower still (the 14.2%
    TFLite fallback model x1.11 of full int8 in turns, x1.23 in an earlier run, against
    x1.06 alone and x1.06 by the converter's back-to-back pairs). A device runs its one
    model over and over, which is what a block measures.
    """
    from edge_runtime.backends import create_backend

    backends = {
        name: create_backend("auto", fmt, blob, threads=1) for name, (fmt, blob) in models.items()
    }
    tensors = {}
    rng = np.random.default_rng(0)
    for name, backend in backends.items():
        spec = backend.inputs[0]
        shape = [max(1, d) for d in spec.shape]
        if spec.dtype in ("int8", "uint8"):
            info = np.iinfo(spec.dtype)
            tensors[name] = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(
                spec.dtype
            )
        else:
            tensors[name] = rng.uniform(-1, 1, size=shape).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(max(1, rounds // block)):
        for name, backend in backends.items():
            for _ in range(3):
                backend.invoke(tensors[name])
            for _ in range(block):
                start = time.perf_counter()
                backend.invoke(tensors[name])
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in times.items()}


def _final(row: dict[str, Any]) -> dict[str, Any] | None:
    """The fallback's final model of one conversion: its bundle, val/ agreement, float ops."""
    fallback = row.get("fallback")
    if not fallback:
        return None
    bundle = row["bundle"] if fallback["passed"] else fallback.get("bundle")
    if not bundle:
        return None
    report = json.loads(Path(row["json_report"]).read_text())
    kept = [s for s in report["fallback"]["steps"] if s["action"] == "kept in float"]
    return {
        "bundle": bundle,
        "val_agreement": kept[-1]["agreement"] if kept else row["top1_agreement"],
        "ops": len(fallback["float_ops"]),
        "float_mac_fraction": fallback["float_mac_fraction"],
        "selection_set": fallback.get("selection_set", "parity"),
        "steps": [
            {
                k: s.get(k)
                for k in ("action", "kind", "float_mac_fraction", "agreement", "selection")
            }
            for s in report["fallback"]["steps"]
            if s["action"] != "passed over (MACs)"
        ],
    }


def _print_finals(
    by: dict[str, dict[str, Any]], finals: dict[str, dict[str, Any]], holdout: dict[str, Any]
) -> None:
    print("the fallback's final models (the last kept step, written even when it failed):")
    for fmt in ("tflite", "onnx"):
        full = by["nearest"][fmt]
        held = holdout.get(fmt, {})
        print(
            f"  {fmt:6} full int8: val/ {100 * full['top1_agreement']:.2f}%"
            + (f", held-out {100 * held['nearest']['agreement']:.2f}%" if held else "")
        )
        for name, f in finals[fmt].items():
            print(
                f"  {fmt:6} {name}: {f['ops']} ops, {100 * f['float_mac_fraction']:.2f}% of MACs, "
                f"chosen on {f['selection_set']}; val/ {100 * f['val_agreement']:.2f}%"
                + (f", held-out {100 * held[name]['agreement']:.2f}%" if held else "")
            )


def _model_bytes(bundle: Path) -> tuple[str, bytes]:
    from edge_runtime.bundle import read_bundle

    b = read_bundle(bundle)
    return b.manifest.model.format, b.model_bytes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="trained .keras model (no --quant-noise)"
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "trashnet"
    )
    parser.add_argument("--holdout", type=int, default=400, help="held-out train/ photos (0 skips)")
    parser.add_argument("--rounds", type=int, default=200, help="timed invokes per model")
    parser.add_argument(
        "--parity-choice",
        action="store_true",
        help="also convert with --selection-samples 0 (the fallback chooses on val/, as before)",
    )
    parser.add_argument(
        "--no-bias", action="store_true", help="skip the --rounding bias-correction conversion"
    )
    parser.add_argument(
        "--also-fraction",
        type=float,
        help="also convert with this --max-float-fraction (percent): what the fallback needs "
        "when the default 10%% is not enough",
    )
    parser.add_argument(
        "--convert-args",
        default="",
        help="extra options for every conversion, one string (e.g. "
        "'--tflite-calibration mse --onnx-calibration mse')",
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="JSON summary (default benchmarks/reports/quant-fallback-STEM.json)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "edgefleet-quant-fallback"
    )
    args = parser.parse_args()
    CONVERT_ARGS.extend(shlex.split(args.convert_args))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work / args.model.stem
    work.mkdir(parents=True, exist_ok=True)

    default, wall = run_convert(args.model, args.data, work / "default")
    nearest, _ = run_convert(args.model, args.data, work / "nearest", "--no-fallback")
    runs = [("default", default), ("nearest", nearest)]
    corrected: list[dict[str, Any]] | None = None
    if not args.no_bias:
        corrected, _ = run_convert(
            args.model, args.data, work / "bias", "--no-fallback", "--rounding", "bias-correction"
        )
        runs.append(("bias", corrected))
    if args.also_fraction is not None:
        wider, _ = run_convert(
            args.model, args.data, work / "wider", "--max-float-fraction", f"{args.also_fraction:g}"
        )
        runs.append(("wider", wider))
    if args.parity_choice:
        chosen_on_parity, _ = run_convert(
            args.model, args.data, work / "parity-chosen", "--selection-samples", "0"
        )
        runs.append(("parity_chosen", chosen_on_parity))
    by = {run: {r["format"]: r for r in rows} for run, rows in runs}
    finals = {
        fmt: {f"{run} final": final for run, _ in runs if (final := _final(by[run][fmt]))}
        for fmt in ("tflite", "onnx")
    }
    holdout = {}
    if args.holdout > 0:
        folder = holdout_folder(args.data, args.holdout, work)
        for fmt in ("tflite", "onnx"):
            holdout[fmt] = holdout_agreement(
                args.model,
                {
                    **{run: Path(by[run][fmt]["bundle"]) for run, _ in runs},
                    **{name: Path(f["bundle"]) for name, f in finals[fmt].items()},
                },
                folder,
            )
    _print_finals(by, finals, holdout)
    from converter.source import load_source_model

    source = load_source_model(args.model)
    models = {
        **{
            f"{fmt} wider": _model_bytes(Path(by["wider"][fmt]["bundle"]))
            for fmt in ("tflite", "onnx")
            if "wider" in by
        },
        "tflite fp32": ("tflite", source.tflite_fp32()),
        "tflite int8": _model_bytes(Path(by["nearest"]["tflite"]["bundle"])),
        "tflite fallback": _model_bytes(Path(by["default"]["tflite"]["bundle"])),
        "onnx fp32": ("onnx", source.onnx_fp32()),
        "onnx int8": _model_bytes(Path(by["nearest"]["onnx"]["bundle"])),
        "onnx fallback": _model_bytes(Path(by["default"]["onnx"]["bundle"])),
    }
    p50 = invoke_p50(models, args.rounds)

    print(f"model {args.model}; float accuracy {100 * default[0]['float_accuracy']:.2f}% on val/")
    rows = []
    for fmt in ("tflite", "onnx"):
        d, n = by["default"][fmt], by["nearest"][fmt]
        b = by["bias"][fmt] if "bias" in by else None
        fb = d.get("fallback") or {}
        print(
            f"  {fmt:6} full int8 agreement {100 * n['top1_agreement']:.2f}% (drop {n['accuracy_drop_points']:+.2f}); "
            + (
                f"bias correction {100 * b['top1_agreement']:.2f}% (drop {b['accuracy_drop_points']:+.2f}); "
                if b
                else ""
            )
            + f"default {100 * d['top1_agreement']:.2f}% (drop {d['accuracy_drop_points']:+.2f})"
        )
        if fb:
            print(
                f"         fallback: {fb['stopped']}; {len(fb['float_ops'])} ops in float, "
                f"{100 * fb['float_mac_fraction']:.2f}% of MACs, {fb['steps']} steps"
            )
        if fmt in holdout:
            h = holdout[fmt]
            print(
                f"         {h['images']} held-out train/ photos: full int8 {100 * h['nearest']['agreement']:.2f}%, "
                + (f"bias correction {100 * h['bias']['agreement']:.2f}%, " if "bias" in h else "")
                + f"default {100 * h['default']['agreement']:.2f}%"
            )
        if "wider" in by:
            w = by["wider"][fmt]
            wfb = w.get("fallback") or {}
            held = (
                f", held-out {100 * holdout[fmt]['wider']['agreement']:.2f}%"
                if fmt in holdout
                else ""
            )
            print(
                f"         with --max-float-fraction {args.also_fraction:g}: agreement "
                f"{100 * w['top1_agreement']:.2f}% (drop {w['accuracy_drop_points']:+.2f}){held}; "
                f"{wfb.get('stopped', 'no fallback')}, "
                f"{100 * wfb.get('float_mac_fraction', 0):.2f}% of MACs in float, invoke p50 "
                f"x{p50[f'{fmt} wider'] / p50[f'{fmt} int8']:.2f} of int8"
            )
        ratio = p50[f"{fmt} fallback"] / p50[f"{fmt} int8"]
        print(
            f"         invoke p50 (1 thread): fp32 {p50[f'{fmt} fp32']:.2f} ms, int8 {p50[f'{fmt} int8']:.2f} ms, "
            f"default {p50[f'{fmt} fallback']:.2f} ms (x{ratio:.2f} of int8, "
            f"x{p50[f'{fmt} fallback'] / p50[f'{fmt} fp32']:.2f} of fp32)"
        )
        rows += [
            (
                f"{fmt} accuracy drop, val/",
                "<= 1.0",
                f"{d['accuracy_drop_points']:.2f}",
                d["accuracy_drop_points"] <= 1.0,
            ),
            (
                f"{fmt} agreement, val/",
                ">= 98%",
                f"{100 * d['top1_agreement']:.2f}%",
                d["top1_agreement"] >= 0.98,
            ),
        ]
        if fmt in holdout:
            h = holdout[fmt]["default"]
            rows += [
                (
                    f"{fmt} agreement, held-out train/",
                    ">= 98%",
                    f"{100 * h['agreement']:.2f}%",
                    h["agreement"] >= 0.98,
                ),
                (
                    f"{fmt} accuracy drop, held-out",
                    "<= 1.0",
                    f"{h['accuracy_drop_points']:.2f}",
                    h["accuracy_drop_points"] <= 1.0,
                ),
            ]
        fraction = fb.get("float_mac_fraction", 0.0) if fb.get("passed") else 0.0
        # the classifier head, in float in every int8 model (--float-head, the default)
        fraction += ((d.get("preparation") or {}).get("float_head") or {}).get("mac_fraction", 0.0)
        rows.append((f"{fmt} MACs in float", "<= 10%", f"{100 * fraction:.2f}%", fraction <= 0.10))
        rows.append((f"{fmt} invoke p50 vs full int8", "<= x1.15", f"x{ratio:.2f}", ratio <= 1.15))
    tflite_vs_fp32 = p50["tflite fallback"] / p50["tflite fp32"]
    rows.append(
        (
            "tflite default vs fp32 invoke p50",
            "<= x0.65",
            f"x{tflite_vs_fp32:.2f}",
            tflite_vs_fp32 <= 0.65,
        )
    )
    rows.append(("both conversions with fallback, wall", "<= 180 s", f"{wall:.1f} s", wall <= 180))
    width = max(len(row[0]) for row in rows)
    print(f"\n{'target':{width}}  {'bound':8}  {'measured':>10}  verdict")
    for name, bound, measured, ok in rows:
        print(f"{name:{width}}  {bound:8}  {measured:>10}  {'met' if ok else 'MISSED'}")
    report = (
        args.report or ROOT / "benchmarks" / "reports" / f"quant-fallback-{args.model.stem}.json"
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        json.dumps(
            {
                "model": str(args.model),
                "convert_args": CONVERT_ARGS,
                "default": default,
                "no_fallback": nearest,
                "bias_correction": corrected,
                "wider": by.get("wider"),
                "parity_chosen": by.get("parity_chosen"),
                "fallback_final_models": finals,
                "conversion_wall_s": wall,
                "holdout": holdout,
                "invoke_p50_ms": p50,
                "targets": [
                    {"target": n, "bound": b, "measured": m, "met": ok} for n, b, m, ok in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {report}")


if __name__ == "__main__":
    main()
