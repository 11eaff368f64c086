"""A TLS endpoint that checks an API key in front of the local Elasticsearch, whose integ-test
distribution has no security module: so the worker's and the CLI's Elasticsearch clients are
tested with TLS and credentials, as against a secured cluster. Every request without the key
gets a 401 like Elasticsearch's own; every other request goes on to Elasticsearch as it is."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

# Hop-by-hop headers end at the proxy (RFC 9110, 7.6.1); the length is set again.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "content-length"}


class ApiKeyProxy:
    def __init__(self, upstream: str, api_key: str, certfile: Path, keyfile: Path) -> None:
        self.upstream = urlsplit(upstream)
        self.expected = f"ApiKey {api_key}"
        self.accepted = 0
        self.refused = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ApiKeyProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _count(self, accepted: bool) -> None:
        with self.lock:
            if accepted:
                self.accepted += 1
            else:
                self.refused += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect

            def log_message(self, *_: object) -> None:  # quiet: the test asserts on counts
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != proxy.expected:
                    proxy._count(False)
                    self._answer(401, {"WWW-Authenticate": 'ApiKey, Basic realm="security"',
                                       "Content-Type": "application/json",
                                       "X-Elastic-Product": "Elasticsearch"},
                                 json.dumps({"error": {"type": "security_exception",
                                                       "reason": "unable to authenticate"},
                                             "status": 401}).encode())
                    return
                proxy._count(True)
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() not in HOP_BY_HOP | {"authorization", "host"}}
                upstream = http.client.HTTPConnection(proxy.upstream.hostname or "127.0.0.1",
                                                      proxy.upstream.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    self._answer(response.status,
                                 {name: value for name, value in response.getheaders()
                                  if name.lower() not in HOP_BY_HOP}, payload)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

        return Handler
