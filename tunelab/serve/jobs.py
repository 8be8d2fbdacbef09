"""What both engines share: a request as a job on a worker thread, its events back on the
event loop, the pending limit, and token ids turned into text deltas. No torch here, so
the llama.cpp engine (gguf_engine) runs without it.

A job's tokens travel back to the event loop through ``call_soon_threadsafe``; a client
that goes away sets the job's ``cancel`` event, which stops its generation at the next
token. Past ``max_pending`` jobs queued or running (over all workers), a new request is
refused with a 429 rather than left waiting without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from tunelab.serve.schemas import ApiError

log = logging.getLogger("tunelab.serve.server")

DEFAULT_MAX_PENDING = 256


@dataclass
class Job:
    model: str
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stops: list[str]
    emit: Callable[[tuple], None]
    constraint: Any = None  # what the engine's constraint() built (a llama.cpp grammar)
    cancel: threading.Event = field(default_factory=threading.Event)
    queue: asyncio.Queue | None = None

    async def events(self) -> AsyncIterator[tuple]:
        """("text", delta)... then ("done", finish_reason, prompt_tokens, completion_tokens)
        or ("error", message)."""
        while True:
            event = await self.queue.get()
            yield event
            if event[0] in ("done", "error"):
                return


class JobRunner:
    """Jobs onto worker threads, with the pending limit over all of them."""

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING):
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, worker: Executor, generate: Callable[[Job], None], **job_fields) -> Job:
        """Queue ``generate(job)`` on ``worker``; its events arrive on ``job.events()``.
        Call from the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(event):
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, event)

        job = Job(emit=emit, queue=queue, **job_fields)
        with self._lock:
            if self._pending >= self.max_pending:
                raise ApiError(429, f"server busy: {self._pending} requests queued",
                               kind="rate_limit_error", code="server_busy")
            self._pending += 1
        worker.submit(self._run, generate, job)
        return job

    def _run(self, generate: Callable[[Job], None], job: Job) -> None:
        try:
            if not job.cancel.is_set():
                generate(job)
        except Exception as err:  # reported to the client as a 500, logged in full here
            log.exception("generation failed")
            job.emit(("error", f"generation failed: {type(err).__name__}: {err}"))
        finally:
            with self._lock:
                self._pending -= 1


class TextAssembler:
    """Token ids -> text deltas, cut before the first stop string.

    Text that could still become a stop string is held back until it cannot, so a
    streamed answer never shows part of a stop sequence; a token that ends inside
    a multi-byte character (decodes to U+FFFD) waits for the next one. ``tokenizer``
    needs only ``decode(ids, skip_special_tokens=True)``; ``is_end(id)`` says whether a
    token ends the generation (it is counted, never shown).
    """

    def __init__(self, tokenizer, stops: list[str], is_end: Callable[[int], bool]):
        self.tokenizer, self.stops, self.is_end = tokenizer, stops, is_end
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.finish_reason: str | None = None

    def feed(self, token_id: int) -> str:
        if self.finish_reason:  # a token generated after a stop string: not part of the answer
            return ""
        self.ids.append(token_id)
        if self.is_end(token_id):
            self.finish_reason = "stop"
            return self._release(len(self.text))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cuts = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if cuts:
            self.finish_reason = "stop"
            self.text = text[:min(cuts)]
            return self._release(len(self.text))
        if text.endswith("\ufffd"):
            return ""
        self.text = text
        return self._release(len(text) - self._held_back(text))

    def flush(self) -> str:
        return self._release(len(self.text))

    def _held_back(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        return max((k for stop in self.stops for k in range(1, len(stop))
                    if text.endswith(stop[:k])), default=0)

    def _release(self, upto: int) -> str:
        upto = max(upto, self.sent)
        delta, self.sent = self.text[self.sent:upto], upto
        return delta


def finish(job: Job, assembler: TextAssembler) -> None:
    """The held-back tail, then the done event with the finish reason and token counts
    (an end-of-generation token is one of the completion tokens: it was generated)."""
    tail = assembler.flush()
    if tail:
        job.emit(("text", tail))
    job.emit(("done", assembler.finish_reason or "length", len(job.prompt_ids),
              len(assembler.ids)))
