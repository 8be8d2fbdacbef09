"""One base model with several LoRA adapters in memory, generating on one worker thread.

A QLoRA adapter sits on a quantized copy of the base, the one it was trained and
evaluated on (loading.load_with_adapters), so its served answers are its evaluated ones;
every other adapter on the one fp32 base. Adapters are switched on the model that holds
them (PEFT ``set_adapter`` / ``disable_adapter``), so two generations must never
interleave: every request becomes a job (tunelab.serve.jobs) on a single-thread executor,
which holds the adapter choice from the first token to the last, streaming or not.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
from peft import PeftModel
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from tunelab.chat import stops
from tunelab.data import encoding
from tunelab.serve.jobs import DEFAULT_MAX_PENDING, Job, JobRunner, TextAssembler, finish
from tunelab.serve.schemas import ApiError, ResponseFormat, model_not_found


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
                 max_pending: int = DEFAULT_MAX_PENDING, served_by: dict | None = None):
        """``model`` serves the base and every adapter, except those ``served_by`` maps
        to another model (their quantized base)."""
        self.model, self.tokenizer = model, tokenizer
        self.base_name, self.adapter_names = base_name, list(adapter_names)
        self.served_by = {name: model for name in self.names} | (served_by or {})
        self.max_context = getattr(model.config, "max_position_embeddings", None)
        self.eos_ids = set(stops.stop_ids(tokenizer, model.generation_config))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        self._jobs = JobRunner(max_pending)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-generate")

    @property
    def names(self) -> list[str]:
        return [self.base_name, *self.adapter_names]

    def check_model(self, name: str) -> None:
        if name not in self.names:
            raise model_not_found(name, self.names)

    def chat_prompt(self, model: str, messages: list[dict],
                    tools: list[dict] | None = None) -> list[int]:
        """Prompt ids of ``messages`` (one tokenizer and template for every model here),
        rendered with ``tools`` as training renders them."""
        try:
            return encoding.chat_ids(self.tokenizer, messages, add_generation_prompt=True,
                                     tools=tools)
        except Exception as err:  # the template itself rejects e.g. a role order
            raise ApiError(400, f"messages: the chat template rejected them: {err}",
                           param="messages") from None

    def text_prompt(self, model: str, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def chat_template(self, model: str) -> str | None:
        return self.tokenizer.chat_template

    def constraint(self, model: str, response_format: ResponseFormat | None) -> None:
        """Plain text only: constrained decoding would need a dependency transformers
        lacks, and llama.cpp has it built in (gguf_engine)."""
        if response_format is not None and response_format.type != "text":
            raise ApiError(400, f"response_format: {response_format.type} is supported for "
                           "GGUF models only (`tunelab serve --gguf NAME=FILE`)",
                           param="response_format", code="unsupported_response_format")

    def submit(self, **job_fields) -> Job:
        """Queue a generation; its events arrive on ``job.events()``."""
        return self._jobs.submit(self._worker, self._generate, **job_fields)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _generate(self, job: Job) -> None:
        assembler = TextAssembler(self.tokenizer, job.stops, self.eos_ids.__contains__)
        greedy = job.temperature == 0 or job.top_p == 0
        sampling = {"do_sample": False} if greedy else \
            {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p, "top_k": 0}
        model = self.served_by[job.model]
        input_ids = torch.tensor([job.prompt_ids], device=model.device)
        with torch.inference_mode(), self._selected(job.model, model):
            if job.seed is not None:
                torch.manual_seed(job.seed)
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                           max_new_tokens=job.max_new_tokens, pad_token_id=self.pad_id,
                           eos_token_id=sorted(self.eos_ids),
                           streamer=_TokenSink(assembler, job),
                           stopping_criteria=StoppingCriteriaList([_Halt(assembler, job)]),
                           **sampling)
        finish(job, assembler)

    def _selected(self, name: str, model):
        """The adapter ``name`` made active on ``model`` (or all disabled for the base)."""
        if name != self.base_name:
            model.set_adapter(name, inference_mode=True)
        elif isinstance(model, PeftModel):  # LoRA adapters sit on the base: switch them off
            return model.disable_adapter()
        return contextlib.nullcontext()


def load(base_dir: str | Path, adapters: dict[str, Path], base_name: str = "base",
         on_progress: Callable[[str], None] = lambda line: None) -> Engine:
    from tunelab.errors import MissingExtraError, ModelSourceError
    from tunelab.models import loading

    on_progress(f"loading {base_dir} as '{base_name}'"
                + (f" with adapters {', '.join(adapters)}" if adapters else ""))
    for name, folder in adapters.items():
        quantized = loading.trained_quantization(folder)
        if not quantized:
            continue
        try:  # checked here: loading's own check names params.yaml, which serving never reads
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingExtraError(f"--adapter {name}={folder} was trained with QLoRA and is "
                                    f"served on its {quantized[0].bits}-bit base: the qlora "
                                    'extra is not installed: pip install "tunelab[qlora]"') \
                from None
        on_progress(f"{name} was trained with QLoRA: it is served on the "
                    f"{quantized[0].bits}-bit base it was trained and evaluated on")
    try:
        served_by, tokenizer = loading.load_with_adapters(base_dir, adapters, base_name)
    except (RuntimeError, ValueError, KeyError) as err:  # e.g. an adapter of another base
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = " ".join(lines[:2])[:300] or type(err).__name__
        raise ModelSourceError(f"cannot load the adapters {', '.join(adapters)} onto "
                               f"{base_dir}: {reason}") from None
    return Engine(served_by[base_name], tokenizer, base_name, list(adapters),
                  served_by=served_by)
