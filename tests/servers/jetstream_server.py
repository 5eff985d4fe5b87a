"""A local Jetstream v1 server, so the collector can be tested over real websockets without the network.

It serves `/subscribe?cursor=<µs>[&compress=true]` like Jetstream: the recorded lines with
`time_us >= cursor` (lines whose time cannot be read are replayed along with their dated neighbours), in
the order given, then keeps the connection open as a quiet live tail. Faults and features:

* `drop_after=N, drops=K`: the first K connections are aborted (TCP reset, no close frame) after N events;
* `compress=true` in the query: each event is sent as its own binary zstd frame, made with `zstd_dict`
  when given (the real server uses its published dictionary);
* every connection's query is recorded (`connections`, `cursors`) so tests can assert how it resumed.

The server runs its own asyncio loop in a background thread, so the code under test keeps a plain
synchronous API; use it as a context manager (`with JetstreamServer(lines) as server: server.host`).
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import zstandard
from websockets.asyncio.server import ServerConnection, serve

from bsky_warehouse.resources.jetstream import line_time_us


class JetstreamServer:
    def __init__(
        self,
        lines: list[bytes],
        *,
        drop_after: int | None = None,
        drops: int = 1,
        zstd_dict: zstandard.ZstdCompressionDict | None = None,
        close_at_end: bool = False,
    ) -> None:
        self.lines = [line.rstrip(b"\r\n") for line in lines]
        self.drop_after = drop_after
        self.drops_left = drops if drop_after is not None else 0
        self.zstd_dict = zstd_dict
        self.close_at_end = close_at_end
        self.cursors: list[int | None] = []
        self.queries: list[dict[str, list[str]]] = []
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jetstream-server", daemon=True)

    @property
    def connections(self) -> int:
        return len(self.cursors)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _replay_from(self, cursor: int | None) -> list[bytes]:
        """Lines from the cursor on: the first dated line at or after it, and everything after that."""
        if cursor is None:
            return list(self.lines)
        for index, line in enumerate(self.lines):
            time_us = line_time_us(line)
            if time_us is not None and time_us >= cursor:
                start = index
                while start > 0 and line_time_us(self.lines[start - 1]) is None:
                    start -= 1
                return self.lines[start:]
        return []

    async def _handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        with self._lock:
            self.cursors.append(cursor)
            self.queries.append(query)
            drop = self.drops_left > 0
            self.drops_left -= drop
        compressor = None
        if query.get("compress", ["false"])[0] == "true":
            compressor = zstandard.ZstdCompressor(dict_data=self.zstd_dict)
        for sent, line in enumerate(self._replay_from(cursor)):
            if drop and sent == self.drop_after:
                ws.transport.abort()
                return
            if compressor is not None:
                await ws.send(compressor.compress(line))
            else:
                await ws.send(line.decode("utf-8", errors="replace"))
        if self.close_at_end:
            await ws.close()
        else:
            await ws.wait_closed()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._handler, "127.0.0.1", 0, compression=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    def __enter__(self) -> JetstreamServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("jetstream test server did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
        self._thread.join(10)
