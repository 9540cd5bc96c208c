"""The rollout leader's online signing: planner actions become signed assignments, published.

:meth:`OnlineSigner.execute` turns the planner's :data:`Action` list into
assignments in the TUF repository (the online ``assignments`` key), then
:meth:`OnlineSigner.publish` re-signs snapshot and timestamp and publishes
what changed, retained. Only the replica that leads the rollouts signs, so
the metadata versions only ever grow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from fleet_server.publisher import MetadataPublisher
from fleet_server.rollout_plan import Action, Assign, Notify, Rollback
from fleet_server.rollout_progress import StartShadow, StopShadow
from fleet_server.shadow_requests import publish_shadow
from fleet_server.trust import KeySet, Repository

__all__ = ["OnlineSigner"]

log = logging.getLogger(__name__)


class OnlineSigner:
    """Assignments signed with the online keys, and the metadata published after each change."""

    def __init__(self, repository: Repository, keys: KeySet, publisher: MetadataPublisher) -> None:
        self.repository = repository
        self.keys = keys
        self.publisher = publisher
        self.last_publish = 0.0
        """When snapshot and timestamp were last signed and published (Unix time)."""
        self.republish_all = threading.Event()
        """Set after a broker reconnect: the next :meth:`publish` sends every payload again."""

    def execute(self, actions: Sequence[Action]) -> None:
        """Assign (or withdraw) bundles as the actions say; publish once if anything changed."""
        signers = self.keys.role("assignments")
        changed = False
        for action in actions:
            if isinstance(action, Assign):
                self.repository.assign_many(
                    "devices", action.device_ids, action.bundle_sha, signers
                )
                changed = True
            elif isinstance(action, Rollback):
                if action.to_sha is None:
                    self.repository.unassign_many("devices", action.device_ids, signers)
                else:
                    self.repository.assign_many(
                        "devices", action.device_ids, action.to_sha, signers
                    )
                changed = True
            elif isinstance(action, Notify):
                log.info("%s", action.message)
            elif isinstance(action, StartShadow | StopShadow):
                publish_shadow(self.publisher.client, self.publisher.prefix, action)
        if changed:
            self.publish()

    def publish(self) -> None:
        """Re-sign snapshot and timestamp, publish what changed (everything after a reconnect)."""
        self.repository.snapshot_and_timestamp(
            self.keys.role("snapshot"), self.keys.role("timestamp")
        )
        if self.republish_all.is_set():
            self.republish_all.clear()
            self.publisher.reset()
        self.publisher.publish()
        self.last_publish = time.time()
