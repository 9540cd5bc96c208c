"""Frame sources: real video files, image folders, synthetic frames, config and errors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edge_runtime.config import parse_config
from edge_runtime.errors import ConfigError, SourceError, SourceUnavailableError
from edge_runtime.sources import (
    FolderSource,
    FolderSourceConfig,
    FrameSource,
    SourceConfig,
    SourceSettings,
    SyntheticSource,
    SyntheticSourceConfig,
    VideoSource,
    VideoSourceConfig,
    create_source,
    mask_credentials,
    source_class,
    source_names,
)
from edge_runtime.sources.video import video_kind
from edgefleet.testing import PluginDeclarations

FRAMES = 30
SIZE = (64, 48)  # width, height


def level(i: int) -> int:
    return 20 + i * 7


def write_video(path: Path, frames: int = FRAMES, fps: float = 30.0) -> Path:
    """A real MJPG/AVI file whose frame ``i`` is a flat grey of level(i)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, SIZE)
    assert writer.isOpened(), "this OpenCV build cannot write MJPG/AVI"
    for i in range(frames):
        writer.write(np.full((SIZE[1], SIZE[0], 3), level(i), np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")


def read_all(source: FrameSource, limit: int = 1000) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    while len(frames) < limit and (image := source.read()) is not None:
        frames.append(image)
    return frames


# --- video ------------------------------------------------------------------


def test_video_file_gives_every_frame_then_ends(video: Path) -> None:
    source = VideoSource(VideoSourceConfig(uri=str(video), realtime=False))
    with source:
        assert source.native_fps == pytest.approx(30.0)
        assert source.finite
        frames = read_all(source)
        assert source.read() is None
    assert len(frames) == FRAMES
    assert all(f.dtype == np.uint8 and f.shape == (SIZE[1], SIZE[0], 3) for f in frames)
    means = [float(f.mean()) for f in frames]
    assert means == pytest.approx([level(i) for i in range(FRAMES)], abs=3)


def test_mp4v_files_read_too(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, SIZE)
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((SIZE[1], SIZE[0], 3), level(i), np.uint8))
    writer.release()
    with VideoSource(VideoSourceConfig(uri=f"file://{path}", realtime=False)) as source:
        assert len(read_all(source)) == 10


def test_realtime_file_plays_at_its_frame_rate(video: Path) -> None:
    realtime = VideoSource(VideoSourceConfig(uri=str(video)))
    fast = VideoSource(VideoSourceConfig(uri=str(video), realtime=False))
    with realtime:
        start = time.monotonic()
        assert len(read_all(realtime)) == FRAMES
        paced = time.monotonic() - start
    with fast:
        start = time.monotonic()
        assert len(read_all(fast)) == FRAMES
        unpaced = time.monotonic() - start
    # 30 frames at 30 fps: the last is due 29/30 s after the first.
    assert paced >= 0.8
    assert unpaced < paced


def test_looping_file_starts_again(video: Path) -> None:
    with VideoSource(VideoSourceConfig(uri=str(video), loop=True, realtime=False)) as source:
        assert not source.finite
        frames = read_all(source, limit=2 * FRAMES + 5)
    assert len(frames) == 2 * FRAMES + 5
    assert float(frames[FRAMES].mean()) == pytest.approx(level(0), abs=3)
    assert float(frames[2 * FRAMES + 4].mean()) == pytest.approx(level(4), abs=3)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceUnavailableError, match=r"video file .*nope\.mp4 does not exist"):
        VideoSource(VideoSourceConfig(uri=str(missing))).open()


def test_file_that_is_not_a_video_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceUnavailableError, match="cannot open video file"):
        VideoSource(VideoSourceConfig(uri=str(junk))).open()


def test_read_before_open_is_an_error(video: Path) -> None:
    with pytest.raises(SourceError, match="not open"):
        VideoSource(VideoSourceConfig(uri=str(video))).read()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_rtsp_url_is_a_clear_error_without_credentials() -> None:
    url = f"rtsp://admin:s3cret@127.0.0.1:{closed_port()}/stream1"
    source = VideoSource(VideoSourceConfig(uri=url, open_timeout_s=1.0))
    assert source.name == f"rtsp://***@127.0.0.1:{url.rsplit(':', 1)[1]}"
    with pytest.raises(SourceUnavailableError) as caught:
        source.open()
    message = str(caught.value)
    assert "cannot open stream rtsp://***@127.0.0.1" in message
    assert "s3cret" not in message
    assert "admin" not in message


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    server.close()
    for conn in held:
        conn.close()


def test_silent_rtsp_server_gives_up_at_the_open_timeout(silent_server: int) -> None:
    source = VideoSource(
        VideoSourceConfig(uri=f"rtsp://127.0.0.1:{silent_server}/s", open_timeout_s=0.5)
    )
    start = time.monotonic()
    with pytest.raises(SourceUnavailableError, match=r"within 0\.5s"):
        source.open()
    assert time.monotonic() - start >= 0.4


@pytest.fixture
def stalling_mjpeg_server() -> Iterator[int]:
    """HTTP multipart MJPEG: 10 frames, then silence (a camera that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    release = threading.Event()

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(
                b"HTTP/1.0 200 OK\r\n"
                b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            )
            for i in range(10):
                _, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), level(i), np.uint8))
                data = jpg.tobytes()
                conn.sendall(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                    + data
                    + b"\r\n"
                )
            release.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    release.set()
    server.close()
    thread.join(5)


def test_stalled_stream_read_times_out(stalling_mjpeg_server: int) -> None:
    source = VideoSource(
        VideoSourceConfig(
            uri=f"http://user:pw@127.0.0.1:{stalling_mjpeg_server}/cam.mjpg",
            open_timeout_s=5.0,
            read_timeout_s=0.5,
        )
    )
    with source:
        assert not source.finite
        got = 0
        with pytest.raises(SourceError, match=r"no frame within the read timeout \(0\.5s\)") as e:
            for _ in range(50):
                assert source.read() is not None
                got += 1
    assert got >= 1
    assert "pw@" not in str(e.value)


def test_gstreamer_pipeline_is_recognised() -> None:
    pipeline = "rtspsrc location=rtsp://cam.local/s user-pw=hunter2 ! decodebin ! appsink"
    assert video_kind(pipeline) == "gstreamer"
    source = VideoSource(VideoSourceConfig(uri=pipeline))
    assert "hunter2" not in source.name
    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV build has GStreamer; the no-backend message does not apply")
    with pytest.raises(SourceUnavailableError, match="no GStreamer backend"):
        source.open()


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        (0, "device"),
        ("2", "device"),
        ("rtsp://cam/stream", "url"),
        ("http://cam/video.mjpg", "url"),
        ("/data/clip.mp4", "file"),
        ("file:///data/clip.mp4", "file"),
        ("videotestsrc ! appsink", "gstreamer"),
    ],
)
def test_video_kind(uri: int | str, kind: str) -> None:
    assert video_kind(uri) == kind


def test_missing_camera_is_a_clear_error() -> None:
    with pytest.raises(SourceUnavailableError, match="cannot open camera 97"):
        VideoSource(VideoSourceConfig(uri=97)).open()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("rtsp://admin:pa55@10.0.0.2:554/s", "rtsp://***@10.0.0.2:554/s"),
        ("http://user@cam/x", "http://***@cam/x"),
        ("rtsp://10.0.0.2/s?user=a&password=b&x=1", "rtsp://10.0.0.2/s?user=a&password=***&x=1"),
        ("/plain/file.mp4", "/plain/file.mp4"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


# --- folder -----------------------------------------------------------------


def write_image(path: Path, value: int) -> None:
    assert cv2.imwrite(str(path), np.full((20, 30, 3), value, np.uint8))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    write_image(tmp_path / "b.png", 60)
    write_image(tmp_path / "a.png", 30)
    write_image(tmp_path / "d.bmp", 120)
    write_image(tmp_path / "C.PNG", 10)
    (tmp_path / "c_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_reads_sorted_images_and_skips_broken_ones(image_folder: Path) -> None:
    source = FolderSource(FolderSourceConfig(path=str(image_folder)))
    with source:
        frames = read_all(source)
        assert source.read() is None
    assert [int(f[0, 0, 0]) for f in frames] == [10, 30, 60, 120]  # C.PNG, a, b, (c broken), d
    assert source.skipped == 1
    assert source.finite


def test_folder_loops(image_folder: Path) -> None:
    with FolderSource(FolderSourceConfig(path=str(image_folder), loop=True)) as source:
        frames = read_all(source, limit=9)
        assert not source.finite
    assert [int(f[0, 0, 0]) for f in frames] == [10, 30, 60, 120] * 2 + [10]


def test_folder_paces_at_fps(image_folder: Path) -> None:
    with FolderSource(FolderSourceConfig(path=str(image_folder), fps=10.0)) as source:
        start = time.monotonic()
        assert len(read_all(source)) == 4
    assert time.monotonic() - start >= 0.25


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        FolderSource(FolderSourceConfig(path=str(tmp_path / "missing"))).open()
    with pytest.raises(SourceUnavailableError, match="holds no"):
        FolderSource(FolderSourceConfig(path=str(tmp_path))).open()
    (tmp_path / "x.jpg").write_bytes(b"broken")
    looping = FolderSource(FolderSourceConfig(path=str(tmp_path), loop=True))
    with looping, pytest.raises(SourceError, match="none of its 1 images decodes"):
        looping.read()
    once = FolderSource(FolderSourceConfig(path=str(tmp_path)))
    with once:
        assert once.read() is None
    assert once.skipped == 1


# --- synthetic --------------------------------------------------------------


def test_synthetic_frames_are_deterministic() -> None:
    config = SyntheticSourceConfig(width=80, height=60, fps=None, frames=20, seed=7)
    with SyntheticSource(config) as one, SyntheticSource(config) as two:
        first, second = read_all(one), read_all(two)
    assert len(first) == 20
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0].shape == (60, 80, 3)
    assert first[0].dtype == np.uint8
    assert not np.array_equal(first[0], first[1])
    other = SyntheticSource(config.model_copy(update={"seed": 8}))
    with other:
        different = other.read()
    assert different is not None
    assert not np.array_equal(different, first[0])


def test_synthetic_reopen_starts_again_and_endless_has_no_end() -> None:
    source = SyntheticSource(SyntheticSourceConfig(width=16, height=8, fps=None, frames=3))
    with source:
        assert len(read_all(source)) == 3
        assert source.finite
    with source:
        assert len(read_all(source)) == 3
    endless = SyntheticSource(SyntheticSourceConfig(width=4, height=2, fps=None))
    with endless:
        assert not endless.finite
        assert len(read_all(endless, limit=500)) == 500


def test_synthetic_paces_at_fps() -> None:
    source = SyntheticSource(SyntheticSourceConfig(width=32, height=24, fps=50.0, frames=21))
    with source:
        start = time.monotonic()
        read_all(source)
    assert time.monotonic() - start >= 0.35  # the 21st frame is due 0.4 s after the first


# --- config and registry ----------------------------------------------------


def test_configs_parse_with_the_config_class_their_type_names(tmp_path: Path) -> None:
    adapter: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
    video = adapter.validate_python({"type": "video", "uri": "rtsp://cam/s", "open_timeout_s": 2})
    assert isinstance(video, VideoSourceConfig)
    assert video.read_timeout_s == 5
    assert video.realtime
    camera = adapter.validate_python({"type": "video", "uri": 0})
    assert isinstance(camera, VideoSourceConfig)
    assert camera.uri == 0
    folder = adapter.validate_python({"type": "folder", "path": str(tmp_path), "fps": 5})
    assert isinstance(folder, FolderSourceConfig)
    synthetic = adapter.validate_python({"type": "synthetic"})
    assert isinstance(synthetic, SyntheticSourceConfig)
    assert (synthetic.width, synthetic.height, synthetic.fps) == (640, 480, 30)
    for config, cls in ((video, VideoSource), (folder, FolderSource), (synthetic, SyntheticSource)):
        assert type(create_source(config)) is cls


def test_bad_configs_name_the_field() -> None:
    adapter: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
    with pytest.raises(ValidationError, match="fsp"):
        adapter.validate_python({"type": "synthetic", "fsp": 3})
    with pytest.raises(ValidationError, match="open_timeout_s"):
        adapter.validate_python({"type": "video", "uri": "x.mp4", "open_timeout_s": 0})
    with pytest.raises(
        ValidationError,
        match=r"unknown source type 'webcam'.*'edgefleet.sources'.*installed: .*folder.*synthetic.*video",
    ):
        adapter.validate_python({"type": "webcam", "uri": 0})
    with pytest.raises(ValidationError, match=r"a source needs a type, one of: .*folder"):
        adapter.validate_python({"uri": 0})


def test_every_declared_source_loads_under_its_config_type() -> None:
    assert {"video", "folder", "synthetic", "fake-camera"} <= set(source_names())
    for name in source_names():
        cls = source_class(name)
        assert issubclass(cls.config_type, SourceSettings)
        assert cls.config_type.model_fields["type"].default == name
    assert source_class("synthetic") is SyntheticSource
    with pytest.raises(SourceError, match="unknown source type 'webcam'"):
        source_class("webcam")


LINE_SCAN_SOURCE = """
from typing import Literal

import numpy as np

from edge_runtime.sources import FrameSource, SourceSettings


class LineScanConfig(SourceSettings):
    type: Literal["line-scan"] = "line-scan"
    rows: int = 8


class LineScan(FrameSource):
    config_type = LineScanConfig

    def __init__(self, config: LineScanConfig) -> None:
        self.config = config
        self.name = f"line scan {config.rows} rows"

    def open(self) -> None:
        pass

    def read(self):
        return np.zeros((self.config.rows, 4, 3), np.uint8)

    def close(self) -> None:
        pass
"""


def test_a_third_party_source_is_one_module_and_one_entry_point(
    plugin_declarations: PluginDeclarations,
) -> None:
    (plugin_declarations.folder / "line_scan.py").write_text(LINE_SCAN_SOURCE)
    plugin_declarations.declare("edgefleet.sources", "line-scan", "line_scan:LineScan")
    config = parse_config("device_id: cam-1\nsource:\n  type: line-scan\n  rows: 3\n").source
    with create_source(config) as source:
        assert source.name == "line scan 3 rows"
        image = source.read()
        assert image is not None and image.shape == (3, 4, 3)
    with pytest.raises(ConfigError, match=r"line 4: source.colour: Extra inputs"):
        parse_config("device_id: cam-1\nsource:\n  type: line-scan\n  colour: red\n")
    # an entry point whose name is not its config's type is refused, not half-used
    plugin_declarations.declare("edgefleet.sources", "scanner", "line_scan:LineScan")
    with pytest.raises(SourceError, match=r"'scanner' names line_scan:LineScan.*'line-scan'"):
        source_class("scanner")
    plugin_declarations.declare("edgefleet.sources", "nothing", "line_scan:Missing")
    with pytest.raises(SourceError, match=r"frame source 'nothing' cannot be loaded"):
        source_class("nothing")
