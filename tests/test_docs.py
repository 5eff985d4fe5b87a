"""The dbt docs site is generated and served, and its manifest describes every mart."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from bsky_warehouse.project import DBT_MANIFEST, DBT_PROJECT_DIR, DOCS_TARGET, REPO_ROOT
from tests.processes import interrupt_group

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_docs_site_serves_and_lists_every_mart(tmp_path):
    port = free_port()
    env = {**os.environ, "BSKY_WAREHOUSE_DB": str(tmp_path / "wh.duckdb")}
    project_manifest = DBT_MANIFEST.stat().st_mtime_ns
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsky_warehouse.cli", "docs", "--serve", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        index = None
        while time.monotonic() < deadline:
            try:
                index = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
                time.sleep(0.5)
        assert index is not None and index.status_code == 200
        assert "dbt" in index.text.lower()
        manifest = httpx.get(f"http://127.0.0.1:{port}/manifest.json", timeout=10).json()
        models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
        marts = {p.stem for p in (DBT_PROJECT_DIR / "models" / "marts").iterdir() if p.suffix in (".sql", ".py")}
        assert "scorer_agreement" in marts  # a Python model
        assert marts and marts <= models
        for node in manifest["nodes"].values():
            if node["resource_type"] == "model" and node["name"] in marts:
                assert node["description"].strip(), node["name"]
                assert all(c["description"].strip() for c in node["columns"].values()), node["name"]
        assert "bsky-warehouse" in manifest["docs"]["doc.bsky_warehouse.__overview__"]["block_contents"]
        assert manifest["exposures"]
        # The site has a target dir of its own: the manifest every Dagster process loads was not rewritten.
        assert (DOCS_TARGET / "catalog.json").is_file() and DBT_MANIFEST.stat().st_mtime_ns == project_manifest
    finally:
        # As Ctrl-C stops it, with a generous grace: on a busy machine the 20 s this once waited was not enough.
        interrupt_group(proc)
