"""A small loopback web server: serve fixed bodies or handler functions at paths.

Used by the tests, the benchmarks and ``demo``. It binds to a loopback address only
(127.0.0.1 by default; any 127.x.y.z works on Linux, which gives tests several "hosts").

    with LoopbackWeb() as web:
        web.add("/a.html", b"<img src='/x.jpg'>", "text/html")
        web.add("/x.jpg", jpeg_bytes, "image/jpeg")
        web.url("/a.html")  # -> "http://127.0.0.1:PORT/a.html"
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


class Validated:
    """A body served with validators (``ETag``, ``Last-Modified``) that it honours, and an
    optional ``Cache-Control``; counts its whole (200) and 304 answers. Its attributes may be
    changed between requests to model a resource that changes.

        web.route("/x.jpg", Validated(jpeg, etag='"v1"').handle)
    """

    def __init__(
        self,
        body: bytes,
        content_type: str = "image/jpeg",
        *,
        etag: str | None = None,
        modified: str | None = None,
        cache_control: str | None = None,
    ) -> None:
        self.body, self.content_type = body, content_type
        self.etag, self.modified, self.cache_control = etag, modified, cache_control
        self.full = 0  # 200 answers sent
        self.not_modified = 0  # 304 answers sent

    def current_body(self) -> bytes:
        """The body a whole answer carries now."""
        return self.body

    def handle(self, req: Request) -> Response:
        headers = {}
        if self.etag:
            headers["ETag"] = self.etag
        if self.modified:
            headers["Last-Modified"] = self.modified
        if self.cache_control:
            headers["Cache-Control"] = self.cache_control
        unchanged = (self.etag and req.headers.get("if-none-match") == self.etag) or (
            self.modified and req.headers.get("if-modified-since") == self.modified
        )
        if unchanged:
            self.not_modified += 1
            return Response(304, b"", self.content_type, headers)
        self.full += 1
        return Response(200, self.current_body(), self.content_type, headers)


class LoopbackWeb:
    """A threaded HTTP server on a loopback address, with routes set at run time."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self.requests: list[Request] = []  # every request received, in order
        web = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
            # and the client's delayed ACK hold each keep-alive response back by ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    method=method,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with web._lock:
                    web.requests.append(req)
                    handler = web._routes.get(parts.path)
                resp = handler(req) if handler else Response(404, b"not found", "text/plain")
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                headers = {k.lower(): v for k, v in resp.headers.items()}
                if "content-length" not in headers and "transfer-encoding" not in headers:
                    self.send_header("Content-Length", str(len(resp.body)))
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(resp.body)

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._server = _Server((host, port), _Handler)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(
        self,
        path: str,
        body: bytes | str,
        content_type: str = "text/html; charset=utf-8",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Serve ``body`` at ``path``; return the full URL."""
        data = body.encode() if isinstance(body, str) else body
        resp = Response(status, data, content_type, dict(headers or {}))
        return self.route(path, lambda _req: resp)

    def route(self, path: str, handler: Handler) -> str:
        """Serve whatever ``handler`` returns at ``path``; return the full URL."""
        with self._lock:
            self._routes[path] = handler
        return self.url(path)

    def remove(self, path: str) -> None:
        with self._lock:
            self._routes.pop(path, None)

    def start(self) -> LoopbackWeb:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(0.05,),
            name=f"loopback-web:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackWeb:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def query_words(text: str) -> str:
    """A search query as the loopback fakes compare it: an exact-phrase query's quotes dropped,
    runs of spaces made one (fakes answer ``"Jane Doe"`` and ``Jane  Doe`` alike)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return " ".join(text.split())
