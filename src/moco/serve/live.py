"""A streamed request on the event loop: the pieces of its answer as the worker thread writes them.

The worker calls `StageRequest.on_piece` from its own thread; the pieces cross into the event loop through
an asyncio queue. The HTTP response starts only when the first piece arrives (or the request ends), so a
request that fails before writing anything — 400, 429, 504, a failed collaboration — gets its status code,
not a stream with an error inside. At the end the streamed text is checked against the method's answer:
the rest of the answer is sent if the stream was its beginning (or, for a service that cannot watch its
last stage, the whole answer as one piece); a stream that turns out not to be the answer ends with an error
event instead of a wrong text.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from moco.serve.final_stage import StageRequest
from moco.serve.protocol import ApiError
from moco.serve.streaming import StopCutter


class LiveAnswer:
    def __init__(self, run: Callable[[StageRequest | None], Awaitable[dict[str, Any]]], watch: bool,
                 stops: tuple[str, ...] = ()):
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.want = StageRequest(on_piece=lambda s: loop.call_soon_threadsafe(self.queue.put_nowait, s)) if watch else None
        self.task = asyncio.ensure_future(run(self.want))
        self.stops = stops
        self.body: dict[str, Any] | None = None
        self._first: str | None = None

    async def started(self) -> None:
        """Wait for the first piece or the end; raise the request's error if it failed before any text."""
        got = asyncio.ensure_future(self.queue.get())
        await asyncio.wait({got, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if got.done():
            self._first = got.result()
            return
        got.cancel()
        self.task.result()  # raises the request's error

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text as the client may see it (cut at the request's stop strings); then `body` is set.
        Raises ApiError when the request failed or the stream was not its answer."""
        cutter, fed = StopCutter(self.stops), ""
        pending = [self._first] if self._first is not None else []
        while True:
            for piece in pending:
                fed += piece
                out = cutter.feed(piece)
                if out:
                    yield out
            if self.task.done() and self.queue.empty():
                break
            got = asyncio.ensure_future(self.queue.get())
            await asyncio.wait({got, self.task}, return_when=asyncio.FIRST_COMPLETED)
            if got.done():
                pending = [got.result()]
            else:
                got.cancel()
                pending = []
        self.body = self.task.result()
        full = self.want.output if self.want is not None else self.body["choices"][0]["message"]["content"]
        if full is None or not full.startswith(fed):
            raise ApiError(500, "the streamed text is not the collaboration's answer (its last stage turned out to be "
                           "another call); ask without stream", kind="server_error", code="stream_mismatch")
        for out in (cutter.feed(full[len(fed):]), cutter.finish()):
            if out:
                yield out
