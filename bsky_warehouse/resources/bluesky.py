"""Bluesky sources. The archive source reads Jetstream-format JSONL dumps (plain, .gz or .zst).

Each file is streamed in bounded chunks and split into lines here, so memory does not grow with the archive or
with one hostile line; every line is parsed and only the outcomes owned by the requested day are handed on.
A file that cannot be read to its end (unreadable, not a file, truncated, corrupt) keeps the lines read before
the fault and becomes one rejected record itself, at the line where it broke: a bad file never stops a run.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import zstandard
from dagster import ConfigurableResource
from pydantic import Field

from bsky_warehouse.events import Outcome, parse_event, within_partitions
from bsky_warehouse.partitions import partition_start_date

ARCHIVE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
READ_CHUNK = 1 << 20
# zstd can expand 4 bytes into a 128 KiB block: feeding it small pieces bounds what one call can allocate.
ZSTD_INPUT_CHUNK = 1 << 12
# A post event is a few KiB (text is at most 3000 bytes); a line longer than this is not one, and is not held whole.
MAX_LINE_BYTES = 4 << 20
LONG_LINE_KEPT_BYTES = 1 << 16  # how much of an over-long line its rejected record keeps


class FileFault(Exception):
    """A file that cannot be read (any further): `reason` is the stored reason, `detail` what went wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _plain_chunks(fh: io.BufferedIOBase) -> Iterator[bytes]:
    while chunk := fh.read1(READ_CHUNK):
        yield chunk


def _gzip_chunks(fh: io.BufferedIOBase) -> Iterator[bytes]:
    """Every member's data; a truncated stream raises EOFError, a bad CRC or header BadGzipFile, as gzip does."""
    with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
        while chunk := gz.read1(READ_CHUNK):  # read1: a later fault must not swallow data already read
            yield chunk


def _zstd_chunks(fh: io.BufferedIOBase) -> Iterator[bytes]:
    """Every frame's data. zstandard's stream readers end quietly at a truncated frame, so frames are decoded here
    and a frame still open at the end of the file raises EOFError."""
    decompressor = zstandard.ZstdDecompressor()
    frame = None
    while compressed := fh.read(ZSTD_INPUT_CHUNK):
        while compressed:
            if frame is None:
                frame = decompressor.decompressobj()
            if out := frame.decompress(compressed):
                yield out
            compressed, frame = (frame.unused_data, None) if frame.eof else (b"", frame)
    if frame is not None:
        raise EOFError("zstd frame ends before its end marker")


def archive_chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of one archive file; any failure to read it is a FileFault naming the reason."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise FileFault("not_a_regular_file", f"{path.name} is not a regular file")
        with path.open("rb") as fh:
            if path.name.endswith(".gz"):
                yield from _gzip_chunks(fh)
            elif path.name.endswith(".zst"):
                yield from _zstd_chunks(fh)
            else:
                yield from _plain_chunks(fh)
    except EOFError as err:
        raise FileFault("truncated_file", _describe(err)) from err
    except (gzip.BadGzipFile, zlib.error, zstandard.ZstdError) as err:
        raise FileFault("corrupt_file", _describe(err)) from err
    except OSError as err:
        raise FileFault("unreadable_file", _describe(err)) from err


def _region_runs(region: bytes, max_bytes: int) -> Iterator[list[str] | tuple[bytes, int]]:
    """The whole lines of one chunk: as one list of str when every line decodes and fits, else one by one."""
    parts = None
    if len(region) > max_bytes:  # only a chunk larger than the limit can hold an over-long line
        parts = region.split(b"\n")
        if max(map(len, parts)) > max_bytes:
            for part in parts:
                yield part[:max_bytes], len(part)
            return
    try:
        text = region.decode("utf-8")  # a newline byte never sits inside a UTF-8 sequence: lines decode alike
    except UnicodeDecodeError:
        for part in parts or region.split(b"\n"):
            yield part, len(part)
        return
    yield text.split("\n")


def split_runs(chunks: Iterable[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[list[str] | tuple[bytes, int]]:
    """The lines of `split_lines`, in order, mostly in runs: the whole lines inside one chunk come as one list of
    str when they all decode as UTF-8 and fit the limit, so the archive index hands them to DuckDB without a Python
    step per line. A line that runs across chunks, and each line of a run that does not decode or fit, comes alone
    as (its bytes, cut to `max_bytes`, and its full length)."""
    pending = bytearray()  # the start of a line that runs on into the next chunk, at most max_bytes of it
    pending_len = 0
    for chunk in chunks:
        first = chunk.find(b"\n")
        if first < 0:
            pending += chunk[: max(0, max_bytes - len(pending))]
            pending_len += len(chunk)
            continue
        head = chunk[:first]
        pending += head[: max(0, max_bytes - len(pending))]
        yield bytes(pending), pending_len + len(head)
        last = chunk.rfind(b"\n")
        if last > first:
            yield from _region_runs(chunk[first + 1 : last], max_bytes)
        rest = chunk[last + 1 :]
        pending = bytearray(rest[:max_bytes])
        pending_len = len(rest)
    if pending_len:
        yield bytes(pending), pending_len


def run_lines(run: list[str] | tuple[bytes, int]) -> Iterator[tuple[bytes, int]]:
    """The (bytes, full length) of each line of one run of `split_runs`."""
    if isinstance(run, list):
        for text in run:
            data = text.encode("utf-8")
            yield data, len(data)
    else:
        yield run


def split_lines(chunks: Iterable[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[bytes, int]]:
    """Lines split on `\\n` only (newline dropped; a last line without one still counts), each with its full
    length. A line longer than `max_bytes` comes cut to its first `max_bytes`: a line running across chunks is
    never held whole beyond that."""
    for run in split_runs(chunks, max_bytes):
        yield from run_lines(run)


def line_outcome(data: bytes, length: int, first_day: date | None) -> tuple[bytes, Outcome]:
    """A line's stored raw text and outcome; an over-long line is rejected unparsed, keeping its start."""
    if length > MAX_LINE_BYTES:
        kept = data[:LONG_LINE_KEPT_BYTES] + f"...[line of {length} bytes cut]".encode()
        return kept, Outcome("reject", reason="line_too_long")
    outcome = parse_event(data)
    return data, outcome if first_day is None else within_partitions(outcome, first_day)


def file_runs(path: Path) -> Iterator[tuple[int, list[str] | tuple[bytes, int] | FileFault]]:
    """(1-based number of its first line, the run of `split_runs`) for one file; a fault ends the file with (the
    line where it broke, the fault)."""
    line_no = 1
    try:
        for run in split_runs(archive_chunks(path)):
            yield line_no, run
            line_no += len(run) if isinstance(run, list) else 1
    except FileFault as fault:
        yield line_no, fault


def fault_line(fault: FileFault) -> bytes:
    """A fault's stored raw text: the detail may quote a file name that is not UTF-8 (surrogate-escaped), kept
    visible, never a crash."""
    return fault.detail.encode("utf-8", "backslashreplace")


def file_lines(path: Path) -> Iterator[tuple[int, bytes, int, FileFault | None]]:
    """(1-based line number, line, its full length, None) for every line of one file; a fault ends the file with
    (the line where it broke, what went wrong, 0, the fault)."""
    for line_no, run in file_runs(path):
        if isinstance(run, FileFault):
            yield line_no, fault_line(run), 0, run
        else:
            for offset, (data, length) in enumerate(run_lines(run)):
                yield line_no + offset, data, length, None


def fault_outcome(fault: FileFault) -> Outcome:
    """A file that cannot be read any further is one undated reject, at the line where it broke."""
    return Outcome("reject", reason=fault.reason)


def file_outcomes(path: Path, first_day: date | None = None) -> Iterator[tuple[int, bytes, Outcome]]:
    """(1-based line number, raw line, outcome) for every line of one file; a fault ends the file with one undated
    reject at the line where it broke, whose raw text says what went wrong."""
    for line_no, data, length, fault in file_lines(path):
        if fault is None:
            yield (line_no, *line_outcome(data, length, first_day))
        else:
            yield line_no, data, fault_outcome(fault)


def archive_files(directory: Path) -> list[Path]:
    """Every entry named like an archive file, whatever it is: one that is not a readable file is rejected when
    read, never silently skipped."""
    if not directory.is_dir():
        raise FileNotFoundError(f"archive directory {directory} does not exist")
    return sorted(p for p in directory.rglob("*") if p.name.endswith(ARCHIVE_SUFFIXES))


def display_path(path: Path) -> str:
    """A path as storable text: bytes of a file name that are not UTF-8 are escaped, never a crash on insert."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def read_outcomes(
    directory: Path, day: date, first_day: date | None = None
) -> Iterator[tuple[str, int, bytes, Outcome]]:
    """Every line of the archive that belongs to `day`, plus the undated lines (owned by no single day:
    every day's run sees them; rejects among them are stored once, keyed by file and line).

    With `first_day` (the first partition), nothing is owned by an earlier day (see `within_partitions`).
    Yields (file relative to the archive, 1-based line number, the raw line, its outcome).
    """
    for path in archive_files(directory):
        relative = display_path(path.relative_to(directory))
        for line_no, raw, outcome in file_outcomes(path, first_day):
            if outcome.day == day or outcome.day is None:
                yield relative, line_no, raw, outcome


class ArchiveSource(ConfigurableResource):
    """Jetstream-format JSONL files under one directory (the demo ships `data/sample/jetstream`)."""

    directory: str = Field(default="data/sample/jetstream", description="Directory of .jsonl[.gz|.zst] files.")

    @property
    def path(self) -> Path:
        return Path(self.directory).expanduser().resolve()

    def read_day(self, day: date) -> Iterator[tuple[str, int, bytes, Outcome]]:
        """The per-day path (every file parsed, that day's lines kept); the ingest asset reads the archive index,
        which yields the same outcomes, and this stays as its reference (tests/test_archive_index.py)."""
        return read_outcomes(self.path, day, partition_start_date())
