"""The definitions and the CLI import no scikit-learn, SciPy or matplotlib: every Dagster step process, code
server and CLI call imports them, and those libraries cost seconds that only a fit or a report needs (they are
imported inside distill_fit, calibration_fit, topics_fit and report_figures, which only those import)."""

from __future__ import annotations

import json
import subprocess
import sys

from bsky_warehouse.project import REPO_ROOT

HEAVY = ("sklearn", "scipy", "matplotlib")
SCRIPT = f"""
import json, sys
import bsky_warehouse.definitions
import bsky_warehouse.cli
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & set({list(HEAVY)!r}))))
"""


def test_definitions_and_cli_import_no_fitting_or_plotting_library():
    """A fresh interpreter, so modules other tests imported do not count."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
