"""A Jetstream v1 client that records the firehose into the archive layout the ingest already reads.

Jetstream keeps only a short window of history (about a day and a half on the public instances), so it can
fill in yesterday or the last few hours, never an older day: those come from an archive dump
(`bsky-warehouse materialize --archive DIR`). What is collected lands as
`out_dir/<YYYY-MM-DD>/jetstream-<first_time_us>.jsonl`, the raw event text one per line, exactly what the
archive source parses, so live and archived events share one parser and one ingest path.

Guarantees, given Jetstream's semantics (a `cursor` replays events with `time_us >= cursor`, in order):

* no gaps, no duplicates across dropped connections: a reconnect resumes from the last written `time_us`
  and skips the replayed events up to and including it (and the undated lines that followed it);
* bounded memory: lines are streamed into chunk files of `chunk_events` lines, never held for a day;
* all-or-nothing visibility: chunks are written as `*.jsonl.part` (which the archive reader ignores) and
  renamed only once the whole window has been collected, so a failed run never looks like a complete day.

Caveat: two different events with the same `time_us` on either side of a dropped connection cannot be told
apart, and the second would be skipped as replayed. Jetstream assigns `time_us` from a monotonic clock per
instance, so this does not happen against one instance.

Compression: with `compress=True` Jetstream sends each event as a binary zstd frame made with its published
custom dictionary (`zstd_dictionary.go`'s `zstd_dictionary` file in the bluesky-social/jetstream repo).
Pass that file as `zstd_dictionary`; without it only frames made without a dictionary can be read.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import orjson
import websockets
import zstandard
from dagster import ConfigurableResource
from pydantic import Field
from websockets.asyncio.client import ClientConnection, connect

from bsky_warehouse.events import POST_COLLECTION
from bsky_warehouse.settings import JETSTREAM_HOST

log = logging.getLogger(__name__)

DEFAULT_HOST = JETSTREAM_HOST.default
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
FLUSH_EVERY = 1000
ARCHIVE_HINT = "use an archive dump instead: `bsky-warehouse materialize --archive DIR`"
# A time_us read straight from the bytes of a line that is not valid JSON (not from an escaped string).
_RAW_TIME_US = re.compile(rb'(?<!\\)"time_us"\s*:\s*(\d{1,17})(?![\d.eE])')


class JetstreamError(RuntimeError):
    """Collection failed; `stats` says what had been received (chunks stay as `.part` files)."""

    def __init__(self, message: str, stats: CollectStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats


class JetstreamRetentionError(JetstreamError):
    """The requested window starts before what Jetstream still retains."""


@dataclass(slots=True)
class CollectStats:
    """What one collection wrote. `files` are the finished chunk paths, in write order."""

    events_written: int = 0
    files: list[Path] = field(default_factory=list)
    reconnects: int = 0
    skipped_replayed: int = 0
    first_time_us: int | None = None
    last_time_us: int | None = None


def subscribe_url(
    host: str,
    cursor_us: int | None,
    collections: tuple[str, ...] | list[str] = (POST_COLLECTION,),
    compress: bool = False,
    secure: bool = True,
) -> str:
    """The `/subscribe` URL; `secure=False` gives `ws://` for local test servers."""
    params: list[tuple[str, str]] = [("wantedCollections", c) for c in collections]
    if cursor_us is not None:
        params.append(("cursor", str(int(cursor_us))))
    if compress:
        params.append(("compress", "true"))
    scheme = "wss" if secure else "ws"
    return f"{scheme}://{host}/subscribe?{urlencode(params)}"


def day_bounds_us(day: date) -> tuple[int, int]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return _to_us(start), _to_us(start + timedelta(days=1))


def _to_us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def line_time_us(line: bytes) -> int | None:
    """The event's `time_us`, also for lines that are not valid JSON (None when it cannot be read)."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        match = _RAW_TIME_US.search(line)
        return int(match.group(1)) if match else None
    if isinstance(event, dict):
        value = event.get("time_us")
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**17:
            return value
    return None


def _as_line(message: bytes) -> bytes:
    """One archive line per message: a multi-line JSON message is re-serialised compactly, and raw
    newlines in an invalid one are escaped, so the reader never splits one event into two lines."""
    message = message.strip(b"\r\n")
    if b"\n" not in message and b"\r" not in message:
        return message
    try:
        return orjson.dumps(orjson.loads(message))
    except orjson.JSONDecodeError:
        return message.replace(b"\r", b"\\r").replace(b"\n", b"\\n")


class _Decoder:
    """Turns websocket messages into bytes; compressed frames are independent zstd frames, one per event."""

    def __init__(self, compress: bool, zstd_dictionary: Path | None) -> None:
        self._dctx: zstandard.ZstdDecompressor | None = None
        if compress:
            dict_data = (
                zstandard.ZstdCompressionDict(Path(zstd_dictionary).read_bytes())
                if zstd_dictionary is not None
                else None
            )
            self._dctx = zstandard.ZstdDecompressor(dict_data=dict_data)

    def __call__(self, message: str | bytes) -> bytes:
        if isinstance(message, str):
            return message.encode("utf-8", errors="surrogateescape")
        if self._dctx is None:
            return message
        try:
            return self._dctx.decompressobj().decompress(message)
        except zstandard.ZstdError as err:
            raise JetstreamError(
                f"cannot decompress a Jetstream frame ({err}); compressed frames need Jetstream's published "
                "zstd dictionary (pass zstd_dictionary=PATH) or collect with compress=False"
            ) from err


class _ChunkWriter:
    """Streams lines into `<out>/<day>/jetstream-<first_time_us>.jsonl.part` chunks; `finish` publishes them."""

    def __init__(self, out_dir: Path, chunk_events: int, fallback_time_us: int) -> None:
        if chunk_events < 1:
            raise ValueError("chunk_events must be at least 1")
        self.out_dir = out_dir
        self.chunk_events = chunk_events
        self._fallback_time_us = fallback_time_us
        self._fh: IO[bytes] | None = None
        self._day: date | None = None
        self._count = 0
        self.parts: list[Path] = []

    def write(self, line: bytes, time_us: int | None) -> None:
        day = datetime.fromtimestamp(time_us / 1_000_000, UTC).date() if time_us is not None else None
        if self._fh is None or self._count >= self.chunk_events or (day is not None and day != self._day):
            self._open(time_us if time_us is not None else self._fallback_time_us)
        assert self._fh is not None
        self._fh.write(line + b"\n")
        self._count += 1
        if time_us is not None:
            self._fallback_time_us = time_us
        if self._count % FLUSH_EVERY == 0:
            self._fh.flush()

    def _open(self, first_time_us: int) -> None:
        self.close()
        day = datetime.fromtimestamp(first_time_us / 1_000_000, UTC).date()
        folder = self.out_dir / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"jetstream-{first_time_us}.jsonl.part"
        suffix = 1
        while path in self.parts:
            path = folder / f"jetstream-{first_time_us}-{suffix}.jsonl.part"
            suffix += 1
        self._fh = path.open("wb")
        self._day, self._count = day, 0
        self.parts.append(path)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None

    def finish(self) -> list[Path]:
        """Publish every chunk (drop the `.part` suffix); returns the final paths."""
        self.close()
        finished = []
        for part in self.parts:
            final = part.with_name(part.name.removesuffix(".part"))
            part.replace(final)
            finished.append(final)
        return finished


@dataclass(slots=True)
class _Window:
    """Resume state: what was last written, and how many undated lines followed it (replayed after it too)."""

    start_us: int
    end_us: int
    last_us: int | None = None
    undated_after_last: int = 0


async def _collect_window(
    host: str,
    window: _Window,
    out_dir: Path,
    *,
    secure: bool,
    compress: bool,
    zstd_dictionary: Path | None,
    collections: tuple[str, ...],
    chunk_events: int,
    max_reconnects: int,
    idle_timeout_s: float,
    backoff_base_s: float,
    backoff_max_s: float,
) -> CollectStats:
    stats = CollectStats()
    writer = _ChunkWriter(out_dir, chunk_events, window.start_us)
    decode = _Decoder(compress, zstd_dictionary)
    failures = 0
    try:
        while True:
            cursor = window.last_us if window.last_us is not None else window.start_us
            url = subscribe_url(host, cursor, collections, compress=compress, secure=secure)
            written_before = stats.events_written
            try:
                done = await _stream(url, window, writer, decode, stats, idle_timeout_s)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as err:
                done, reason = False, f"{type(err).__name__}: {err}"
            else:
                reason = "connection closed before the window's end"
            if done:
                break
            failures = 0 if stats.events_written > written_before else failures + 1
            if failures > max_reconnects:
                raise JetstreamError(
                    f"Jetstream at {host} failed {failures} times in a row without progress ({reason}); "
                    f"giving up after {stats.events_written} events, last time_us {window.last_us}",
                    stats,
                )
            stats.reconnects += 1
            delay = min(backoff_max_s, backoff_base_s * 2 ** max(failures - 1, 0)) * random.uniform(0.5, 1.0)
            log.warning("jetstream: %s; reconnecting from cursor %s in %.2fs", reason, window.last_us, delay)
            await asyncio.sleep(delay)
    except BaseException:
        writer.close()
        raise
    stats.files = writer.finish()
    return stats


async def _stream(
    url: str,
    window: _Window,
    writer: _ChunkWriter,
    decode: Callable[[str | bytes], bytes],
    stats: CollectStats,
    idle_timeout_s: float,
) -> bool:
    """Read one connection; True once an event at or past the window's end arrived (the window is complete)."""
    async with connect(url, max_size=MAX_MESSAGE_BYTES, open_timeout=idle_timeout_s, compression=None) as ws:
        try:
            return await _consume(ws, window, writer, decode, stats, idle_timeout_s)
        finally:
            # A firehose never drains: with unread messages queued the client stops reading, so a closing
            # handshake would wait out close_timeout. Leaving is all that is needed, so drop the socket.
            ws.transport.abort()


async def _consume(
    ws: ClientConnection,
    window: _Window,
    writer: _ChunkWriter,
    decode: Callable[[str | bytes], bytes],
    stats: CollectStats,
    idle_timeout_s: float,
) -> bool:
    # Replayed from the cursor: everything up to the last written event (the anchor) and the undated lines
    # written after it were seen before. Without an anchor, only the leading undated lines were.
    replaying = window.last_us is not None or window.undated_after_last > 0
    anchor_seen = window.last_us is None
    undated_to_skip = window.undated_after_last
    while True:
        try:
            message = await asyncio.wait_for(ws.recv(), timeout=idle_timeout_s)
        except TimeoutError:
            log.warning("jetstream: no message for %ss, treating the connection as stalled", idle_timeout_s)
            return False
        line = _as_line(decode(message))
        if not line.strip():
            continue
        time_us = line_time_us(line)
        if time_us is None:
            if replaying and not anchor_seen:
                stats.skipped_replayed += 1
                continue
            if replaying and undated_to_skip > 0:
                undated_to_skip -= 1
                stats.skipped_replayed += 1
                continue
            writer.write(line, None)
            stats.events_written += 1
            window.undated_after_last += 1
            continue
        if replaying:
            if window.last_us is not None and time_us <= window.last_us:
                anchor_seen = anchor_seen or time_us == window.last_us
                stats.skipped_replayed += 1
                continue
            replaying = False
        if time_us >= window.end_us:
            return True
        if time_us < window.start_us:
            continue
        writer.write(line, time_us)
        stats.events_written += 1
        window.last_us, window.undated_after_last = time_us, 0
        if stats.first_time_us is None:
            stats.first_time_us = time_us
        stats.last_time_us = time_us


def _run(host: str, window: _Window, out_dir: Path, **options: Any) -> CollectStats:
    return asyncio.run(_collect_window(host, window, Path(out_dir), **options))


def _clear_stale_parts(folder: Path) -> None:
    """`.part` chunks are only ever left by a failed run; a new run of the same window replaces them."""
    if folder.is_dir():
        for part in folder.glob("jetstream-*.jsonl.part"):
            part.unlink()


def collect_day(
    host: str,
    day: date,
    out_dir: Path,
    *,
    secure: bool = True,
    compress: bool = False,
    zstd_dictionary: Path | None = None,
    collections: tuple[str, ...] = (POST_COLLECTION,),
    chunk_events: int = 50_000,
    max_reconnects: int = 10,
    retention_hours: float = 36,
    now: datetime | None = None,
    idle_timeout_s: float = 30,
    backoff_base_s: float = 1.0,
    backoff_max_s: float = 60.0,
    overwrite: bool = False,
) -> CollectStats:
    """Record one UTC day of events, [day 00:00, next day 00:00), into `out_dir/<day>/`.

    Refuses a day Jetstream no longer retains (`JetstreamRetentionError`) rather than silently collecting
    only its tail. A day already collected is refused unless `overwrite`, which replaces its chunks once the
    new collection completes. A day still in progress is followed live until it ends.
    `max_reconnects` bounds consecutive reconnects that bring no new event (progress resets the count).
    """
    now = now or datetime.now(UTC)
    start_us, end_us = day_bounds_us(day)
    oldest = now - timedelta(hours=retention_hours)
    if start_us < _to_us(oldest):
        raise JetstreamRetentionError(
            f"{day.isoformat()} starts before Jetstream's retention window ({retention_hours:g} h, i.e. nothing "
            f"older than {oldest.isoformat(timespec='seconds')} can be replayed); {ARCHIVE_HINT}"
        )
    if start_us > _to_us(now):
        raise ValueError(f"{day.isoformat()} has not started yet")
    folder = Path(out_dir) / day.isoformat()
    existing = sorted(folder.glob("jetstream-*.jsonl")) if folder.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{folder} already holds {len(existing)} collected chunk(s); pass overwrite=True to replace them"
        )
    _clear_stale_parts(folder)
    stats = _run(
        host,
        _Window(start_us, end_us),
        Path(out_dir),
        secure=secure,
        compress=compress,
        zstd_dictionary=zstd_dictionary,
        collections=tuple(collections),
        chunk_events=chunk_events,
        max_reconnects=max_reconnects,
        idle_timeout_s=idle_timeout_s,
        backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s,
    )
    kept = set(stats.files)
    for old in existing:
        if old not in kept:
            old.unlink()
    return stats


def collect(
    host: str,
    hours: float,
    out_dir: Path,
    *,
    secure: bool = True,
    compress: bool = False,
    zstd_dictionary: Path | None = None,
    collections: tuple[str, ...] = (POST_COLLECTION,),
    chunk_events: int = 50_000,
    max_reconnects: int = 10,
    retention_hours: float = 36,
    now: datetime | None = None,
    idle_timeout_s: float = 30,
    backoff_base_s: float = 1.0,
    backoff_max_s: float = 60.0,
) -> CollectStats:
    """Record the last `hours` up to the start of the run (`bsky-warehouse collect jetstream --hours H`).

    Stops at the first event at or after the run's start instant, i.e. once it has caught up with the
    present. Writes the same day-folder layout as `collect_day` (a window across midnight spans two
    folders). Chunk names carry their first event's time, so distinct windows never overwrite each other;
    overlapping windows do hold the overlap twice, which the ingest's dedupe by post URI absorbs.
    """
    if hours <= 0:
        raise ValueError("hours must be positive")
    if hours > retention_hours:
        raise JetstreamRetentionError(
            f"{hours:g} h reaches past Jetstream's retention window ({retention_hours:g} h); {ARCHIVE_HINT}"
        )
    now = now or datetime.now(UTC)
    end_us = _to_us(now)
    start_us = end_us - int(hours * 3600 * 1_000_000)
    return _run(
        host,
        _Window(start_us, end_us),
        Path(out_dir),
        secure=secure,
        compress=compress,
        zstd_dictionary=zstd_dictionary,
        collections=tuple(collections),
        chunk_events=chunk_events,
        max_reconnects=max_reconnects,
        idle_timeout_s=idle_timeout_s,
        backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s,
    )


class JetstreamSource(ConfigurableResource):
    """Jetstream as a source for the ingest asset: a day is replayed into a spool, then loaded like an archive."""

    host: str = Field(default=DEFAULT_HOST, description="Jetstream instance (host[:port]).")
    secure: bool = Field(default=True, description="wss:// (true) or ws:// (a local replay server).")
    compress: bool = Field(default=False, description="zstd-compressed frames (needs zstd_dictionary).")
    zstd_dictionary: str | None = Field(default=None, description="Jetstream's published zstd dictionary file.")
    retention_hours: float = Field(default=36, description="How far back Jetstream can replay.")

    @classmethod
    def from_host(cls, value: str, **options: Any) -> JetstreamSource:
        """`host[:port]` or `wss://host` (TLS), or `ws://127.0.0.1:6008` for a local replay server, as a resource."""
        scheme, sep, host = value.rstrip("/").partition("://")
        if not sep:
            scheme, host = "wss", scheme
        if scheme not in ("ws", "wss") or not host or "/" in host:
            raise ValueError(f"Jetstream host {value!r} must look like host[:port], wss://host or ws://host:port")
        return cls(host=host, secure=scheme == "wss", **options)

    def replay_day(self, day: date, spool_dir: Path) -> CollectStats:
        """Collect the whole UTC day into `spool_dir/<day>/`, replacing an earlier spool of it."""
        return collect_day(
            self.host,
            day,
            spool_dir,
            secure=self.secure,
            compress=self.compress,
            zstd_dictionary=Path(self.zstd_dictionary) if self.zstd_dictionary else None,
            retention_hours=self.retention_hours,
            overwrite=True,
        )
