"""A scriptable webhook receiver on 127.0.0.1 for unit and integration tests.

It behaves like a careful real receiver: it verifies Standard Webhooks signatures (401 when a
signature is bad or missing), and it is idempotent: the first accepted request with a given
`webhook-id` has an effect, a repeat of it (a retry whose answer was lost, a replay) does not.

In a test's event loop:      async with Receiver(secrets=[key]) as receiver: ...
From a worker subprocess:    receiver = Receiver().start_in_thread(); ...; receiver.stop()

Replies are scripted per path or for every path: `receiver.script([500, 500, 200])`,
`receiver.script([HANG], path="/slow")`, `receiver.script([Reply(429, retry_after="2")])`.
When a script runs out the receiver answers `default_status` (200).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from streams.sinks.webhooks import verify


@dataclass(frozen=True)
class Reply:
    status: int = 200
    retry_after: str | None = None
    # Answer nothing for `hang_s` (or until the receiver stops): the client times out.
    hang: bool = False


HANG = Reply(status=0, hang=True)


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # None when the body is not JSON
    signature_ok: bool | None  # None where signatures are not checked
    status: int | None  # what was answered; None for a hang
    effect: bool  # the first accepted request with its idempotency key

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")

    @property
    def bad_signature(self) -> bool:
        return self.signature_ok is False


def webhook_id_key(headers: Mapping[str, str], body: Any) -> str | None:
    return headers.get("webhook-id")


class Receiver:
    def __init__(self, secrets: Sequence[SecretStr] | None = None, *,
                 hang_s: float = 30.0, default_status: int = 200,
                 now_s: Callable[[], int] = lambda: int(time.time()),
                 tolerance_s: int = 300,
                 idempotency_key: Callable[[Mapping[str, str], Any], str | None]
                 = webhook_id_key) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str | None, tuple[SecretStr, ...]] = {}
        if secrets is not None:
            self._secrets[None] = tuple(secrets)
        self._scripts: dict[str | None, deque[Reply]] = {}
        self._requests: list[ReceivedRequest] = []
        self._accepted_keys: set[tuple[str, str]] = set()
        self.hang_s = hang_s
        self.default_status = default_status
        self._now_s = now_s
        self._tolerance_s = tolerance_s
        self._idempotency_key = idempotency_key
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- scripting (thread-safe: a test may script while a worker posts) --

    def require_signatures(self, secrets: Sequence[SecretStr], path: str | None = None) -> None:
        """Verify signatures with these secrets on `path` (every path when None)."""
        with self._lock:
            self._secrets[path] = tuple(secrets)

    def script(self, replies: Iterable[int | Reply], path: str | None = None) -> None:
        """Queue replies for `path` (for paths without their own script when None)."""
        queued = deque(r if isinstance(r, Reply) else Reply(status=r) for r in replies)
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(queued)

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            for key in (path, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return Reply(status=self.default_status)

    def _secrets_for(self, path: str) -> tuple[SecretStr, ...] | None:
        with self._lock:
            return self._secrets.get(path, self._secrets.get(None))

    # -- what was received (copies, safe to read from any thread) --

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def effects(self) -> int:
        """Accepted requests that were the first with their idempotency key (per path)."""
        return sum(r.effect for r in self.requests)

    @property
    def duplicates(self) -> int:
        """Accepted requests whose key had already had its effect: no new effect."""
        return sum(1 for r in self.requests
                   if r.status is not None and 200 <= r.status <= 299 and not r.effect)

    @property
    def bad_signatures(self) -> int:
        return sum(r.bad_signature for r in self.requests)

    @property
    def distinct_ids(self) -> set[str]:
        return {r.webhook_id for r in self.requests if r.webhook_id is not None}

    def conflicting_ids(self) -> dict[str, list[Any]]:
        """webhook-ids seen with more than one body: an idempotency bug in the sender."""
        bodies: dict[str, set[str]] = {}
        for request in self.requests:
            if request.webhook_id is None:
                continue
            canonical = (json.dumps(request.json, sort_keys=True) if request.json is not None
                         else request.body.decode(errors="replace"))
            bodies.setdefault(request.webhook_id, set()).add(canonical)
        return {msg_id: sorted(found) for msg_id, found in bodies.items() if len(found) > 1}

    # -- the server --

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        path = request.path
        secrets = self._secrets_for(path)
        signature_ok = (None if secrets is None
                        else verify(headers, body, secrets, self._now_s(), self._tolerance_s))
        if signature_ok is False:
            self._record(path, headers, body, parsed, signature_ok, 401, effect=False)
            return web.json_response({"error": "bad signature"}, status=401)
        reply = self._next_reply(path)
        if reply.hang:
            self._record(path, headers, body, parsed, signature_ok, None, effect=False)
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.hang_s)
            return web.json_response({"error": "hung"}, status=504)
        effect = False
        if 200 <= reply.status <= 299:
            key = self._idempotency_key(headers, parsed)
            with self._lock:
                if key is None:
                    effect = True  # nothing to deduplicate on: every acceptance acts
                elif (path, key) not in self._accepted_keys:
                    self._accepted_keys.add((path, key))
                    effect = True
        self._record(path, headers, body, parsed, signature_ok, reply.status, effect)
        response_headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
        return web.json_response({"ok": 200 <= reply.status <= 299}, status=reply.status,
                                 headers=response_headers)

    def _record(self, path: str, headers: dict[str, str], body: bytes, parsed: Any,
                signature_ok: bool | None, status: int | None, effect: bool) -> None:
        with self._lock:
            self._requests.append(ReceivedRequest(path, headers, body, parsed, signature_ok,
                                                  status, effect))

    async def start(self) -> Receiver:
        """Serve on a free port of 127.0.0.1 in the running event loop."""
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        # Bind the socket ourselves: port 0 picks a free port and we learn which.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # hung handlers return now, so cleanup does not wait
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- in a background thread (for a worker in another process) --

    def start_in_thread(self, timeout_s: float = 10.0) -> Receiver:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.close())
                loop.close()

        self._thread = threading.Thread(target=serve, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise RuntimeError("the receiver did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._stopping is not None:
            loop.call_soon_threadsafe(self._stopping.set)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._loop = self._thread = None

    def __enter__(self) -> Receiver:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
