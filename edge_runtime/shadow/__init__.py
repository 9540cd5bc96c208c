"""Shadow evaluation on the device: a candidate bundle judged beside the active model on real frames.

:class:`ShadowController` takes the server's retained request, fetches and
verifies the candidate and runs a :class:`ShadowRunner` (a FrameObserver with
its own low-priority thread and interpreter) whose answers never reach an
output; :class:`ShadowWindow` holds one window's figures for the report.
See ``docs/shadow.md``.
"""

from edge_runtime.shadow.controller import ShadowController
from edge_runtime.shadow.runner import ShadowRunner
from edge_runtime.shadow.window import ShadowWindow

__all__ = ["ShadowController", "ShadowRunner", "ShadowWindow"]
