"""Running MoCo's coroutines from synchronous code (the CLI, the Python API, tests).

Not `asyncio.run`: that installs a SIGINT handler that only cancels the main task once the running step
returns, so a Ctrl-C during a local model's forward pass (which runs on the loop's thread) would wait for the
batch to end. Here Ctrl-C raises KeyboardInterrupt where the main thread is, as in any synchronous program,
and every task still pending is cancelled before the loop closes. Called from a thread that already runs a
loop (a notebook), the coroutine runs on a fresh loop in a helper thread instead.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a new event loop and return its result (or raise its error)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(coro)
    value: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            value.append(_run_here(coro))
        except BaseException as e:  # noqa: BLE001 - handed back to the calling thread
            error.append(e)

    t = threading.Thread(target=target, name="moco-aio")
    t.start()
    t.join()
    if error:
        raise error[0]
    return value[0]


def _run_here(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_quiet_on_stop)
    why = "finished"
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    except BaseException as e:
        why = type(e).__name__
        raise
    finally:
        try:
            _cancel_all(loop, why)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _quiet_on_stop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A task stopped by Ctrl-C or SIGTERM is not an error to log: the run already says it was interrupted."""
    if isinstance(context.get("exception"), (KeyboardInterrupt, SystemExit)):
        return
    loop.default_exception_handler(context)


def interrupted(e: BaseException) -> bool:
    """Ctrl-C (or SIGTERM, which MoCo turns into it), also as seen by a task cancelled because of it."""
    return isinstance(e, KeyboardInterrupt) or (isinstance(e, asyncio.CancelledError)
                                                and bool(e.args) and e.args[0] == "KeyboardInterrupt")


def _cancel_all(loop: asyncio.AbstractEventLoop, why: str) -> None:
    """Cancel what still runs, saying why (a task stopped by Ctrl-C records an interrupted run, not a failure)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel(why)
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
