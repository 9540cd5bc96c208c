"""Per-process RSS and CPU, sampled on a background thread."""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field

import psutil

__all__ = ["MachineSnapshot", "ProcessSampler", "machine_window", "wait_quiet"]


@dataclass
class ProcessSampler:
    """Samples a process's RSS and CPU time on a background thread.

    With ``tree``, the process and all its descendants together (PostgreSQL
    serves each connection from a process of its own); the RSS is then their
    sum, which counts shared memory once per process.
    """

    pid: int
    interval_s: float = 0.2
    tree: bool = False
    peak_rss: int = 0
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(monotonic time, cumulative CPU seconds, RSS bytes)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._process = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._run, name=f"sample-{self.pid}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        live: dict[int, float] = {}
        """Descendants' CPU seconds at the last sample (pid -> seconds)."""
        exited = 0.0
        """CPU seconds of the descendants that have exited since sampling began."""
        while not self._stop.is_set():
            try:
                with self._process.oneshot():
                    times = self._process.cpu_times()
                    cpu = times.user + times.system
                    rss = self._process.memory_info().rss
                    children = self._process.children(recursive=True) if self.tree else []
            except psutil.Error:
                return
            seen: dict[int, float] = {}
            for child in children:
                try:
                    with child.oneshot():
                        child_times = child.cpu_times()
                        seen[child.pid] = child_times.user + child_times.system
                        rss += child.memory_info().rss
                except psutil.Error:
                    continue
            exited += sum(used for pid, used in live.items() if pid not in seen)
            live = seen
            cpu += exited + sum(live.values())
            self.samples.append((time.monotonic(), cpu, rss))
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval_s)

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds, mean and peak CPU % (of one core) and peak RSS between two instants."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {"cpu_s": 0.0, "cpu_mean_pct": 0.0, "cpu_peak_pct": 0.0, "peak_rss_mb": 0.0}
        cpu = inside[-1][1] - inside[0][1]
        rates = [
            100.0 * (b[1] - a[1]) / (b[0] - a[0])
            for a, b in itertools.pairwise(inside)
            if b[0] > a[0]
        ]
        return {
            "cpu_s": round(cpu, 2),
            "cpu_mean_pct": round(100.0 * cpu / (inside[-1][0] - inside[0][0]), 1),
            "cpu_peak_pct": round(max(rates), 1),
            "peak_rss_mb": round(max(s[2] for s in inside) / 2**20, 1),
        }

    def recent_pct(self, seconds: float) -> float | None:
        """Mean CPU % (of one core) over about the last ``seconds``; None before enough samples."""
        if len(self.samples) < 2:
            return None
        last = self.samples[-1]
        earlier = [s for s in self.samples if s[0] <= last[0] - seconds]
        if not earlier:
            return None
        first = earlier[-1]
        return 100.0 * (last[1] - first[1]) / (last[0] - first[0])


def wait_quiet(
    samplers: list[ProcessSampler],
    *,
    below_pct: float = 10.0,
    over_s: float = 1.0,
    timeout_s: float = 30.0,
) -> float:
    """Wait until every sampled process uses under ``below_pct`` of a core over ``over_s``.

    Measurements that follow start from the same rest (a server still
    storing a thousand ``offline`` reports is not a quiet machine). Returns
    the seconds waited; gives up quietly after ``timeout_s``.
    """
    started = time.monotonic()
    time.sleep(over_s + 0.3)
    while time.monotonic() - started < timeout_s:
        rates = [s.recent_pct(over_s) for s in samplers]
        if all(rate is not None and rate < below_pct for rate in rates):
            break
        time.sleep(0.2)
    return time.monotonic() - started


@dataclass(frozen=True)
class MachineSnapshot:
    """The whole machine's CPU use so far, and this process's own, at one instant."""

    at: float
    busy_s: float
    """Every CPU's non-idle seconds since boot (iowait counts as idle)."""
    own_cpu_s: float
    """This (the benchmark's) process's CPU seconds."""
    load_1m: float

    @classmethod
    def now(cls) -> MachineSnapshot:
        times = psutil.cpu_times()
        own = psutil.Process().cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return cls(time.monotonic(), busy, own.user + own.system, os.getloadavg()[0])


def machine_window(
    start: MachineSnapshot, end: MachineSnapshot, measured_cpu_s: float
) -> dict[str, float]:
    """How busy the machine was between two snapshots, and how much of it was someone else.

    ``measured_cpu_s`` is what the sampled processes (servers, broker, database,
    simulator) used over the same window; the benchmark's own process is
    added here. The rest is other work on the machine: noise in every figure.
    """
    span = max(1e-9, end.at - start.at)
    cpus = psutil.cpu_count() or 1
    busy = end.busy_s - start.busy_s
    ours = measured_cpu_s + (end.own_cpu_s - start.own_cpu_s)
    return {
        "busy_pct": round(100 * busy / (span * cpus), 1),
        "others_cpu_s": round(max(0.0, busy - ours), 1),
        "others_pct": round(100 * max(0.0, busy - ours) / (span * cpus), 1),
        "load_1m_start": round(start.load_1m, 2),
        "load_1m_end": round(end.load_1m, 2),
    }
