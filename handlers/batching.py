"""Group small writes into few transactions.

Work that happens for every message (storing it, joining a complaint to its incident)
would spend most of its time on a transaction and a thread hop each. A
:class:`BatchWriter` lets callers submit one operation and await its own result, while a
single task applies everything that queued up meanwhile in one transaction. Under load
batches grow by themselves (more arrives while a batch is being written), and a lone
operation is written at once.

When the database is unavailable for a while (locked past its retry window, or the
server gone), nothing is wrong with the operations themselves: the batch goes back to
the front of the queue and is tried again after a growing pause, in order, so nothing
is lost and nobody is told "failed" for a write that will succeed. Only a failure of the
work itself splits the batch, so that one bad operation cannot sink its neighbours.

Callers that need no result (most messages: stored, judged, nothing to flag) use
:meth:`BatchWriter.enqueue` instead and do not wait at all: a future and a wake-up per
message are a measurable part of ingestion's cost. Their writes are committed in the
same batches, in the same order, and :meth:`BatchWriter.flush` waits for them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlmodel import Session

from storage.db import Database, is_transient

logger = logging.getLogger(__name__)

OpT = TypeVar("OpT")
ResT = TypeVar("ResT")

Apply = Callable[[Session, list[OpT]], list[ResT]]
"""Applies operations in order inside one transaction; one result per operation."""

Observer = Callable[[list[OpT], list[ResT]], None]


Sleep = Callable[[float], Awaitable[None]]

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


class BatchWriter(Generic[OpT, ResT]):
    def __init__(
        self,
        db: Database,
        apply: Apply[OpT, ResT],
        *,
        name: str,
        max_batch: int = 1000,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._db = db
        self._sleep = sleep
        self._retry_s = RETRY_FIRST_S
        self.retries = 0
        """Batches put back because the database was unavailable."""
        self._apply = apply
        self._name = name
        self._max_batch = max_batch
        self._pending: list[tuple[OpT, asyncio.Future[ResT] | None]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.written = 0
        self._unsettled = 0
        """Operations submitted and neither committed nor failed: queued or in flight."""
        self.observers: list[Observer[OpT, ResT]] = []
        """Called on the event loop with each committed batch, before waiters resume."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Write what is queued, then stop; give up after ``timeout`` s (database down)."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            # Count the batch being written too, not only the queue: cancelling the
            # writer abandons it (its transaction may still commit; nobody will know).
            logger.error(
                "%s: stopping with %d operation(s) not written (%d in flight): "
                "the database is unavailable",
                self._name,
                self._unsettled,
                self._unsettled - len(self._pending),
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or has failed)."""
        while self._task is not None and not self._idle.is_set():
            await self._idle.wait()

    async def submit(self, op: OpT) -> ResT:
        """Queue ``op`` and wait until the transaction holding it has committed."""
        return await self.submit_nowait(op)

    def submit_nowait(self, op: OpT) -> asyncio.Future[ResT]:
        """Queue ``op`` now, in order with everything else queued; the future resolves
        with its result once the transaction holding it has committed."""
        if self._task is None:
            self.start()
        fut: asyncio.Future[ResT] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        self._unsettled += 1
        self._idle.clear()
        self._wake.set()
        return fut

    def enqueue(self, op: OpT) -> None:
        """Queue ``op`` without waiting for its commit; a failure is logged, not raised."""
        if self._task is None:
            self.start()
        self._pending.append((op, None))
        self._unsettled += 1
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write(batch)
            if not self._pending:
                self._idle.set()

    async def _write(self, batch: list[tuple[OpT, asyncio.Future[ResT] | None]]) -> bool:
        """Write ``batch`` in one transaction; False when it went back to the queue."""
        ops = [op for op, _ in batch]
        try:
            results = await self._db.run(lambda s: self._apply(s, ops))
        except Exception as exc:
            if is_transient(exc, sqlite=self._db.sqlite):
                self._pending[:0] = batch  # back to the front, in order
                self.retries += 1
                logger.warning(
                    "%s: database unavailable (%s); %d operation(s) wait, retrying in %.1fs",
                    self._name,
                    exc,
                    len(self._pending),
                    self._retry_s,
                )
                await self._sleep(self._retry_s)
                self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
                return False
            if len(batch) == 1:
                logger.exception("%s: %r failed", self._name, ops[0])
                self._unsettled -= 1
                _settle(batch[0][1], None, exc)
                return True
            # One bad operation must not sink its neighbours: write them one by one.
            logger.warning("%s: batch of %d failed; retrying one by one", self._name, len(ops))
            for k, item in enumerate(batch):
                if not await self._write([item]):
                    self._pending[1:1] = batch[k + 1 :]  # keep the order behind it
                    return False
            return True
        self._retry_s = RETRY_FIRST_S
        self.batches += 1
        self.written += len(ops)
        self._unsettled -= len(ops)
        for observe in self.observers:
            observe(ops, results)
        for (_, fut), result in zip(batch, results, strict=True):
            if fut is not None:
                _settle(fut, result, None)
        return True


def _settle(
    fut: asyncio.Future[ResT] | None, value: ResT | None, exc: BaseException | None
) -> None:
    if fut is None or fut.done():  # nobody waits, or the caller went away: the write stands
        return
    if exc is None:
        fut.set_result(value)  # type: ignore[arg-type]
    else:
        fut.set_exception(exc)
