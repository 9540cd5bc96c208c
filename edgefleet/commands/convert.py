"""``edgefleet convert``: trained model -> quantised, parity-checked bundles; reference models and data."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from edgefleet.commands._console import make_console, progress_bar

__all__ = ["convert"]


class _DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, goes to the ``model`` command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in {"-h", "--help"}:
            args = ["model", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup)
def convert() -> None:
    """Convert a trained model into quantised TFLite/ONNX bundles, checked on real images.

    \b
      edgefleet convert MODEL --calibration DIR --parity DIR --precision int8 \\
          --formats tflite,onnx --out DIR
      edgefleet convert train-reference DATA_DIR --out model.keras
      edgefleet convert make-dataset OUT_DIR

    MODEL is a .keras/.h5 file, a SavedModel folder or an .onnx file. Run
    `edgefleet convert model --help` for every conversion option.
    """


def _labels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [label.strip() for label in value.split(",") if label.strip()]


def _preprocessing(yaml_path: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if yaml_path is not None:
        loaded = yaml.safe_load(yaml_path.read_text())
        if not isinstance(loaded, dict):
            raise click.BadParameter(f"{yaml_path} must hold a mapping of preprocessing fields")
        fields.update(loaded)
    scale = flags.pop("scale")
    if scale is not None:
        fields.update(mean=(0.0, 0.0, 0.0), std=(1 / scale,) * 3)
    for key, value in flags.items():
        if value is not None:
            fields[key] = tuple(value) if isinstance(value, list) else value
    return fields


def _floats3(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[float, ...] | None:
    if value is None:
        return None
    parts = [float(v) for v in value.split(",")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise click.BadParameter("give one value or three comma-separated values (per channel)")
    return tuple(parts)


@convert.command("model")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--parity",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Labelled image folder (one sub-folder per class) the converted models are checked on.",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Labelled image folder for int8 calibration (keep it separate from --parity).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the bundles and reports.",
)
@click.option(
    "--formats", default="tflite,onnx", show_default=True, help="Comma-separated: tflite, onnx."
)
@click.option(
    "--precision",
    "precisions",
    default="int8",
    show_default=True,
    help="Comma-separated: fp32, fp16, dynamic-int8 (TFLite), int8.",
)
@click.option(
    "--calibration-samples",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="Class-balanced calibration images.",
)
@click.option(
    "--io-type",
    type=click.Choice(["int8", "uint8", "float32"]),
    default="int8",
    show_default=True,
    help="TFLite int8 model input/output type (the output is float32 with --float-head).",
)
@click.option(
    "--onnx-calibration",
    type=click.Choice(["minmax", "entropy", "percentile", "mse"]),
    default="percentile",
    show_default=True,
    help="ONNX int8 activation ranges: percentile keeps the central 99.999% of each "
    "activation (finer steps, rare outliers saturate); minmax keeps every value seen; "
    "mse picks each range with the least expected int8 squared error (clipping + "
    "rounding) from the same histograms.",
)
@click.option(
    "--tflite-calibration",
    type=click.Choice(["minmax", "percentile", "mse"]),
    default="percentile",
    show_default=True,
    help="TFLite int8 activation ranges: percentile (the central 99.999% of each activation, "
    "one more pass over the images; closer to float on held-out photos), minmax (the "
    "global min/max over the calibration images) or mse (from the same histograms, the "
    "range with the least expected int8 squared error).",
)
@click.option(
    "--onnx-format",
    type=click.Choice(["qdq", "qoperator"]),
    default="qdq",
    show_default=True,
    help="ONNX int8 graph format (QOperator is slower on x86 CPUs; a warning says so).",
)
@click.option(
    "--per-tensor",
    is_flag=True,
    help="ONNX: per-tensor weights (per-channel is the default and usually more accurate).",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="Largest allowed float -> converted accuracy drop, in points.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 100),
    default=98.0,
    show_default=True,
    help="Smallest allowed top-1 agreement with the float model, in percent.",
)
@click.option(
    "--fallback/--no-fallback",
    default=True,
    show_default=True,
    help="When an int8 model misses the gate, keep its most sensitive ops in float (greedily, "
    "most sensitive first, re-checked each step) until it passes or a limit stops it.",
)
@click.option(
    "--max-float-fraction",
    type=click.FloatRange(0, 100),
    default=10.0,
    show_default=True,
    help="Fallback limit: the largest share of the model's MACs kept in float, in percent.",
)
@click.option(
    "--max-latency-ratio",
    type=click.FloatRange(1.0),
    default=1.15,
    show_default=True,
    help="Fallback limit: the largest invoke p50 over full int8's (1 thread, the host's "
    "LiteRT or ONNX Runtime).",
)
@click.option(
    "--max-fallback-steps",
    type=click.IntRange(1, 200),
    default=16,
    show_default=True,
    help="Fallback limit: re-quantisations at most.",
)
@click.option(
    "--selection-samples",
    type=click.IntRange(0),
    default=300,
    show_default=True,
    help="The fallback chooses each step on up to this many class-balanced photos of the "
    "--calibration folder that are neither calibration nor parity photos (a step that does "
    "not bring the scores closer to float's there is taken back); the gate still judges on "
    "--parity. 0: choose on the parity photos (keeps every step; overfits them).",
)
@click.option(
    "--rounding",
    type=click.Choice(["nearest", "bias-correction", "adaround"]),
    default="nearest",
    show_default=True,
    help="int8 weight rounding: round to nearest; with bias correction (each layer's bias "
    "absorbs the mean shift its weight rounding causes on the calibration images); or "
    "AdaRound (each weight rounded up or down so that the layer's output on calibration "
    "images stays closest to float, then bias correction).",
)
@click.option(
    "--equalise/--no-equalise",
    default=True,
    show_default=True,
    help="Before int8 calibration, scale each channel between a convolution and the depthwise "
    "convolution it feeds up to the tensor's range (undone in the depthwise weights: the "
    "float model computes the same), so that small channels get more int8 levels.",
)
@click.option(
    "--float-head/--no-float-head",
    default=True,
    show_default=True,
    help="Keep an int8 model's classifier head (its last fully connected layer and the softmax "
    "after it, well under 1% of the MACs) in float32: int8 logits and an int8 softmax's 1/256 "
    "steps tie or swap close answers. The model's output is then float32 whatever --io-type "
    "says; --no-float-head for a model that must be integer end to end.",
)
@click.option(
    "--keep-failed",
    is_flag=True,
    help="Write bundles that miss the gate anyway (the exit status still says so).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Stop at the first image that does not decode (default: skip and count).",
)
@click.option(
    "--labels",
    help="Comma-separated labels or a file with one per line (default: the parity folder's class folders, sorted).",
)
@click.option("--name", help="Bundle name (default: from the model file name).")
@click.option("--version", "version", default="1.0.0", show_default=True, help="Bundle version.")
@click.option(
    "--preprocessing",
    "preprocessing_yaml",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with preprocessing fields (see docs/bundle.md).",
)
@click.option(
    "--resize", type=click.Choice(["stretch", "center-crop", "letterbox"]), help="Resize mode."
)
@click.option(
    "--interpolation",
    type=click.Choice(["nearest", "linear", "area", "cubic"]),
    help="Resize interpolation.",
)
@click.option(
    "--color-order", type=click.Choice(["rgb", "bgr"]), help="Channel order the model expects."
)
@click.option(
    "--mean", callback=_floats3, help="Per-channel mean in 0..255 pixel units (one value or three)."
)
@click.option(
    "--std", callback=_floats3, help="Per-channel std in pixel units (one value or three)."
)
@click.option(
    "--scale", type=float, help="Shortcut: input = pixel * SCALE (e.g. 0.00392 for [0, 1])."
)
@click.option("--crop-fraction", type=float, help="Centre-crop fraction.")
@click.option(
    "--softmax/--no-softmax",
    "apply_softmax",
    default=None,
    help="Apply softmax to outputs (default: detected from the float outputs).",
)
@click.option(
    "--confidence-threshold",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Below it the device answers 'uncertain'.",
)
@click.option(
    "--latency-budget-ms", type=float, help="Latency budget the device smoke test enforces."
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Device profile (devices/profiles/NAME.yaml): its p95 budget for the model family and "
    "precision becomes each bundle's latency budget, and its name a target profile.",
)
@click.option(
    "--golden-count",
    type=click.IntRange(0, 60),
    default=3,
    show_default=True,
    help="Golden frames per bundle (real parity images, one per class first) that the device "
    "replays before it activates the bundle.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of the table.")
def model_command(
    model: Path,
    parity: Path,
    calibration: Path | None,
    out: Path,
    formats: str,
    precisions: str,
    calibration_samples: int,
    io_type: str,
    onnx_calibration: str,
    tflite_calibration: str,
    onnx_format: str,
    per_tensor: bool,
    max_accuracy_drop: float,
    min_agreement: float,
    fallback: bool,
    max_float_fraction: float,
    max_latency_ratio: float,
    max_fallback_steps: int,
    selection_samples: int,
    rounding: str,
    equalise: bool,
    float_head: bool,
    keep_failed: bool,
    strict: bool,
    labels: str | None,
    name: str | None,
    version: str,
    preprocessing_yaml: Path | None,
    resize: str | None,
    interpolation: str | None,
    color_order: str | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    scale: float | None,
    crop_fraction: float | None,
    apply_softmax: bool | None,
    confidence_threshold: float,
    latency_budget_ms: float | None,
    profile_path: Path | None,
    golden_count: int,
    as_json: bool,
) -> None:
    """Convert MODEL into one bundle per format and precision, each checked against the float model.

    An int8 model that loses more than --max-accuracy-drop points or agrees
    less than --min-agreement with the float model first gets the fallback:
    its most sensitive ops stay in float, one more each step, until it passes
    or a limit stops it (--max-float-fraction, --max-latency-ratio,
    --max-fallback-steps; --no-fallback turns it off). A conversion that still
    misses the gate writes no bundle (unless --keep-failed), names the classes
    that suffered, and makes the command exit with status 3. Every conversion
    writes an HTML parity report (with the most sensitive ops, the fallback's
    steps and the photos the models disagree on) and a JSON one.
    """
    from converter.convert import ConvertOptions, gate_error
    from converter.convert import convert as run_convert

    options = ConvertOptions(
        model=model,
        out=out,
        parity=parity,
        calibration=calibration,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()),
        labels=_labels(labels),
        preprocessing=_preprocessing(
            preprocessing_yaml,
            {
                "resize": resize,
                "interpolation": interpolation,
                "color_order": color_order,
                "mean": mean,
                "std": std,
                "scale": scale,
                "crop_fraction": crop_fraction,
            },
        ),
        calibration_samples=calibration_samples,
        io_type=io_type,  # type: ignore[arg-type]
        onnx_calibration=onnx_calibration,  # type: ignore[arg-type]
        tflite_calibration=tflite_calibration,  # type: ignore[arg-type]
        onnx_format="qoperator" if onnx_format == "qoperator" else "qdq",
        per_channel=not per_tensor,
        max_accuracy_drop=max_accuracy_drop,
        min_agreement=min_agreement / 100,
        fallback=fallback,
        max_float_fraction=max_float_fraction / 100,
        max_latency_ratio=max_latency_ratio,
        max_fallback_steps=max_fallback_steps,
        selection_samples=selection_samples,
        rounding=rounding,  # type: ignore[arg-type]
        equalise=equalise,
        float_head=float_head,
        keep_failed=keep_failed,
        strict=strict,
        name=name,
        version=version,
        apply_softmax=apply_softmax,
        confidence_threshold=confidence_threshold,
        latency_budget_ms=latency_budget_ms,
        golden_count=golden_count,
    )
    import logging

    # the fallback's steps are part of the conversion's story: logged even at the default level
    fallback_log = logging.getLogger("converter.fallback")
    if fallback_log.getEffectiveLevel() > logging.INFO:
        fallback_log.setLevel(logging.INFO)
    console = make_console(stderr=True)
    with progress_bar(console, disable=as_json) as bar:
        tasks: dict[str, Any] = {}

        def progress(task: str, advance: int, total: int | None) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            elif total is not None:
                bar.reset(tasks[task], total=total)
            if advance:
                bar.advance(tasks[task], advance)

        results = []
        for group in _profile_groups(options, profile_path, latency_budget_ms):
            results.extend(run_convert(group, progress))
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    else:
        _print_table(results, make_console())
    error = gate_error(results, options)
    if error is not None:
        click.secho(f"error: {error}", fg="red", err=True)
        raise SystemExit(3)


def _profile_groups(options: Any, profile_path: Path | None, explicit: float | None) -> list[Any]:
    """The conversion options, split by precision where a device profile budgets them apart.

    A profile adds its name to the bundles' target profiles and, unless
    --latency-budget-ms is given, its p95 budget for the model family (matched on
    the bundle name) and precision becomes the bundle's latency budget.
    """
    import dataclasses

    if profile_path is None:
        return [options]
    from converter.convert import _slug
    from edge_runtime.bench.profile import load_profile

    profile = load_profile(profile_path)
    name = options.name or _slug(options.model.stem)
    by_budget: dict[float | None, list[str]] = {}
    for precision in options.precisions:
        budget = explicit if explicit is not None else profile.budget_for(name, precision)
        by_budget.setdefault(budget, []).append(precision)
    if explicit is None and None in by_budget:
        click.secho(
            f"warning: profile {profile.name} has no budget for {name!r} in "
            f"{', '.join(by_budget[None])}; those bundles carry no latency budget",
            fg="yellow",
            err=True,
        )
    profiles = (*options.device_profiles, profile.name)
    return [
        dataclasses.replace(
            options,
            precisions=tuple(precisions),
            latency_budget_ms=budget,
            device_profiles=profiles,
        )
        for budget, precisions in by_budget.items()
    ]


def _in_float(result: Any) -> str:
    head = (result.preparation or {}).get("float_head")
    text = f"head ({100 * head['mac_fraction']:.2f}% MACs)" if head else ""
    fallback = result.fallback
    if fallback is None:
        return text or "-"
    if not fallback.passed:
        return f"fallback failed ({len(fallback.steps)} steps)" + (f"; {text}" if text else "")
    return (
        f"{len(fallback.float_ops)} ops{' + head' if head else ''}, "
        f"{100 * fallback.float_mac_fraction:.1f}% MACs, x{fallback.latency_ratio or 0:.2f}"
    )


def _print_table(results: list[Any], console: Console) -> None:
    table = Table(
        "format",
        "precision",
        "size",
        "float acc",
        "accuracy",
        "drop",
        "agreement",
        "host p50",
        "vs fp32",
        "in float",
        "gate",
        "bundle",
    )
    for r in results:
        q = r.report
        table.add_row(
            r.format,
            r.precision,
            f"{r.model_size / 1024:.0f} KiB",
            f"{100 * (q.float_accuracy or 0):.2f}%",
            f"{100 * q.accuracy:.2f}%",
            f"{q.accuracy_drop_points:+.2f}",
            f"{100 * (q.top1_agreement or 0):.2f}%",
            f"{r.latency_p50_ms:.2f} ms",
            _vs_fp32(r.vs_fp32_p50),
            _in_float(r),
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
            str(r.bundle_path.name) if r.bundle_path else "-",
        )
    console.print(table)
    for r in results:
        if r.fallback is None:
            continue
        before = r.before_fallback
        console.print(
            f"{r.format} int8 fallback (full int8: agreement "
            f"{100 * (before.top1_agreement or 0) if before else 0:.2f}%): {r.fallback.stopped}; "
            f"steps chosen on {r.fallback.selection_images} photos, {r.fallback.selection_set}",
            highlight=False,
        )
        for step in r.fallback.steps:
            parts = []
            if step.selection is not None:
                parts.append(
                    f"selection error {step.selection.score_error:.5f}, "
                    f"agreement {100 * step.selection.agreement:.2f}%"
                )
            if step.agreement is not None:
                parts.append(
                    f"gate agreement {100 * step.agreement:.2f}%, drop {step.accuracy_drop:+.2f}"
                )
            if step.latency_ratio is not None:
                parts.append(f"latency x{step.latency_ratio:.2f}")
            figures = f": {', '.join(parts)}" if parts else ""
            console.print(
                f"  {step.step:2d}. {step.action} {step.kind} ({len(step.float_ops)} ops, "
                f"{100 * step.float_mac_fraction:.1f}% MACs){figures}",
                highlight=False,
            )
    for r in results:
        if r.vs_fp32_p50 is not None and r.vs_fp32_p50 > 1.0:
            console.print(
                f"[yellow]{r.format} {r.precision} is slower than fp32 on this host[/] (invoke "
                f"p50 x{r.vs_fp32_p50:.2f}, 1 thread): measure on the device (`edgefleet bench`) "
                "before choosing it for speed",
                highlight=False,
            )
    if results:
        console.print(f"reports: {results[0].report_path.parent}/*.report.html")


def _vs_fp32(ratio: float | None) -> str:
    """The invoke p50 over fp32's, red where the quantised model is the slower one."""
    if ratio is None:
        return "-"
    return f"[red]x{ratio:.2f}[/]" if ratio > 1.0 else f"x{ratio:.2f}"


@convert.command("train-reference")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to save the trained .keras model.",
)
@click.option(
    "--arch", type=click.Choice(["mobilenetv2", "tiny"]), default="mobilenetv2", show_default=True
)
@click.option(
    "--size",
    type=click.IntRange(32, 512),
    default=224,
    show_default=True,
    help="Input side in pixels.",
)
@click.option(
    "--alpha", type=float, default=1.0, show_default=True, help="MobileNetV2 width multiplier."
)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option(
    "--recipe",
    type=click.Choice(["basic", "robust"]),
    default=None,
    help="basic: flips and Adam (the default for tiny); robust: random crops, brightness and "
    "contrast jitter, AdamW weight decay and label smoothing (the default for mobilenetv2; "
    "generalises better and survives int8 quantisation better).",
)
@click.option(
    "--quant-noise",
    type=click.FloatRange(0.0, 16.0),
    default=None,
    metavar="STEPS",
    help="Train with simulated int8 rounding noise of this many int8 steps on the input and on "
    "every activation an int8 model quantises (0 turns it off; the recipe decides by default). "
    "The saved model is the plain one.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def train_reference_command(
    data: Path,
    out: Path,
    arch: str,
    size: int,
    alpha: float,
    epochs: int,
    recipe: str | None,
    quant_noise: float | None,
    seed: int,
) -> None:
    """Train a reference classifier from scratch (weights=None) on DATA/train, checked on DATA/val.

    The model's preprocessing is stretch resize, area interpolation, RGB,
    scaled to [-1, 1] (convert it with --mean 127.5 --std 127.5).
    """
    from converter.dataset import LabelledFolder
    from converter.reference import Recipe, train_reference

    recipe = recipe or ("robust" if arch == "mobilenetv2" else "basic")
    chosen = Recipe.named(recipe)
    if quant_noise is not None:
        chosen = dataclasses.replace(chosen, quant_noise=quant_noise)
    train = LabelledFolder.scan(data / "train")
    val = LabelledFolder.scan(data / "val", train.labels) if (data / "val").is_dir() else None
    console = make_console(stderr=True)
    with progress_bar(console, transient=False) as bar:
        task = bar.add_task("training", total=epochs)

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            figures = f"loss {logs.get('loss', 0):.3f}, val acc {logs.get('val_accuracy', 0):.3f}"
            bar.update(task, advance=1, description=f"training ({figures})")
            if not console.is_terminal:  # a log or a pipe gets no live bar: one line per epoch
                console.print(f"epoch {epoch + 1}/{epochs}: {figures}")

        trained = train_reference(
            train,
            val,
            arch="tiny" if arch == "tiny" else "mobilenetv2",
            size=size,
            epochs=epochs,
            alpha=alpha,
            seed=seed,
            recipe=chosen,
            on_epoch=on_epoch,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    trained.model.save(out)
    noise = f" with int8 noise of {chosen.quant_noise:g} steps" if chosen.quant_noise else ""
    accuracy = (
        f"{100 * trained.val_accuracy:.1f}%"
        if trained.val_accuracy is not None
        else "n/a (no val/)"
    )
    click.echo(
        f"saved {out}: {arch} {size}x{size}, {len(train.labels)} classes, {recipe} recipe"
        f"{noise}, validation accuracy {accuracy}"
    )


@convert.command("make-dataset")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--train",
    "per_train",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Training images per class.",
)
@click.option(
    "--val",
    "per_val",
    type=click.IntRange(0),
    default=30,
    show_default=True,
    help="Validation images per class.",
)
@click.option("--size", type=click.IntRange(16, 1024), default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def make_dataset_command(out: Path, per_train: int, per_val: int, size: int, seed: int) -> None:
    """Draw the labelled synthetic conveyor data set (six waste classes) into OUT/train and OUT/val."""
    from converter.synthetic import write_dataset

    written = write_dataset(out, per_train, per_val, size=size, seed=seed)
    click.echo(f"wrote {written.train} training and {written.val} validation images to {out}")
