"""edgefleet's fleet server: registry, staged rollouts, MQTT delivery (operator side).

The house, one idea per module, imports pointing down the list::

    process.py          the server as one process: options, database, keys, uvicorn
      mqtt_client.py      broker URLs, the embedded amqtt broker, the server's paho client
    api/                HTTP: app.py (errors, health, metrics), models.py, routes.py; auth.py
                        (tokens and each route's role), audit.py (the audit trail),
                        access_routes.py (/tokens, /audit), drift_routes.py (/drift),
                        field_routes.py (/field-data), console_routes.py (/console/api)
    console/            the operator's console: the page, its scripts and styles (static/),
                        served by the API; cached page reads (registry/console_views.py)
    metrics.py          /metrics for Prometheus: the registry's counts at each scrape, and
                        the server's own work (queue, reports, chunks, batch histograms)
    server.py           FleetServer, the broker-facing shell: reports in, assignments out
      instruments.py      the report batches' histograms, for /metrics
      inbox.py            reports queued off paho's thread, read in batches
      chunk_server.py     bundle chunks to devices (chunk_io.py: requests, files, counters)
      publisher.py        TUF metadata, retained
      signer.py           the leader's signing: planner actions -> assignments, published
      credentials.py      devices' broker credentials (broker_auth.py: Mosquitto's files;
                          amqtt_auth.py: the embedded broker's)
      leadership.py       which replica leads the rollouts: the lease, renewed on its own
                          thread (LeaseKeeper) and fenced
      state_sweep.py      the leader re-reads retained device states a dead replica lost
      rate_limit.py       per-device token buckets for reports that add rows
      http_guard.py       the HTTP API's checks before a body is read
    coordinator.py      RolloutCoordinator: the followed rollouts, driven by plain values
    rollout_plan.py     the planner, a pure state machine (rollout_rules.py: its rules;
                        rollout_progress.py: its values; rollout_spec.py: what was asked;
                        rollout_windows.py: sending as maintenance windows allow;
                        rollout_approval.py: one approval, or two people's: four-eyes)
    windows.py          maintenance window specs parsed and evaluated (window_base.py: what
                        every window is; window_cron.py: cron-like windows)
    quality_gate.py     a wave's verdict from figures (quality_figures.py: the figures)
    drift.py            live class mix and confidence against a bundle's baseline (pure; drift_fleet.py:
                        every device and group in one pass; drift_monitor.py: a pass every minute, and
                        the /metrics series)
    field_data.py       field samples: the content-addressed images, records, export to class/ folders
                        (field_data_receiver.py: samples in over MQTT, acks and per-group settings out)
    registry/           the database, in rooms: unit (transactions), catalogue, devices,
                        ingest, telemetry, rollouts (the planner state saved and projected
                        into tables: the one writer), timeline, stats (counts for /metrics),
                        windows (maintenance windows per tag), access (API tokens, the
                        audit log), leases (the leader lease and its epoch)
    db/                 models.py (tables), engine.py (engines, sessions, migrations),
                        and one module per room's own tables (leases, windows, access)
    statuses.py         the one vocabulary of rollout, wave and device statuses
    records.py          the plain frozen records the registry hands out
    access.py           roles, token secrets and their hashes, audit records (pure)
    reports.py          device reports parsed by edge_runtime.protocol (one wire format)
    telemetry.py        device telemetry snapshots read into figures
    trust/              the TUF repository and the online keys
    tls.py              TLS settings: towards an mqtts:// broker, for devices, for HTTPS
    fleet_ca.py         the fleet CA's folder, on the operator's machine: issue, revoke
      certificates.py     X.509 keys, certificates, revocation lists and their checks (pure)
    errors.py           typed errors (NotFoundError is a 404)

A rollout's one truth is the planner's state: the coordinator feeds it, the
registry saves it and projects it into the rollout, wave and device rows that
the API, the CLI and queries read.
"""

from __future__ import annotations

from fleet_server.errors import FleetError

__all__ = ["FleetError"]
