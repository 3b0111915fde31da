"""What keeps the server answering whatever clients do: conversions on a bounded pool of
threads (never on the event loop), and connections that never finish a request closed.

:class:`ConversionPool` runs each keystroke and batch in a thread and refuses work past its
queue with 503; :class:`GuardedHttp` is the HTTP protocol `pinzi serve` gives uvicorn, with a
deadline for a request to arrive and a cap on connections.
"""

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from http import HTTPStatus
from typing import TypeVar

from fastapi import HTTPException
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Result = TypeVar("Result")


class ConversionPool:
    """Conversions on a few threads, never on the event loop, even keystrokes of milliseconds
    (20 worst-case ones on the loop put /healthz at 3 s); few, as they share the GIL with the
    loop. Past ``max_queue`` waiting: 503 at once."""

    def __init__(self, threads: int, max_queue: int):
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="pinzi-convert")
        self._capacity = threads + max_queue
        self._pending: set[Future] = set()  # running or queued; changed on the loop only

    async def run(self, work: Callable[[], Result]) -> Result:
        if len(self._pending) >= self._capacity:
            raise HTTPException(503, f"server busy: {len(self._pending)} conversions running "
                                     "or waiting; retry shortly", headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        future = self._executor.submit(work)
        self._pending.add(future)  # until the work ends, not the request: it may go first
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._pending.discard,
                                                                         done))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, closing connections held without a request.

    uvicorn closes a connection idle after a response (``timeout_keep_alive``), but not one that
    sends nothing or a byte at a time: thousands of those used up the file descriptors. Here a
    request must arrive whole within ``request_deadline_s`` of the connection opening or of its
    first byte, else 408 and close; a connection past ``limit_concurrency`` gets 503 and close.
    """

    request_deadline_s = 10.0  # a 64 KiB body within 10 s: 6.4 KB/s, slower than any modem
    _deadline: asyncio.TimerHandle | None = None
    _heard = False  # whether the client has sent a byte: one that never did is just closed

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        # The cap is on connections, applied here; uvicorn's own check would also answer a
        # bare 503 to every request while the last connection allowed is open.
        cap, self.limit_concurrency = self.limit_concurrency, None
        if cap is not None and len(self.connections) > cap:
            self._answer(503, f"too many connections (the limit is {cap}); retry shortly",
                         [("retry-after", "1")])
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        # Armed by any byte, even one that begins no request (a stray CRLF); a request that
        # begins in the chunk that ends the one before has uvicorn's keep-alive timer.
        self._arm()
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the app's own time is not the client's doing

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.request_deadline_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if self._heard and not answering:  # (a stalled pipelined request leaves no room)
            self._answer(408, f"the request did not arrive within {self.request_deadline_s:g} s")
        self.transport.close()

    def _answer(self, status: int, detail: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": detail}).encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
                f"content-length: {len(body)}", "connection: close", *map(": ".join, headers)]
        self.transport.write("\r\n".join([*head, "", ""]).encode() + body)
        self.transport.close()
