"""A real HTTP server on loopback for download tests: serves a folder, honours ``Range: bytes=N-``,
and can drop the connection half-way through a full-file answer (``drop_first``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class ServerState:
    root: Path
    drop_first: set[str] = field(default_factory=set)  # paths whose next full answer stops half-way
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class _Handler(BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0].lstrip("/")
        byte_range = self.headers.get("Range")
        self.state.requests.append((path, byte_range))
        file = self.state.root / path
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        start = int(byte_range.removeprefix("bytes=").split("-")[0]) if byte_range else 0
        if start >= len(data) and byte_range:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if byte_range else 200)
        if byte_range:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not byte_range and path in self.state.drop_first:
            self.state.drop_first.discard(path)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, ServerState]]:
    """Serve ``root`` on a free loopback port; yields (base URL, state)."""
    state = ServerState(Path(root))
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
