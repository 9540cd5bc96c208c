"""The OPC UA output against a real asyncua client and server on loopback, Basic256Sha256 SignAndEncrypt."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.server.server import Server

from edge_runtime.errors import OutputError
from edge_runtime.line_config import OpcUaServerConfig, OpcUaWriteConfig
from edge_runtime.opcua_output import OpcUaServer, OpcUaWriteSink, write_self_signed_certificate
from edge_runtime.prediction import Prediction

CLIENT_URI = "urn:edgefleet:test:plc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prediction(frame_id: int, label: str = "glass", confidence: float = 0.75) -> Prediction:
    return Prediction(
        device_id="cam-1",
        frame_id=frame_id,
        captured_at=1_800_000_000.25 + frame_id,
        label=label,
        confidence=confidence,
        top_k=[(label, confidence)],
        uncertain=confidence < 0.5,
        latency_ms=3.5,
        inference_ms=1.5,
        bundle_name="conveyor",
        bundle_version="2.0.0",
        bundle_sha256="ab" * 32,
    )


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    paths = {
        name: tmp_path / name
        for name in (
            "server.der",
            "server.pem",
            "client.der",
            "client.pem",
            "other.der",
            "other.pem",
        )
    }
    write_self_signed_certificate(
        paths["server.der"], paths["server.pem"], application_uri="urn:edgefleet:camera-box"
    )
    write_self_signed_certificate(
        paths["client.der"], paths["client.pem"], application_uri=CLIENT_URI, server=False
    )
    write_self_signed_certificate(
        paths["other.der"], paths["other.pem"], application_uri=CLIENT_URI, server=False
    )
    return paths


async def secure_client(url: str, certs: dict[str, Path], name: str = "client") -> Client:
    client = Client(url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        str(certs[f"{name}.der"]),
        str(certs[f"{name}.pem"]),
        server_certificate=str(certs["server.der"]),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    return client


class Collector:
    """asyncua's subscription handler: keeps (node id, value) in arrival order."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, Any]] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.changes.append((node.nodeid.to_string(), val))


def test_the_device_server_publishes_each_prediction_in_order_with_opc_ua_types(
    certs: dict[str, Path],
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/edgefleet/"
    config = OpcUaServerConfig(
        endpoint=url,
        certificate=certs["server.der"],
        private_key=certs["server.pem"],
        trusted_clients=[certs["client.der"]],
    )
    server = OpcUaServer(config)
    try:
        sink = server.camera("cam-1")
        server.camera("cam-2")
        server.start()

        async def run() -> tuple[list[tuple[str, Any]], dict[str, ua.VariantType], list[str]]:
            client = await secure_client(url, certs)
            async with client:
                ns = await client.get_namespace_index("urn:edgefleet:line")
                assert ns == server.namespace_index
                # browsable: Objects/Edgefleet/<camera>/<variable>
                root = await client.nodes.objects.get_child([f"{ns}:Edgefleet"])
                cameras = sorted(
                    [(await c.read_browse_name()).Name for c in await root.get_children()]
                )
                cam = await root.get_child([f"{ns}:cam-1"])
                names = sorted(
                    [(await v.read_browse_name()).Name for v in await cam.get_children()]
                )
                frame_node = client.get_node(server.node_id("cam-1", "FrameId"))
                label_node = client.get_node(server.node_id("cam-1", "Label"))
                collector = Collector()
                sub = await client.create_subscription(0, collector)
                await sub.subscribe_data_change([frame_node, label_node], queuesize=100)
                await asyncio.sleep(0.3)
                collector.changes.clear()  # the initial values
                for i in range(1, 21):
                    await asyncio.to_thread(
                        sink.emit, prediction(i, label="metal" if i % 2 else "paper")
                    )
                for _ in range(100):
                    if sum(1 for n, _ in collector.changes if n.endswith("FrameId")) >= 20:
                        break
                    await asyncio.sleep(0.05)
                types = {}
                for variable in (
                    "Label",
                    "Confidence",
                    "Uncertain",
                    "CaptureTime",
                    "ModelVersion",
                    "FrameId",
                ):
                    node = client.get_node(server.node_id("cam-1", variable))
                    variant = (await node.read_data_value()).Value
                    assert variant is not None
                    types[variable] = variant.VariantType
                capture = await client.get_node(server.node_id("cam-1", "CaptureTime")).read_value()
                assert capture == datetime.fromtimestamp(1_800_000_020.25, tz=timezone.utc).replace(
                    tzinfo=None
                ) or capture == datetime.fromtimestamp(1_800_000_020.25, tz=timezone.utc)
                assert (
                    await client.get_node(server.node_id("cam-1", "ModelVersion")).read_value()
                    == "2.0.0"
                )
                assert (
                    await client.get_node(server.node_id("cam-1", "Confidence")).read_value()
                    == 0.75
                )
            return collector.changes, types, [*cameras, "|", *names]

        changes, types, browsed = asyncio.run(run())
    finally:
        server.close()
    assert browsed == [
        "cam-1",
        "cam-2",
        "|",
        "BundleSha256",
        "CaptureTime",
        "Confidence",
        "FrameId",
        "Label",
        "LatencyMs",
        "ModelName",
        "ModelVersion",
        "Uncertain",
    ]
    assert [v for n, v in changes if n.endswith("FrameId")] == list(range(1, 21))
    assert [v for n, v in changes if n.endswith("Label")] == [
        "metal" if i % 2 else "paper" for i in range(1, 21)
    ]
    assert types == {
        "Label": ua.VariantType.String,
        "Confidence": ua.VariantType.Double,
        "Uncertain": ua.VariantType.Boolean,
        "CaptureTime": ua.VariantType.DateTime,
        "ModelVersion": ua.VariantType.String,
        "FrameId": ua.VariantType.UInt64,
    }


def test_the_server_refuses_an_untrusted_client_certificate_and_plain_connections(
    certs: dict[str, Path],
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/edgefleet/"
    config = OpcUaServerConfig(
        endpoint=url,
        certificate=certs["server.der"],
        private_key=certs["server.pem"],
        trusted_clients=[certs["client.der"]],
    )
    server = OpcUaServer(config)
    server.start()

    async def attempt(kind: str) -> None:
        if kind == "plain":
            client = Client(url, timeout=5)
        else:
            client = await secure_client(url, certs, name="other")
        async with client:
            await client.get_namespace_index("urn:edgefleet:line")

    try:
        for kind in ("plain", "untrusted"):
            with pytest.raises(Exception):  # noqa: B017 - asyncua raises several kinds
                asyncio.run(attempt(kind))
    finally:
        server.close()


def test_a_secure_server_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="needs certificate and private_key"):
        OpcUaServerConfig(endpoint="opc.tcp://127.0.0.1:4840/")


def test_write_mode_writes_each_prediction_to_the_plcs_nodes(certs: dict[str, Path]) -> None:
    """The device as a client of the PLC's server (a real asyncua server stands for the PLC)."""
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/plc/"
    seen: list[tuple[int, str, str]] = []

    async def plc(ready: asyncio.Event, done: asyncio.Event) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(url)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        await server.load_certificate(str(certs["server.der"]))
        await server.load_private_key(str(certs["server.pem"]))
        ns = await server.register_namespace("urn:plc")
        sorter = await server.nodes.objects.add_object(
            ua.NodeId.from_string(f"ns={ns};s=Sorter"), f"{ns}:Sorter"
        )
        frame = await sorter.add_variable(
            ua.NodeId.from_string(f"ns={ns};s=Sorter.FrameId"),
            "FrameId",
            ua.Variant(0, ua.VariantType.UInt64),
        )
        label = await sorter.add_variable(
            ua.NodeId.from_string(f"ns={ns};s=Sorter.Label"),
            "Label",
            ua.Variant("", ua.VariantType.String),
        )
        camera = await sorter.add_variable(
            ua.NodeId.from_string(f"ns={ns};s=Sorter.CameraId"),
            "CameraId",
            ua.Variant("", ua.VariantType.String),
        )
        await frame.set_writable()
        await label.set_writable()
        await camera.set_writable()
        async with server:
            ready.set()
            while not done.is_set():
                value = await frame.read_value()
                if not seen or seen[-1][0] != value:
                    seen.append((value, await label.read_value(), await camera.read_value()))
                await asyncio.sleep(0.01)

    async def run() -> None:
        ready, done = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(plc(ready, done))
        await ready.wait()
        sink = OpcUaWriteSink(
            OpcUaWriteConfig(
                url=url,
                certificate=certs["client.der"],
                private_key=certs["client.pem"],
                server_certificate=certs["server.der"],
                nodes={
                    "frame_id": "ns=2;s=Sorter.FrameId",
                    "label": "ns=2;s=Sorter.Label",
                    "camera_id": "ns=2;s=Sorter.CameraId",
                },
            )
        )
        for i in range(1, 6):  # a multi-camera device's cameras, then a single camera's ('')
            sent = replace(prediction(i, label=f"l{i}"), camera_id=f"belt-{i}" if i < 5 else None)
            await asyncio.to_thread(sink.emit, sent)
            await asyncio.sleep(0.05)
        bad = OpcUaWriteSink(
            OpcUaWriteConfig(url=url, security="None", nodes={"label": "ns=2;s=Sorter.Label"})
        )
        with pytest.raises(OutputError, match="OPC UA write"):
            await asyncio.to_thread(bad.emit, prediction(9))
        await asyncio.to_thread(bad.close)
        await asyncio.to_thread(sink.close)
        done.set()
        await task

    asyncio.run(run())
    expected = [(i, f"l{i}", f"belt-{i}" if i < 5 else "") for i in range(1, 6)]
    assert [s for s in seen if s[0] > 0] == expected
