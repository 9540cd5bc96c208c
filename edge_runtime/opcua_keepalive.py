"""Keep-alives for the OPC UA subscriptions that asyncua publishes "immediately" (interval 0).

asyncua's server takes a requested publishing interval of 0 literally: it
publishes each data change at once and runs no publishing loop, so such a
subscription sends nothing, not even a keep-alive, while no value changes
(OPC UA servers commonly revise 0 to their fastest interval and keep it
alive every ``MaxKeepAliveCount`` intervals). asyncua's client (2.x) counts a
subscription as stale after ``max(interval x keep-alive count x 1.5, 1 s)``
without a publish response, and re-creates it with its monitored items; each
new monitored item first reports its current value, so a client of a line
whose frames pause for a second got the last ``FrameId`` again (68
notifications for 64 frames in the capture-to-consumer benchmark, a pause of
the slow model), and values written while the subscription was being
re-created were not reported.

:func:`keep_alive` publishes a keep-alive on every such subscription that has
nothing else to publish, every ``period_s`` (a few empty publish responses a
second; data changes are still published at once). It reaches into asyncua's
server internals (pinned in the locks); if they change, it says so once and
stops, and ``tests/integration/test_opcua_keepalive.py`` fails.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["KEEP_ALIVE_S", "keep_alive"]

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 0.3
"""Seconds between keep-alives: well under the 1 s after which an asyncua client re-creates."""


async def keep_alive(server: Any, period_s: float = KEEP_ALIVE_S) -> None:
    """Until cancelled: a keep-alive every ``period_s`` on each idle interval-0 subscription of ``server``."""
    while True:
        await asyncio.sleep(period_s)
        try:
            subscriptions = list(server.iserver.subscription_service.subscriptions.values())
            for subscription in subscriptions:
                if subscription.data.RevisedPublishingInterval > 0:
                    continue  # asyncua's own loop publishes, with keep-alives
                # the keep-alive counter full: publish_results sends an empty response when
                # nothing else waits (and the data changes themselves, should any wait)
                subscription._keep_alive_count = subscription.data.RevisedMaxKeepAliveCount
                try:
                    await subscription.publish_results()
                except Exception:  # a client going away: the next round tries again
                    log.debug("OPC UA keep-alive not sent", exc_info=True)
        except AttributeError as exc:
            log.warning(
                "OPC UA keep-alives stopped: this asyncua's server internals differ (%s); "
                "clients that subscribe with publishing interval 0 may re-create their "
                "subscriptions after a second without a frame",
                exc,
            )
            return
