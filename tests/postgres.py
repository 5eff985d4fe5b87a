"""A real PostgreSQL for the DuckLake tests: Debian's server (`make postgres`), started in a temporary directory
on a Unix socket only (no TCP port to collide with), stopped at the end of the session."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_bin() -> Path | None:
    """The newest installed server's bin directory (`/usr/lib/postgresql/<major>/bin`)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _as_server_user() -> dict[str, str]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` user the package made."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres"}


class Postgres:
    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.bin = bin_dir
        self.socket_dir = root / "socket"
        self.data = root / "data"

    def dsn(self, database: str) -> str:
        return f"dbname={database} host={self.socket_dir} user=postgres"

    def create_database(self) -> str:
        name = "lake_" + uuid.uuid4().hex[:12]
        self._run("psql", "-q", "-h", str(self.socket_dir), "-U", "postgres", "-c", f"CREATE DATABASE {name}")
        return name

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], check=True, capture_output=True, text=True, **_as_server_user())


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    bin_dir = server_bin()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server installed: run `make postgres` (Debian's postgresql package)")
    root = Path(tempfile.mkdtemp(prefix="bsky-pg-", dir="/tmp"))
    root.chmod(0o755)
    server = Postgres(root, bin_dir)
    for folder in (server.data, server.socket_dir):
        folder.mkdir()
        if os.geteuid() == 0:
            shutil.chown(folder, user="postgres", group=pwd.getpwnam("postgres").pw_gid)
    server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-k {server.socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
    server._run("pg_ctl", "-D", str(server.data), "-o", options, "-l", str(server.data / "server.log"), "-w", "start")
    try:
        yield server
    finally:
        server._run("pg_ctl", "-D", str(server.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
