"""Converter targets on TrashNet (issue #3), measured in one run and printed side by side.

    .venv/bin/python benchmarks/convert_trashnet.py --model mnv2.keras [--data ../shared/datasets/trashnet]

Without --model it first trains the reference MobileNetV2 (alpha 1.0, 224x224,
weights=None, the robust recipe with int8 noise) on DATA/train with `edgefleet
convert train-reference --epochs 24 --quant-noise 1.5` (slow on 2 cores:
about 130 s per epoch, 53 minutes). Then it runs, as a user would:

1. `edgefleet convert MODEL --precision int8 --formats tflite,onnx` with 200
   calibration images (DATA/train) and the 328 parity images (DATA/val), timed;
2. the same with `--precision fp32`, for the size comparison;
3. with `--holdout N`, the int8 conversion again with N class-balanced
   train/ photos that are not calibration photos as the parity set (the
   model saw them in training, so they are easier, but they are a second,
   independent sample of the agreement);
4. the float model on the parity photos under simulated int8 rounding noise
   (one int8 step on every quantised tensor, `--noise-draws` draws): a
   figure of how sensitive the model is that, unlike one conversion's
   agreement, does not jump by a point with a 0.1% change of a calibration
   range. It is not a target, it explains the agreement figures.

It prints each target next to its measured figure and writes the JSON summary
to benchmarks/reports/convert-trashnet.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGEFLEET = [sys.executable, "-m", "edgefleet"]
CALIBRATION_SAMPLES = 200


def run_convert(
    model: Path, data: Path, out: Path, precision: str, parity: Path | None = None
) -> tuple[list[dict], float]:
    command = [
        *EDGEFLEET,
        "convert",
        str(model),
        "--calibration",
        str(data / "train"),
        "--parity",
        str(parity or data / "val"),
        "--calibration-samples",
        str(CALIBRATION_SAMPLES),
        "--precision",
        precision,
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
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode not in (0, 3):
        sys.exit(f"conversion failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), wall


def holdout_folder(data: Path, count: int, work: Path) -> Path:
    """``count`` class-balanced train/ photos that are not among the calibration ones,
    linked (not copied) into a labelled folder under ``work``."""
    import shutil

    from converter.dataset import LabelledFolder

    train = LabelledFolder.scan(data / "train")
    # --calibration-samples N calibrates on balanced(N): the first N of the same draw
    calibration = {path for path, _ in train.balanced(CALIBRATION_SAMPLES).items}
    folder = work / "holdout"
    shutil.rmtree(folder, ignore_errors=True)
    for path, label in train.balanced(CALIBRATION_SAMPLES + count).items:
        if path not in calibration:
            link = folder / train.labels[label] / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="trained .keras model (default: train one)")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "trashnet"
    )
    parser.add_argument(
        "--epochs", type=int, default=24, help="training epochs when --model is not given"
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=ROOT / "benchmarks" / "reports" / "convert-trashnet.json",
        help="where to write the JSON summary",
    )
    parser.add_argument(
        "--quant-noise",
        type=float,
        default=1.5,
        help="int8 noise (steps) to train with when --model is not given (0: none)",
    )
    parser.add_argument(
        "--holdout",
        type=int,
        default=400,
        help="also convert with this many held-out train/ photos (never calibration ones) as "
        "the parity set, a second sample of the agreement (0 skips it)",
    )
    parser.add_argument(
        "--noise-draws",
        type=int,
        default=4,
        help="draws of simulated int8 noise for the sensitivity figure (0 skips it)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "edgefleet-convert-bench"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = args.work / "mobilenetv2-trashnet.keras"
        subprocess.run(
            [
                *EDGEFLEET,
                "convert",
                "train-reference",
                str(args.data),
                "--out",
                str(model),
                "--arch",
                "mobilenetv2",
                "--size",
                "224",
                "--epochs",
                str(args.epochs),
                "--quant-noise",
                str(args.quant_noise),
            ],
            check=True,
        )
    int8, int8_wall = run_convert(model, args.data, args.work / "int8", "int8")
    fp32, _ = run_convert(model, args.data, args.work / "fp32", "fp32")
    sizes = {
        (r["format"], r["precision"]): Path(r["bundle"]).stat().st_size for r in [*int8, *fp32]
    }
    rows = []
    for r in int8:
        fmt = r["format"]
        ratio = sizes[(fmt, "int8")] / sizes[(fmt, "fp32")]
        rows += [
            (
                f"{fmt} int8 accuracy drop (points)",
                "<= 1.0",
                f"{r['accuracy_drop_points']:.2f}",
                r["accuracy_drop_points"] <= 1.0,
            ),
            (
                f"{fmt} int8 top-1 agreement",
                ">= 98%",
                f"{100 * r['top1_agreement']:.2f}%",
                r["top1_agreement"] >= 0.98,
            ),
            (f"{fmt} int8 / fp32 bundle size", "<= 30%", f"{100 * ratio:.1f}%", ratio <= 0.30),
        ]
    rows.append(("both int8 conversions, wall", "<= 90 s", f"{int8_wall:.1f} s", int8_wall <= 90))
    holdout = None
    if args.holdout > 0:
        folder = holdout_folder(args.data, args.holdout, args.work)
        held, _ = run_convert(model, args.data, args.work / "holdout-int8", "int8", folder)
        holdout = {r["format"]: r["top1_agreement"] for r in held}
    sensitivity = None
    if args.noise_draws > 0:
        from converter.dataset import LabelledFolder
        from converter.reference import (
            REFERENCE_PREPROCESSING,
            load_tensors,
            simulated_int8_agreement,
        )

        images, _ = load_tensors(
            LabelledFolder.scan(args.data / "val"), REFERENCE_PREPROCESSING(224)
        )
        mean, draws = simulated_int8_agreement(model, images, strength=1.0, draws=args.noise_draws)
        sensitivity = {"strength_steps": 1.0, "mean_agreement": mean, "draws": draws}
    print(
        f"model {model}; float accuracy {100 * int8[0]['float_accuracy']:.2f}% on {args.data / 'val'}"
    )
    for r in [*fp32, *int8]:
        print(
            f"  {r['format']:6} {r['precision']:5} accuracy {100 * r['accuracy']:.2f}%  agreement {100 * r['top1_agreement']:.2f}%"
            f"  bundle {sizes[(r['format'], r['precision'])] / 1e6:.2f} MB  host p50 {r['host_latency_p50_ms']:.2f} ms"
        )
    if holdout is not None:
        shown = " / ".join(f"{fmt} {100 * value:.2f}%" for fmt, value in holdout.items())
        print(f"  int8 agreement on {args.holdout} held-out train photos: {shown}")
    if sensitivity is not None:
        shown = ", ".join(f"{100 * d:.2f}%" for d in sensitivity["draws"])
        print(
            f"  float model under simulated int8 noise (1 step): agreement "
            f"{100 * sensitivity['mean_agreement']:.2f}% mean ({shown})"
        )
    width = max(len(row[0]) for row in rows)
    print(f"\n{'target':{width}}  {'bound':8}  {'measured':>10}  verdict")
    for name, bound, measured, ok in rows:
        print(f"{name:{width}}  {bound:8}  {measured:>10}  {'met' if ok else 'MISSED'}")
    report = args.report
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        json.dumps(
            {
                "model": str(model),
                "int8": int8,
                "fp32": fp32,
                "int8_wall_s": int8_wall,
                "simulated_int8_noise": sensitivity,
                "holdout_agreement": holdout,
                "sizes": {f"{f}-{p}": s for (f, p), s in sizes.items()},
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
