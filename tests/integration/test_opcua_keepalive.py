"""A subscription at publishing interval 0 stays alive while the line pauses: each frame once.

A real device OPC UA server and a real asyncua client on loopback. The
client subscribes to a camera's ``FrameId`` with publishing interval 0 (as
``docs/line.md`` advises, for every frame at once); the line delivers five
frames, pauses for 2.5 s (a slow model, a belt stop), then five more. Without
keep-alives the asyncua client took the silent subscription for stale after
a second and re-created it, and the re-created monitored item reported the
last ``FrameId`` again (the benchmark's 68 notifications for 64 frames).
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua.client.client import Client

from edge_runtime.line_config import OpcUaServerConfig
from edge_runtime.opcua_output import OpcUaServer
from tests.integration.test_opcua_output import free_port, prediction


class FrameIds:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def datachange_notification(self, _node: Any, value: Any, _data: Any) -> None:
        self.seen.append(int(value))


def test_a_pause_in_the_frames_neither_repeats_nor_loses_a_frame_id() -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/edgefleet/"
    server = OpcUaServer(OpcUaServerConfig(endpoint=url, security=["None"]))
    try:
        sink = server.camera("belt-1")
        server.start()

        async def run() -> tuple[list[int], int | None, int | None]:
            client = Client(url, timeout=5)
            async with client:
                frames = FrameIds()
                subscription = await client.create_subscription(0, frames)
                node = client.get_node(server.node_id("belt-1", "FrameId"))
                await subscription.subscribe_data_change([node], queuesize=100)
                created = subscription.subscription_id
                await asyncio.sleep(0.3)
                frames.seen.clear()  # the initial value
                for frame_id in range(1, 11):
                    await asyncio.to_thread(sink.emit, prediction(frame_id))
                    await asyncio.sleep(2.5 if frame_id == 5 else 0.05)
                for _ in range(40):
                    if len(frames.seen) >= 10:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # a late repeat would show here
                return frames.seen, created, subscription.subscription_id

        seen, created, still = asyncio.run(run())
    finally:
        server.close()
    assert seen == list(range(1, 11))
    assert still == created  # never re-created as stale
