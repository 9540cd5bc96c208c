"""``edgefleet bench fleet``: how long a staged rollout to N devices takes, against the transport's floor.

One run, everything real except the devices' cameras and models:

1. a fresh TUF repository with its keys, and a released bundle (``--bundle``,
   or a synthetic payload of ``--bundle-size`` MB that devices verify but
   never run);
2. Mosquitto started on loopback (or ``--broker``), and ``--replicas``
   ``edgefleet serve`` processes on one database (SQLite, or PostgreSQL:
   ``--db``, or a throw-away cluster for more than one replica), each its
   own process so its RSS and CPU are its own;
3. N devices provisioned through the HTTP API;
4. the transport floor (:mod:`.floor`): the same bundle bytes fanned out
   through the same broker to N plain MQTT subscribers, before and after the
   rollout (their mean is the floor; measuring on both sides cancels drift
   in the machine's load);
5. N simulated devices (:mod:`edgefleet.fleet_sim`) connected, each verifying
   the TUF metadata; the clock starts with ``POST /rollouts`` (a canary wave,
   then everyone) and stops when the servers report the rollout finished
   with every device committed. Rollout time / floor time is the headline.

Servers, the broker and the database are sampled every 0.2 s for RSS and
CPU; each server's own counters (reports received, chunks served) are read
from its ``/metrics`` before and after the rollout.

Modules: :mod:`.options` (what is asked), :mod:`.services` (Mosquitto,
PostgreSQL, the servers), :mod:`.floor`, :mod:`.sampling`, :mod:`.counters`,
:mod:`.payload` (the synthetic bundle), :mod:`.engine` (one run),
:mod:`.report` (the JSON report and the tables).
"""

from edgefleet.rollout_benchmark.engine import run_fleet_bench
from edgefleet.rollout_benchmark.floor import FloorResult, measure_floor
from edgefleet.rollout_benchmark.options import FleetBenchError, FleetBenchOptions
from edgefleet.rollout_benchmark.payload import synthetic_bundle
from edgefleet.rollout_benchmark.report import render_report
from edgefleet.rollout_benchmark.sampling import ProcessSampler

__all__ = [
    "FleetBenchError",
    "FleetBenchOptions",
    "FloorResult",
    "ProcessSampler",
    "measure_floor",
    "render_report",
    "run_fleet_bench",
    "synthetic_bundle",
]
