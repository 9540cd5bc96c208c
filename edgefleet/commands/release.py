"""``edgefleet keys`` and ``edgefleet release``: TUF keys, the release repository, signed releases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgefleet.commands._console import make_console

if TYPE_CHECKING:
    from fleet_server.trust import Repository

__all__ = ["keys", "release"]

_KEY_LOCK_HELP = (
    "Environment variable holding the passphrase of the offline keys (root, targets); "
    "their PEM files are then encrypted."
)


def _passphrases(variable: str | None) -> dict[str, str]:
    if variable is None:
        return {}
    value = os.environ.get(variable)
    if not value:
        raise click.UsageError(f"environment variable {variable} is empty or unset")
    return {"root": value, "targets": value}


@click.group()
def keys() -> None:
    """Create, rotate and revoke the TUF keys that sign releases and assignments.

    \b
    Offline keys (keep them off the fleet server):
      root     signs which keys are trusted (rotation, revocation)
      targets  the RELEASE key: signs which bundles exist
    Online keys (the fleet server holds these):
      snapshot, timestamp, assignments (which bundle each device/group runs)
    """


@keys.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--root-keys",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="How many root keys.",
)
@click.option(
    "--root-threshold",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Root signatures required.",
)
@click.option("--passphrase-env", help=_KEY_LOCK_HELP)
def keys_init(
    folder: Path, root_keys: int, root_threshold: int, passphrase_env: str | None
) -> None:
    """Generate Ed25519 keys for every role in FOLDER (private keys mode 0600)."""
    from fleet_server.trust import init_keys

    if folder.exists() and any(folder.glob("*.pem")):
        raise click.UsageError(f"{folder} already holds keys; refusing to overwrite them")
    folder.mkdir(parents=True, exist_ok=True)
    keyset = init_keys(
        folder,
        counts={"root": root_keys},
        thresholds={"root": root_threshold},
        passphrases=_passphrases(passphrase_env),
    )
    console = make_console()
    for role in ("root", "targets", "snapshot", "timestamp", "assignments"):
        ids = ", ".join(key.keyid[:16] for key in keyset.public_keys(role))
        where = "offline" if role in ("root", "targets") else "online"
        console.print(f"{role:12} {where:8} threshold {keyset.threshold(role)}  {ids}")
    console.print(f"wrote keys to {folder}; move root-*.pem and targets-*.pem off the fleet server")


def _repository(repo: Path, keys_folder: Path, passphrase_env: str | None) -> Repository:
    from fleet_server.trust import Repository, load_keys

    if (repo / "root.json").exists():
        return Repository(repo)
    every = load_keys(
        keys_folder,
        roles=("root", "targets", "snapshot", "timestamp", "assignments"),
        passphrases=_passphrases(passphrase_env),
    )
    created = Repository.create(repo, every)
    click.echo(f"created repository {repo} (root version {created.root_version})")
    return created


@click.command()
@click.argument(
    "bundles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The TUF repository folder (created on first release).",
)
@click.option(
    "--keys",
    "keys_folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder with the release key (targets-*.pem).",
)
@click.option("--passphrase-env", help=_KEY_LOCK_HELP)
def release(
    bundles: tuple[Path, ...], repo: Path, keys_folder: Path, passphrase_env: str | None
) -> None:
    """Sign BUNDLES into the targets role with the release key.

    The fleet server never needs this key: it publishes the new targets with
    its next snapshot and can then assign the bundles to devices.
    """
    from fleet_server.trust import load_keys

    repository = _repository(repo, keys_folder, passphrase_env)
    signers = load_keys(
        keys_folder, roles=("targets",), passphrases=_passphrases(passphrase_env)
    ).role("targets")
    console = make_console()
    for path in bundles:
        released = repository.release(path, signers)
        custom = released.custom
        console.print(
            f"released {custom.get('name')} {custom.get('version')} ({custom.get('format')} {custom.get('precision')}) "
            f"as {released.path}, {released.length} bytes"
        )


@keys.command("rotate")
@click.argument("role", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@click.option(
    "--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option(
    "--keys",
    "keys_folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
)
@click.option("--passphrase-env", help=_KEY_LOCK_HELP)
def keys_rotate(role: str, repo: Path, keys_folder: Path, passphrase_env: str | None) -> None:
    """Replace ROLE's key with a new one through a new root version (devices follow without re-provisioning)."""
    from fleet_server.trust import Repository, generate_key, load_keys

    passphrases = _passphrases(passphrase_env)
    old_paths = sorted(keys_folder.glob(f"{role}-*.pem"))
    if not old_paths:
        raise click.UsageError(f"no {role} key in {keys_folder}")
    old = load_keys(keys_folder, roles=(role,), passphrases=passphrases).public_keys(role)[0]
    root_signers = list(
        load_keys(keys_folder, roles=("root",), passphrases=passphrases).role("root")
    )
    new_path = keys_folder / f"{role}-{len(old_paths) + 1}.pem"
    new_signer = generate_key(new_path, passphrases.get(role))
    if role == "root":
        root_signers.append(new_signer)
    repository = Repository(repo)
    version = repository.rotate_key(role, old, new_signer.public_key, root_signers)
    old_paths[0].rename(old_paths[0].with_suffix(".pem.retired"))
    click.echo(
        f"{role}: key {old.keyid[:16]} replaced by {new_signer.public_key.keyid[:16]} in root version {version}"
    )
    if role == "targets":
        repository.resign("targets", new_signer)
        click.echo("targets re-signed with the new release key")


@keys.command("revoke")
@click.argument("role", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@click.argument("keyid")
@click.option(
    "--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option(
    "--keys",
    "keys_folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
)
@click.option("--passphrase-env", help=_KEY_LOCK_HELP)
def keys_revoke(
    role: str, keyid: str, repo: Path, keys_folder: Path, passphrase_env: str | None
) -> None:
    """Remove KEYID from ROLE in a new root version; metadata it signs is refused from then on."""
    from fleet_server.trust import Repository, load_keys

    root_signers = list(
        load_keys(keys_folder, roles=("root",), passphrases=_passphrases(passphrase_env)).role(
            "root"
        )
    )
    repository = Repository(repo)
    matches = [k for k in repository.root_keyids(role) if k.startswith(keyid)]
    if len(matches) != 1:
        raise click.UsageError(f"{keyid!r} matches {len(matches)} {role} keys")
    version = repository.revoke_key(role, matches[0], root_signers)
    click.echo(f"{role}: key {matches[0][:16]} revoked in root version {version}")
