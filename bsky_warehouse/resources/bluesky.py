"""Bluesky sources. The archive source reads Jetstream-format JSONL dumps (plain, .gz or .zst).

Each file is streamed line by line, so memory does not grow with the archive; every line is parsed and
only the outcomes owned by the requested day are handed on.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import IO

import zstandard
from dagster import ConfigurableResource
from pydantic import Field

from bsky_warehouse.events import Outcome, parse_event

ARCHIVE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")


def open_archive(path: Path) -> IO[bytes]:
    """A binary line stream over a plain, gzip or zstandard file."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        raw = path.open("rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return path.open("rb")


def archive_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"archive directory {directory} does not exist")
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES))


def read_outcomes(directory: Path, day: date) -> Iterator[tuple[str, int, bytes, Outcome]]:
    """Every line of the archive that belongs to `day`, plus the undated lines (owned by no single day:
    every day's run sees them; rejects among them are stored once, keyed by file and line).

    Yields (file relative to the archive, 1-based line number, the raw line, its outcome).
    """
    for path in archive_files(directory):
        relative = str(path.relative_to(directory))
        with open_archive(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                outcome = parse_event(line)
                if outcome.day == day or outcome.day is None:
                    yield relative, line_no, line, outcome


class ArchiveSource(ConfigurableResource):
    """Jetstream-format JSONL files under one directory (the demo ships `data/sample/jetstream`)."""

    directory: str = Field(default="data/sample/jetstream", description="Directory of .jsonl[.gz|.zst] files.")

    def read_day(self, day: date) -> Iterator[tuple[str, int, bytes, Outcome]]:
        return read_outcomes(Path(self.directory).expanduser().resolve(), day)
