"""The API's field data: collection settings per group, the samples, their images and labels.

Any token reads; operators switch collection on and off per group (tag) and
label samples (confirm the device's answer or correct it). Mounting the
routes also runs a :class:`~fleet_server.field_data_receiver.FieldDataReceiver`
on the server's MQTT client while the app serves (samples in, acks and
settings out; one of the server's workers in ``/healthz``), storing images
under ``<state>/field-data``.

=========================================  ========  ==========================================
route                                      role      what
=========================================  ========  ==========================================
``GET /field-data/settings``               viewer    every group's settings
``PUT /field-data/settings/{tag}``         operator  switch a group on (or change its rules)
``DELETE /field-data/settings/{tag}``      operator  switch a group off
``GET /field-data/samples``                viewer    samples, filtered (device, camera, version, reason)
``GET /field-data/samples/{sha256}``       viewer    one sample's record
``GET /field-data/samples/{sha256}/image`` viewer    its image (JPEG or PNG)
``PUT /field-data/samples/{sha256}/label`` operator  a person's label for it
=========================================  ========  ==========================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.protocol.field_data import FieldDataSettings
from fleet_server.api.auth import Guards, principal_of
from fleet_server.field_data import FieldStore
from fleet_server.field_data_metrics import FieldDataMetrics
from fleet_server.field_data_receiver import FieldDataReceiver
from fleet_server.registry.field_data import MAX_FIELD_LIMIT

if TYPE_CHECKING:
    from fleet_server.server import FleetServer

__all__ = ["FieldLabel", "FieldSettingsRequest", "field_routes"]

Sha = Annotated[str, FastApiPath(pattern=r"^[0-9a-f]{64}$")]
TagPath = Annotated[str, FastApiPath(min_length=1, max_length=64)]
_MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}
_BINARY = {"type": "string", "format": "binary"}


class FieldSettingsRequest(BaseModel):
    """A group's collection rules and caps (every field optional: the defaults are shown)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    below_confidence: float | None = Field(default=0.5, ge=0.0, le=1.0)
    classes: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=256
    )
    random_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow_disagreement: bool = False
    """Keep the frames a shadow candidate answered otherwise than the active model."""
    per_minute: int = Field(default=6, ge=0, le=10_000)
    per_day: int = Field(default=500, ge=0, le=1_000_000)
    max_disk_bytes: int = Field(default=64 * 1024 * 1024, ge=0, le=2**40)
    upload_bytes_per_s: int = Field(default=64 * 1024, ge=1024, le=2**32)
    jpeg_quality: int = Field(default=90, ge=10, le=100)

    def settings(self) -> FieldDataSettings:
        """The protocol's settings message."""
        return FieldDataSettings.model_validate(self.model_dump())


class FieldLabel(BaseModel):
    """What a person says a sampled frame shows."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=128)


def field_routes(
    app: FastAPI, server: FleetServer, guards: Guards, metrics: CollectorRegistry
) -> FieldDataReceiver:
    """Mount ``/field-data``, run its MQTT receiver while the app serves, add its ``/metrics``."""
    registry = server.registry
    store = FieldStore(server.bundle_folder.parent / "field-data")
    receiver = FieldDataReceiver(
        server.client, registry, store, prefix=server.prefix, share_group=server.share_group
    )
    metrics.register(FieldDataMetrics(receiver))
    server.workers.add("field-data", receiver.health)
    app.router.on_startup.append(receiver.start)
    app.router.on_shutdown.append(receiver.stop)

    @app.get("/field-data/settings", tags=["field-data"], dependencies=guards.viewer)
    def field_settings() -> dict[str, dict[str, Any]]:
        """Every group's (tag's) collection settings; groups not listed collect nothing."""
        return {tag: s.to_dict() for tag, s in registry.field_settings().items()}

    @app.put("/field-data/settings/{tag}", tags=["field-data"], dependencies=guards.operator)
    def set_field_settings(
        tag: TagPath, body: FieldSettingsRequest, request: Request
    ) -> dict[str, Any]:
        """Collect frames in this group by these rules (its devices get them within seconds)."""
        settings = registry.set_field_settings(tag, body.settings(), by=principal_of(request).name)
        receiver.refresh_settings()
        return {"tag": tag, **settings.to_dict()}

    @app.delete("/field-data/settings/{tag}", tags=["field-data"], dependencies=guards.operator)
    def clear_field_settings(tag: TagPath) -> dict[str, Any]:
        """Stop collecting in this group."""
        removed = registry.clear_field_settings(tag)
        receiver.refresh_settings()
        return {"tag": tag, "removed": removed}

    @app.get("/field-data/samples", tags=["field-data"], dependencies=guards.viewer)
    def field_samples(
        *,
        device: Annotated[str | None, Query(max_length=64)] = None,
        version: Annotated[str | None, Query(max_length=64)] = None,
        reason: Literal["low-confidence", "class", "random", "shadow-disagreement"] | None = None,
        labelled: bool | None = None,
        camera: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_FIELD_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """Samples, newest first."""
        return [
            s.to_dict()
            for s in registry.field_samples(
                device_id=device,
                version=version,
                reason=reason,
                labelled=labelled,
                camera_id=camera,
                limit=limit,
                offset=offset,
            )
        ]

    @app.get("/field-data/samples/{sha256}", tags=["field-data"], dependencies=guards.viewer)
    def field_sample(sha256: Sha) -> dict[str, Any]:
        """One sample's record."""
        return registry.field_sample(sha256).to_dict()

    @app.get(
        "/field-data/samples/{sha256}/image",
        tags=["field-data"],
        dependencies=guards.viewer,
        response_class=Response,
        responses={200: {"content": {media: {"schema": _BINARY} for media in _MEDIA.values()}}},
    )
    def field_image(sha256: Sha) -> Response:
        """The sample's image bytes."""
        sample = registry.field_sample(sha256)
        return Response(
            store.read(sha256, sample.image_format), media_type=_MEDIA[sample.image_format]
        )

    @app.put(
        "/field-data/samples/{sha256}/label", tags=["field-data"], dependencies=guards.operator
    )
    def label_sample(sha256: Sha, body: FieldLabel, request: Request) -> dict[str, Any]:
        """Confirm the device's answer or correct it (one of the bundle's labels)."""
        return registry.label_field_sample(
            sha256, body.label, by=principal_of(request).name
        ).to_dict()

    return receiver
