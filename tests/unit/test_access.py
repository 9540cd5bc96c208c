"""API tokens, roles and the audit log in the registry, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from edgefleet.testing import FakeClock
from fleet_server import db
from fleet_server.access import (
    BOOTSTRAP_NAME,
    SECRET_PREFIX,
    AuditRecord,
    Principal,
    Role,
    check_token_name,
    new_secret,
    token_hash,
)
from fleet_server.errors import NotFoundError, RegistryError
from fleet_server.registry import AuditRetention, Registry
from fleet_server.registry.access import LAST_USED_EVERY_S


@pytest.fixture
def registry(database_url: str, fake_clock: FakeClock) -> Iterator[Registry]:
    with Registry.open(database_url, clock=fake_clock) as opened:
        yield opened


def record(
    at: float, actor: str | None = "alice", status: int = 200, **fields: object
) -> AuditRecord:
    values: dict[str, object] = {
        "at": at,
        "actor": actor,
        "role": Role.OPERATOR if actor else None,
        "client": "10.0.0.7",
        "method": "POST",
        "path": "/rollouts",
        "status": status,
        **fields,
    }
    return AuditRecord(**values)  # type: ignore[arg-type]


def test_roles_are_ordered_and_each_holds_the_rights_below_it() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.ADMIN.allows(Role.VIEWER)
    assert Role.OPERATOR.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.OPERATOR.allows(Role.ADMIN)
    assert not Role.VIEWER.allows(Role.OPERATOR)
    assert [r.value for r in sorted(Role, key=lambda r: r.rank)] == ["viewer", "operator", "admin"]


def test_secrets_are_random_256_bit_and_only_their_sha256_is_kept() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and first.startswith(SECRET_PREFIX)
    assert len(first) - len(SECRET_PREFIX) == 43  # 32 bytes, URL-safe base64 without padding
    assert token_hash(first) == token_hash(first) != token_hash(second)
    assert len(token_hash(first)) == 64 and first not in token_hash(first)


def test_token_names_are_checked_and_the_bootstrap_name_is_reserved() -> None:
    assert check_token_name("ci-bot.2") == "ci-bot.2"
    with pytest.raises(ValueError, match="reserved"):
        check_token_name(BOOTSTRAP_NAME)
    with pytest.raises(ValueError, match="token name"):
        check_token_name("has space")


def test_a_token_is_created_found_by_its_secret_and_revoked(
    registry: Registry, fake_clock: FakeClock, database_url: str
) -> None:
    info, secret = registry.create_token("alice", "operator", created_by=BOOTSTRAP_NAME)
    assert (info.name, info.role, info.created_by, info.active) == (
        "alice",
        Role.OPERATOR,
        BOOTSTRAP_NAME,
        True,
    )
    assert info.created_at == fake_clock.now and info.last_used_at is None
    # only the hash is stored: the secret is nowhere in the table
    with registry._sessions() as session:
        row = session.scalars(select(db.ApiToken)).one()
        assert row.secret_sha256 == token_hash(secret)
        assert secret not in repr(row.__dict__)
    assert registry.principal(secret) == Principal("alice", Role.OPERATOR)
    assert registry.principal(secret + "x") is None
    assert registry.principal("") is None
    assert registry.token("alice").last_used_at == fake_clock.now

    with pytest.raises(RegistryError, match="token 'alice' exists"):
        registry.create_token("alice", "viewer", created_by=BOOTSTRAP_NAME)
    with pytest.raises(RegistryError, match="role 'boss' is not one of viewer, operator, admin"):
        registry.create_token("bob", "boss", created_by=BOOTSTRAP_NAME)
    with pytest.raises(RegistryError, match="reserved"):
        registry.create_token(BOOTSTRAP_NAME, "admin", created_by=BOOTSTRAP_NAME)

    fake_clock.advance(5)
    revoked = registry.revoke_token("alice", revoked_by="root-admin")
    assert (revoked.active, revoked.revoked_at, revoked.revoked_by) == (
        False,
        fake_clock.now,
        "root-admin",
    )
    assert registry.principal(secret) is None  # refused at once, on every replica
    with pytest.raises(RegistryError, match="already revoked"):
        registry.revoke_token("alice", revoked_by="root-admin")
    with pytest.raises(NotFoundError, match="unknown API token 'nobody'"):
        registry.revoke_token("nobody", revoked_by="root-admin")

    # a revoked name may be given to a new token; the old secret stays refused
    again, new = registry.create_token("alice", "viewer", created_by="root-admin")
    assert again.active and again.role is Role.VIEWER
    assert registry.principal(secret) is None
    assert registry.principal(new) == Principal("alice", Role.VIEWER)
    assert [t.name for t in registry.tokens()] == ["alice"]


def test_last_used_is_written_at_most_once_a_minute(
    registry: Registry, fake_clock: FakeClock
) -> None:
    _, secret = registry.create_token("prometheus", Role.VIEWER, created_by=BOOTSTRAP_NAME)
    first = fake_clock.now
    registry.principal(secret)
    fake_clock.advance(LAST_USED_EVERY_S - 1)
    registry.principal(secret)
    assert registry.token("prometheus").last_used_at == first
    fake_clock.advance(1)
    registry.principal(secret)
    assert registry.token("prometheus").last_used_at == fake_clock.now


def test_the_audit_log_filters_by_time_and_actor_newest_last(
    registry: Registry, fake_clock: FakeClock
) -> None:
    start = fake_clock.now
    registry.add_audit(record(start, "alice", 201))
    registry.add_audit(record(start + 10, "bob", 403, error="needs the operator role"))
    registry.add_audit(record(start + 20, None, 401, error="missing or wrong bearer token"))
    registry.add_audit(record(start + 30, "alice", 409, path="/rollouts/1/approve"))
    entries = registry.audit()
    assert [(e.actor, e.status) for e in entries] == [
        ("alice", 201),
        ("bob", 403),
        (None, 401),
        ("alice", 409),
    ]
    assert entries[1].error == "needs the operator role" and entries[1].client == "10.0.0.7"
    assert entries[2].role is None and entries[0].role is Role.OPERATOR
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert [e.at for e in registry.audit(since=start + 10)] == [start + 10, start + 20, start + 30]
    assert [e.path for e in registry.audit(actor="alice")] == ["/rollouts", "/rollouts/1/approve"]
    assert [e.status for e in registry.audit(limit=2)] == [401, 409]  # the newest two
    with pytest.raises(RegistryError, match="limit must be between 1 and"):
        registry.audit(limit=0)


def test_long_fields_are_clipped_to_what_the_columns_hold(registry: Registry) -> None:
    entry = registry.add_audit(
        record(1.0, path="/" + "p" * 5000, error="e" * 5000, body="b" * 5000, client="c" * 100)
    )
    assert len(entry.path) == 1024 and entry.path.endswith("...")
    assert entry.error is not None and len(entry.error) == 2048
    assert entry.body is not None and len(entry.body) == 1024
    assert entry.client is not None and len(entry.client) == 64


def test_the_audit_log_is_kept_within_its_retention_bounds(
    registry: Registry, fake_clock: FakeClock
) -> None:
    registry.audit_retention = AuditRetention(max_entries=5, max_age_s=3600.0)
    start = fake_clock.now
    for i in range(8):
        registry.add_audit(record(start + i, status=200 + i))
    assert registry.prune(now=start + 8) == 3  # the oldest three beyond the newest five
    assert [e.status for e in registry.audit()] == [203, 204, 205, 206, 207]
    assert registry.prune(now=start + 8) == 0
    assert registry.prune(now=start + 3600 + 5.5) == 3  # older than an hour: 203, 204, 205
    assert [e.status for e in registry.audit()] == [206, 207]
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        AuditRetention(max_entries=0)
    with pytest.raises(ValueError, match="max_age_s must be positive"):
        AuditRetention(max_age_s=0)
