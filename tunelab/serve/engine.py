"""One base model with several LoRA adapters in memory, generating on one worker thread.

Adapters are switched on the one shared model (PEFT ``set_adapter`` /
``disable_adapter``), so two generations must never interleave: every request
becomes a job on a single-thread executor, which holds the adapter choice from
the first token to the last, streaming or not. Tokens travel back to the event
loop through ``call_soon_threadsafe``; a client that goes away sets the job's
``cancel`` event, which stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from tunelab.data import encoding
from tunelab.serve.schemas import ApiError

log = logging.getLogger("tunelab.serve.server")


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


class TextAssembler:
    """Token ids -> text deltas, cut before the first stop string.

    Text that could still become a stop string is held back until it cannot, so a
    streamed answer never shows part of a stop sequence; a token that ends inside
    a multi-byte character (decodes to U+FFFD) waits for the next one.
    """

    def __init__(self, tokenizer, stops: list[str], eos_ids: set[int]):
        self.tokenizer, self.stops, self.eos_ids = tokenizer, stops, eos_ids
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.finish_reason: str | None = None

    def feed(self, token_id: int) -> str:
        if self.finish_reason:  # the one extra token generated after a stop string
            return ""
        self.ids.append(token_id)
        if token_id in self.eos_ids:
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


class _TokenSink(BaseStreamer):
    """generate() hands every new token here; the first call is the prompt."""

    def __init__(self, assembler: TextAssembler, job: Job):
        self.assembler, self.job, self.prompt_seen = assembler, job, False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            delta = self.assembler.feed(token_id)
            if delta:
                self.job.emit(("text", delta))

    def end(self):
        pass


class _Halt(StoppingCriteria):
    def __init__(self, assembler: TextAssembler, job: Job):
        self.assembler, self.job = assembler, job

    def __call__(self, input_ids, scores, **kwargs):
        stop = self.job.cancel.is_set() or self.assembler.finish_reason is not None
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)


class Engine:
    def __init__(self, model, tokenizer, base_name: str, adapter_names: list[str],
                 max_pending: int = 256):
        self.model, self.tokenizer = model, tokenizer
        self.base_name, self.adapter_names = base_name, list(adapter_names)
        self.max_context = getattr(model.config, "max_position_embeddings", None)
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        self.max_pending = max_pending
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-generate")

    @property
    def names(self) -> list[str]:
        return [self.base_name, *self.adapter_names]

    def check_model(self, name: str) -> None:
        if name not in self.names:
            raise ApiError(404, f"The model '{name}' does not exist; this server has: "
                           f"{', '.join(self.names)}", param="model", code="model_not_found")

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        try:
            return encoding.chat_ids(self.tokenizer, messages, add_generation_prompt=True)
        except Exception as err:  # the template itself rejects e.g. a role order
            raise ApiError(400, f"messages: the chat template rejected them: {err}",
                           param="messages") from None

    def text_prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def submit(self, **job_fields) -> Job:
        """Queue a generation; its events arrive on ``job.events()``."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(event):
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, event)

        job = Job(emit=emit, queue=queue, **job_fields)
        with self._pending_lock:
            if self._pending >= self.max_pending:
                raise ApiError(429, f"server busy: {self._pending} requests queued",
                               kind="rate_limit_error", code="server_busy")
            self._pending += 1
        self._worker.submit(self._run, job)
        return job

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job) -> None:
        try:
            if not job.cancel.is_set():
                self._generate(job)
        except Exception as err:  # reported to the client as a 500, logged in full here
            log.exception("generation failed")
            job.emit(("error", f"generation failed: {type(err).__name__}: {err}"))
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _generate(self, job: Job) -> None:
        assembler = TextAssembler(self.tokenizer, job.stops, self.eos_ids)
        greedy = job.temperature == 0 or job.top_p == 0
        sampling = {"do_sample": False} if greedy else \
            {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p, "top_k": 0}
        input_ids = torch.tensor([job.prompt_ids])
        with torch.inference_mode(), self._selected(job.model):
            if job.seed is not None:
                torch.manual_seed(job.seed)
            self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                max_new_tokens=job.max_new_tokens, pad_token_id=self.pad_id,
                                eos_token_id=sorted(self.eos_ids),
                                streamer=_TokenSink(assembler, job),
                                stopping_criteria=StoppingCriteriaList([_Halt(assembler, job)]),
                                **sampling)
        tail = assembler.flush()
        if tail:
            job.emit(("text", tail))
        job.emit(("done", assembler.finish_reason or "length", len(job.prompt_ids),
                  len(assembler.ids)))

    def _selected(self, name: str):
        """The adapter ``name`` made active (or all disabled for the base) while in use."""
        if not self.adapter_names:
            return contextlib.nullcontext()
        if name == self.base_name:
            return self.model.disable_adapter()
        self.model.set_adapter(name, inference_mode=True)
        return contextlib.nullcontext()


def load(base_dir: str | Path, adapters: dict[str, Path], base_name: str = "base",
         on_progress: Callable[[str], None] = lambda line: None) -> Engine:
    from tunelab.errors import ModelSourceError
    from tunelab.models import loading

    on_progress(f"loading {base_dir} as '{base_name}'"
                + (f" with adapters {', '.join(adapters)}" if adapters else ""))
    for name, folder in adapters.items():
        if loading.read_train_info(folder).get("quantization"):
            on_progress(f"note: {name} was trained on a quantized base (QLoRA); "
                        "it is served on the full-precision base")
    try:
        model, tokenizer = loading.load_with_adapters(base_dir, adapters)
    except (RuntimeError, ValueError, KeyError) as err:  # e.g. an adapter of another base
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = " ".join(lines[:2])[:300] or type(err).__name__
        raise ModelSourceError(f"cannot load the adapters {', '.join(adapters)} onto "
                               f"{base_dir}: {reason}") from None
    return Engine(model, tokenizer, base_name, list(adapters))
