"""OpenCV 4.x or 5.x on the camera box: size, speed and identical output, side by side in one run.

    python3 benchmarks/opencv_choice.py [--old 4.14.0.94] [--new 5.1.0.95] [--rounds 10] [--workdir DIR]

One throw-away venv per version (``sys.executable -m venv``): exactly
``opencv-python-headless==V`` plus numpy and pydantic at this interpreter's versions (what
``edge_runtime.preprocess`` imports; the project goes on ``sys.path``). It measures:

1. size in MiB: the OpenCV distribution alone (the files its RECORD lists) and the venv's
   site-packages on disk, as ``du -sm`` counts them (the unit of the issue's 173 and 451 MB);
   the wheel; and for ``--platforms`` (aarch64) the wheel and its files unpacked;
2. median ms per 640x480 frame: ``cv2.imdecode`` of a quality-90 JPEG, the project's
   ``Preprocessor`` (224x224 int8 and float32 contracts, each resize mode), and both together;
   one worker process per version and round, A B then B A, 1 OpenCV thread and the default;
3. identical output: both decode the same JPEG bytes and preprocess the same decoded frames.

Frames: class-balanced TrashNet val/ photos (../shared/datasets/trashnet or EDGEFLEET_TRASHNET)
resized to 640x480 in memory, or synthetic conveyor frames without them. Prints medians and
ratios, writes benchmarks/reports/opencv-choice.json; everything else stays in the work folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
sys.path.insert(0, str(ROOT))

MIB = 2**20
RESIZES = ("stretch", "center-crop", "letterbox")


def preprocessors(interpolation: str, coverage: bool = False) -> dict[str, Any]:
    """Timed contracts: int8 and float32, MobileNetV2-style ([-1, 1], RGB); coverage adds other code paths."""
    from edge_runtime.bundle import Preprocessing, Quantization, TensorSpec
    from edge_runtime.preprocess import Preprocessor

    def make(dtype: str, resize: str, quant: Any = None, **extra: Any) -> Any:
        layout = extra.get("layout", "nhwc")
        shape = [1, 224, 224, 3] if layout == "nhwc" else [1, 3, 224, 224]
        fields: dict[str, Any] = {"height": 224, "width": 224, "resize": resize}
        fields["crop_fraction"] = 0.875 if resize == "center-crop" else 1.0
        fields |= {"interpolation": interpolation, "mean": (127.5,) * 3, "std": (127.5,) * 3}
        contract = Preprocessing(**{**fields, "color_order": "rgb", **extra})
        spec = TensorSpec(name="image", shape=shape, dtype=dtype, quantization=quant)
        return Preprocessor(contract, spec)

    int8 = Quantization(scale=[0.0078125], zero_point=[0])  # docs/bundle.md's example input
    out = {f"int8 {r}": make("int8", r, int8) for r in RESIZES}
    out |= {f"float32 {r}": make("float32", r) for r in RESIZES}
    if coverage:  # the Preprocessor's other OpenCV paths: saturating add, per-channel LUT, BGR/NCHW
        shift = Quantization(scale=[1.0], zero_point=[-100])
        out["int8 shift-path"] = make("int8", "stretch", shift, mean=(0.0,) * 3, std=(1.0,) * 3)
        imagenet = {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}
        out["float32 per-channel nchw"] = make("float32", "letterbox", layout="nchw", **imagenet)
        out["float16 bgr"] = make("float16", "center-crop", color_order="bgr")
    return out


def worker(mode: str, work: Path, threads: int) -> dict[str, Any]:
    """Runs inside a candidate's venv (``--worker MODE``); the parent reads its JSON answer."""
    import cv2

    cfg = json.loads((work / "config.json").read_text())
    if mode == "prepare":  # the JPEG bytes and decoded frames both versions use
        count, data = cfg["frames"], cfg["data"] and Path(cfg["data"])
        if data:
            classes = sorted(p for p in (data / "val").iterdir() if p.is_dir())
            photos = [sorted(c.glob("*.jpg")) for c in classes]
            picked = [photos[i % len(photos)][i // len(photos)] for i in range(count)]
            names = [str(path.relative_to(data)) for path in picked]
            small = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in picked]
            images = [cv2.resize(im, (640, 480), interpolation=cv2.INTER_CUBIC) for im in small]
        else:
            from converter.synthetic import CLASSES, draw_frame

            images = [draw_frame(CLASSES[i % 6], i, 480, 640) for i in range(count)]
            names = [f"synthetic {CLASSES[i % 6]} {i}" for i in range(count)]
        quality = [cv2.IMWRITE_JPEG_QUALITY, 90]
        blobs = [cv2.imencode(".jpg", im, quality)[1].ravel() for im in images]
        decoded = np.stack([cv2.imdecode(b, cv2.IMREAD_COLOR) for b in blobs])
        offsets = np.cumsum([0] + [b.size for b in blobs])
        np.savez(work / "frames.npz", jpeg=np.concatenate(blobs), offsets=offsets, decoded=decoded)
        return {"names": names, "jpeg_kb": float(np.median(np.diff(offsets))) / 1e3}
    frames = np.load(work / "frames.npz")
    blobs = np.split(frames["jpeg"], frames["offsets"][1:-1])
    shared = frames["decoded"]  # decoded once (by the old version): identical input to both
    if mode == "dump":
        n = cfg["compare"]
        out: dict[str, Any] = {
            "decode": np.stack([cv2.imdecode(b, cv2.IMREAD_COLOR) for b in blobs[:n]])
        }
        for name, pre in preprocessors(cfg["interpolation"], coverage=True).items():
            out[name] = np.stack([pre(frame) for frame in shared[:n]])
        np.savez(work / f"out-{cv2.__version__}.npz", **out)
        keep = ("JPEG:", "Parallel framework:", "Baseline:", "Dispatched code", "Algorithm Hint:")
        lines = [ln.strip() for ln in cv2.getBuildInformation().splitlines()]
        build = [ln for ln in lines if ln.startswith(keep)]
        return {"cv2": cv2.__version__, "build": build, "default_threads": cv2.getNumThreads()}
    if threads > 0:
        cv2.setNumThreads(threads)
    ops: dict[str, Any] = {"imdecode": lambda i: cv2.imdecode(blobs[i], cv2.IMREAD_COLOR)}
    for name, pre in preprocessors(cfg["interpolation"]).items():
        ops[f"pre {name}"] = lambda i, pre=pre: pre(shared[i])
        ops[f"decode+pre {name}"] = lambda i, pre=pre: pre(cv2.imdecode(blobs[i], cv2.IMREAD_COLOR))
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for name, op in ops.items():  # one operation over all frames, as a pipeline repeats it
        for i in range(min(4, len(blobs))):  # warm-up
            op(i)
        for i in range(len(blobs)):
            started = time.perf_counter()
            op(i)
            samples[name].append((time.perf_counter() - started) * 1e3)
    return {"threads": cv2.getNumThreads(), "samples": samples}


def call(python: Path, mode: str, work: Path, threads: int = 0) -> dict[str, Any]:
    argv = [str(python), str(SCRIPT), "--worker", mode, "--workdir", str(work), "--threads"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([*argv, str(threads)], check=True, stdout=subprocess.PIPE, env=env)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def make_venv(version: str, work: Path) -> dict[str, Any]:
    """A venv with exactly this OpenCV plus numpy and pydantic at this interpreter's versions."""
    venv, wheels = work / f"opencv-{version}", work / "wheels"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip"]
    pattern = f"opencv_python_headless-{version}-*.whl"
    if not list(wheels.glob(pattern)):
        fetch = ["download", "-q", "--no-deps", "-d", str(wheels)]
        subprocess.run([*pip, *fetch, f"opencv-python-headless=={version}"], check=True)
    wheel = next(wheels.glob(pattern))
    try:
        pydantic = f"pydantic=={metadata.version('pydantic')}"
    except metadata.PackageNotFoundError:
        pydantic = "pydantic>=2.7,<3"
    pins = [f"numpy=={np.__version__}", pydantic]
    subprocess.run([*pip, "install", "-q", str(wheel), *pins], check=True)
    listed = subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True)
    site = next(venv.glob("lib/python*/site-packages"))
    record = next(site.glob("opencv_python_headless-*.dist-info")) / "RECORD"
    with record.open(newline="") as handle:
        files = [site / row[0] for row in csv.reader(handle) if row]
    return {
        "python": python,
        "wheel": wheel.name,
        "wheel_mb": wheel.stat().st_size / MIB,
        "opencv_installed_mb": disk_usage(files),
        "site_packages_mb": disk_usage(site.rglob("*")),
        "opencv_installed_bytes": sum(f.stat().st_size for f in files if f.is_file()),
        "packages": {p["name"]: p["version"] for p in json.loads(listed.stdout)},
    }


def other_platform(python: Path, version: str, tag: str, work: Path) -> dict[str, float]:
    """The wheel for a platform this machine cannot install (e.g. aarch64): its size, and its files' unpacked."""
    folder, pyver = work / tag, f"{sys.version_info.major}.{sys.version_info.minor}"
    fetch = ["download", "-q", "--no-deps", "--only-binary=:all:", "--platform", tag]
    fetch += ["--python-version", pyver, "-d", str(folder), f"opencv-python-headless=={version}"]
    subprocess.run([str(python), "-m", "pip", *fetch], check=True)
    wheel = next(folder.glob(f"opencv_python_headless-{version}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    arch = tag.rsplit("_", 1)[-1] if tag.startswith("manylinux") else tag
    return {f"{arch} wheel_mb": wheel.stat().st_size / MIB, f"{arch} unpacked_mb": unpacked / MIB}


def disk_usage(paths: Iterable[Path]) -> float:
    """MiB of disk blocks, as ``du -sm`` counts them."""
    return sum(p.stat().st_blocks * 512 for p in paths if p.is_file()) / MIB


def summary(old_runs: list[list[float]], new_runs: list[list[float]]) -> dict[str, Any]:
    """Pooled medians and their ratio; the range of the rounds' paired ratios shows the noise."""
    old, new = (float(np.median(np.concatenate(runs))) for runs in (old_runs, new_runs))
    per = [[round(float(np.median(r)), 3) for r in runs] for runs in (old_runs, new_runs)]
    paired = [n / o for o, n in zip(*per, strict=True)]
    return {
        "old": old,
        "new": new,
        "ratio": new / old,
        "samples": sum(map(len, old_runs)),
        "rounds_ratio_range": [min(paired), max(paired)],
        "per_worker_ms": {"old": per[0], "new": per[1]},
    }


def show(title: str, heads: str, cells: str, rows: dict[str, dict[str, Any]]) -> None:
    """One table; ``cells`` formats each row's figures into |-separated cells."""
    line = "  {:34} {:>9} {:>9} {:>8} {:>11}"
    print("\n" + line.format(title, *[*heads.split("|"), "", "", ""][:4]).rstrip())
    for name, row in rows.items():
        print(line.format(name, *[*cells.format_map(row).split("|"), "", "", ""][:4]).rstrip())


def compare(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> dict[str, Any]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {
        "frames": len(a),
        "identical_frames": sum(bool(np.array_equal(x, y)) for x, y in zip(a, b, strict=True)),
        "max_abs_diff": float(diff.max()),
        "differing_fraction": float(np.mean(a != b)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--old", default="4.14.0.94", help="the 4.x candidate")
    add("--new", default="5.1.0.95", help="the 5.x candidate")
    add("--frames", type=int, default=48, help="640x480 frames each worker times")
    add("--compare", type=int, default=24, help="frames whose outputs are compared")
    add("--rounds", type=int, default=10, help="rounds: one worker per version and thread setting")
    add("--threads", default="1,0", help="OpenCV thread settings to time; 0: OpenCV's default")
    add("--platforms", default="manylinux_2_28_aarch64", help="wheel sizes for other platforms")
    add("--interpolation", default="area", choices=["nearest", "linear", "area", "cubic"])
    add("--data", type=Path, help="TrashNet folder (default ../shared/datasets/trashnet)")
    add("--workdir", type=Path, help="keep venvs and outputs here (default: a temp folder)")
    add("--install-mb", type=float, default=451.0, help="the device install measured with --new")
    add("--budget-mb", type=float, default=400.0, help="the device install's target")
    add("--report", type=Path, default=ROOT / "benchmarks" / "reports" / "opencv-choice.json")
    add("--worker", choices=["prepare", "dump", "time"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir, int(args.threads))))
        return
    if args.data is None:
        default = ROOT.parent / "shared" / "datasets" / "trashnet"
        default = Path(os.environ.get("EDGEFLEET_TRASHNET", default))
        args.data = default if (default / "val").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="edgefleet-opencv-") as tmp:
        args.workdir = (args.workdir or Path(tmp)).resolve()
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, args.workdir)


def run(args: argparse.Namespace, work: Path) -> None:
    versions = {"old": args.old, "new": args.new}
    envs = {key: make_venv(v, work) for key, v in versions.items()}
    for key, version in versions.items():
        for tag in filter(None, args.platforms.split(",")):
            envs[key] |= other_platform(envs[key]["python"], version, tag, work)
    keys = ("frames", "compare", "interpolation")
    config = {**{k: getattr(args, k) for k in keys}, "data": args.data and str(args.data)}
    (work / "config.json").write_text(json.dumps(config))
    prepared = call(envs["old"]["python"], "prepare", work)
    source = f"TrashNet {args.data}/val" if args.data else "synthetic (TrashNet not found)"
    info = {key: call(envs[key]["python"], "dump", work) for key in versions}
    outputs = {key: np.load(work / f"out-{info[key]['cv2']}.npz") for key in versions}
    identity = {k: compare(outputs["old"][k], outputs["new"][k]) for k in outputs["old"].files}
    settings = [int(t) for t in args.threads.split(",")]
    samples: dict[str, dict[int, dict[str, list[list[float]]]]] = {k: {} for k in versions}
    for rnd in range(args.rounds):  # A B, B A, A B, ...: drift hits both versions alike
        for threads in settings:
            for key in ("old", "new") if rnd % 2 == 0 else ("new", "old"):
                got = call(envs[key]["python"], "time", work, threads)["samples"]
                for op, values in got.items():
                    samples[key].setdefault(threads, {}).setdefault(op, []).append(values)
        print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr)
    speed: dict[str, dict[str, dict[str, Any]]] = {}
    for threads in settings:
        label = f"{threads} thread{'s' * (threads > 1)}" if threads else "default threads"
        olds, news = samples["old"][threads], samples["new"][threads]
        speed[label] = {op: summary(olds[op], news[op]) for op in olds}
    fields = [f for f in envs["old"] if f.endswith("_mb")]
    size = {f: {k: envs[k][f] for k in versions} for f in fields}
    for row in size.values():
        row["ratio"] = row["new"] / row["old"]

    print(
        f"\nOpenCV {args.old} (old) vs {args.new} (new), Python {platform.python_version()}, "
        f"numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, {args.rounds} rounds, "
        f"OpenCV default threads {info['old']['default_threads']}\n{len(prepared['names'])} frames: "
        f"{source} at 640x480, JPEG q90 (median {prepared['jpeg_kb']:.0f} kB)"
    )
    show("size, MiB", "old|new|new/old", "{old:.1f}|{new:.1f}|{ratio:.3f}", size)
    spread = "{rounds_ratio_range[0]:.2f}-{rounds_ratio_range[1]:.2f}"
    for label, table in speed.items():
        heads, cells = "old|new|new/old|per round", "{old:.3f}|{new:.3f}|{ratio:.3f}|" + spread
        show(f"median ms/frame, {label}", heads, cells, table)
    cells = "{identical_frames}/{frames}|{max_abs_diff:.4g}|{differing_fraction:.2%}"
    show(f"identical output ({args.compare} frames)", "same|max abs d|differ", cells, identity)

    first = next(iter(speed))  # 1 thread, what the camera box's pipeline runs
    ratios = [r["ratio"] for op, r in speed[first].items() if op.startswith("decode+pre")]
    path_ratio = float(np.exp(np.mean(np.log(ratios))))
    saving = size["opencv_installed_mb"]["new"] - size["opencv_installed_mb"]["old"]
    differing = [k for k, r in identity.items() if r["identical_frames"] < r["frames"]]
    pick = "new" if saving <= 0 or path_ratio < 0.9 else "old"  # smaller, unless 10% slower
    projected = args.install_mb - saving if pick == "old" else args.install_mb
    over = projected - args.budget_mb
    here = (
        f"{size['opencv_installed_mb']['old']:.0f} vs {size['opencv_installed_mb']['new']:.0f} MB"
    )
    others = [
        f"{f.split()[0]} {r['new'] - r['old']:+.1f} MB" for f, r in size.items() if " unpacked" in f
    ]
    verdict = (
        f"OpenCV {versions[pick]}: installed here ({platform.machine()}) {args.old} is {abs(saving):.0f} MB "
        f"{'smaller' if saving > 0 else 'larger'} than {args.new} ({here}), decode+preprocess new/old "
        f"{path_ratio:.2f} ({first}, geometric mean over the 6 contracts), outputs "
        + (f"differ in {', '.join(differing)}" if differing else "identical byte for byte")
        + f"; the {args.install_mb:.0f} MB device install becomes about {projected:.0f} MB, "
        + (f"still {over:.0f} MB over" if over > 0 else "within")
        + f" the {args.budget_mb:.0f} MB target"
        + (f"; unpacked wheels elsewhere, new - old: {', '.join(others)}" if others else "")
    )
    print(f"\nverdict: {verdict}")
    extra = ("wheel", "packages", "opencv_installed_bytes")
    workers = {k: info[k] | {f: envs[k][f] for f in extra} for k in versions}
    report = {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "frames": {"source": source, "size": "640x480", "jpeg_q": 90, "names": prepared["names"]},
        "rounds": args.rounds,
        "platforms": args.platforms,
        "interpolation": args.interpolation,
        "workers": workers,
        "size_mib": size,
        "speed_median_ms": speed,
        "identical_output": identity,
        "verdict": verdict,
    }
    text = json.dumps(report, indent=2)  # lists of numbers on one line each
    text = re.sub(r"\[[-\d.,\s]+\]", lambda m: json.dumps(json.loads(m.group())), text)
    args.report.write_text(text + "\n")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
