"""`arbees keys DIR`: the CurveZMQ certificates a multi-host runtime needs (layout in `broker.security`).

Writes the runtime's server pair, one client pair per `--client` name (the first
is the `client` pair the roles use), and `authorized/` with the public key of
every client, so the directory as written works on every host at once; for a
tighter deployment, copy each host only what it needs (see the README). Secret
files are created with mode 0600 and never overwritten without `--force`, since
replacing a key locks out every host that still holds the old one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click
import zmq.auth

from broker.security import AUTHORIZED, CLIENT, SERVER


def write_keys(directory: Path, clients: tuple[str, ...] = (), *, force: bool = False) -> list[Path]:
    """Create the key files in `directory` (mode 0700); return the secret files written.

    FileExistsError names the first existing key file unless `force`.
    """
    names = [SERVER, CLIENT, *(c for c in clients if c != CLIENT)]
    for name in names:
        if not name.isidentifier() or name == AUTHORIZED:
            raise ValueError(f"key name {name!r} must be a plain identifier (letters, digits, _)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    authorized = directory / AUTHORIZED
    if not force:
        for name in names:
            for suffix in (".key", ".key_secret"):
                if (directory / f"{name}{suffix}").exists():
                    raise FileExistsError(directory / f"{name}{suffix}")
    authorized.mkdir(mode=0o700, exist_ok=True)
    secrets = []
    # Generated in a private scratch directory, then moved: a secret is never readable by others, even briefly.
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        os.chmod(scratch, 0o700)
        for name in names:
            public, secret = zmq.auth.create_certificates(scratch, name)
            os.chmod(secret, 0o600)
            os.replace(secret, directory / f"{name}.key_secret")
            os.replace(public, directory / f"{name}.key")
            secrets.append(directory / f"{name}.key_secret")
            if name != SERVER:
                shutil.copyfile(directory / f"{name}.key", authorized / f"{name}.key")
    return secrets


@click.command("keys")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--client", "clients", multiple=True, metavar="NAME",
              help="Also create the client pair NAME (repeatable), e.g. one per host or tool; all are authorized.")
@click.option("--force", is_flag=True, help="Replace existing keys (hosts holding the old ones are locked out).")
def keys(directory: Path, clients: tuple[str, ...], force: bool) -> None:
    """Generate the CurveZMQ certificates for `--curve-dir DIR` (secret files mode 0600)."""
    try:
        written = write_keys(directory, clients, force=force)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc} exists: keys are not overwritten (every host holding them would be "
                                   "locked out); pass --force to replace them") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"arbees keys: wrote {len(written)} key pair(s) to {directory}; run every role with "
               f"--curve-dir {directory} (or ARBEES_CURVE_DIR={directory})")
