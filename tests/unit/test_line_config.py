"""The multi-camera example config parses, and the on-the-line settings refuse what cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_runtime.config import load_config
from edge_runtime.line_config import OpcUaOutputConfig, OpcUaServerConfig, OpcUaWriteConfig

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "devices" / "config" / "line.multi-camera.example.yaml"
)


def test_the_multi_camera_example_parses() -> None:
    config = load_config(EXAMPLE)
    cameras = config.camera_list()
    assert [c.id for c in cameras] == [f"line3-belt{i}" for i in range(1, 5)]
    assert config.outputs.opcua is not None and config.outputs.opcua.server is not None
    assert config.outputs.opcua.server.security == ["Basic256Sha256_SignAndEncrypt"]
    assert cameras[3].outputs is not None and cameras[3].outputs.mqtt is None
    assert cameras[3].fleet is not None and cameras[3].fleet.device_id == "line3-belt4"
    assert all(c.fleet is None for c in cameras[:3])
    assert config.local_service.enabled is False and config.local_service.host == "127.0.0.1"


def test_opc_ua_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="a server or a write section"):
        OpcUaOutputConfig()
    with pytest.raises(ValidationError, match="needs certificate and private_key"):
        OpcUaWriteConfig(url="opc.tcp://plc:4840", nodes={"label": "ns=2;s=L"})
    with pytest.raises(ValidationError, match="nodes"):
        OpcUaWriteConfig(url="opc.tcp://plc:4840", security="None", nodes={"colour": "ns=2;s=C"})
    with pytest.raises(ValidationError, match="security None lets clients in"):
        OpcUaServerConfig(security=["None"], trusted_clients=[Path("plc.der")])
    with pytest.raises(ValidationError, match="opc"):
        OpcUaWriteConfig(url="http://plc", security="None", nodes={"label": "ns=2;s=L"})
