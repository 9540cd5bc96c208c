"""``edgefleet demo``: the whole loop on one machine, from data to a fleet rolling versions out.

Public entry points: :class:`DemoOptions` and :func:`run_demo`. The parts:
:mod:`edgefleet.demo.models` (data, training, conversion, the bad version),
:mod:`edgefleet.demo.fleet` (fleet server, embedded broker, camera
processes), :mod:`edgefleet.demo.predictions` (what each camera served),
:mod:`edgefleet.demo.view` (the live view), :mod:`edgefleet.demo.report`
(summary JSON and HTML report) and :mod:`edgefleet.demo.run` (the script).
"""

from __future__ import annotations

from edgefleet.demo.run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
