"""The write side of ingestion: every message passes here, so it batches.

Callers submit operations and await their commit; a single writer task drains the queue
and applies everything that queued up meanwhile in one transaction. Under load batches
grow by themselves (more arrives while a batch is being written), and a lone message is
written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from storage.db import Database
from storage.queries import IngestOp, NewMessageRow, apply_ingest_batch, message_key

logger = logging.getLogger(__name__)


class IngestWriter:
    def __init__(self, db: Database, *, max_batch: int = 1000) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[IngestOp, asyncio.Future[bool]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.written = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rapport-ingest-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed."""
        if self._task is not None:
            await self._queue.join()

    async def submit(self, op: IngestOp) -> bool:
        """Queue ``op`` and wait until it is committed.

        For a new message, False means it was already stored (a redelivery).
        """
        if self._task is None:
            self.start()
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[tuple[IngestOp, asyncio.Future[bool]]]) -> None:
        ops = [op for op, _ in batch]
        try:
            inserted = await self._db.run(lambda s: apply_ingest_batch(s, ops))
        except Exception:
            if len(batch) == 1:
                logger.exception("ingest of %r failed", ops[0])
                exc = sys.exc_info()[1]
                assert exc is not None
                _settle(batch[0][1], False, exc)
                return
            # One bad operation must not sink its neighbours: write them one by one.
            logger.warning("ingest batch of %d failed; retrying one by one", len(ops))
            for item in batch:
                await self._write([item])
            return
        self.batches += 1
        self.written += len(ops)
        for op, fut in batch:
            fresh = True
            if isinstance(op, NewMessageRow):
                key = message_key(op)
                fresh = key in inserted
                inserted.discard(key)  # a second copy in the same batch is a redelivery
            _settle(fut, fresh, None)


def _settle(fut: asyncio.Future[bool], value: bool, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)
