"""The lifecycle every local HTTP test server shares: bind, serve in a background thread or in the foreground
(when run standalone for a benchmark), and stop cleanly."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any, Self


class QuietHTTPServer(ThreadingHTTPServer):
    """One thread per keep-alive connection (sustains 64+ concurrent clients); `owner` is the fake service."""

    daemon_threads = True
    request_queue_size = 512
    owner: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out or hang up mid-response are expected here; keep stderr clean."""


class LocalHTTPServer:
    """Base for the fake services: subclasses call `_bind(handler)` in their constructor."""

    name = "local-server"

    def _bind(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = QuietHTTPServer((host, port), handler)
        self._httpd.owner = self
        self._thread: Thread | None = None

    @property
    def host(self) -> str:
        """`host:port`, for clients configured by host."""
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Self:
        self._thread = Thread(target=self._httpd.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (standalone use), then release the socket."""
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
