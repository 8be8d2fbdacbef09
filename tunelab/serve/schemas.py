"""Request schemas, response bodies and errors of the OpenAI-compatible server.

The field names, defaults, ranges and error shape follow the OpenAI API, so the
official clients work unchanged. No field is silently ignored: every request model
refuses what it does not declare (a 400 naming the field: ``tools``, ``logit_bias``,
``echo``, a typo), and a declared field the server cannot honour in some value is
refused in that value (``n`` > 1, ``logprobs``, non-zero penalties, ``store`` true).
A field sent as null asks for nothing, so it passes whatever its name. Besides what
changes the answer, ``user`` alone is accepted: it only names the caller's end user
(OpenAI uses it for abuse monitoring) and changes no output, and clients pass it
through. ``metadata`` is refused: it labels stored completions, and this server
stores none, so it would be lost without a word.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ApiError(Exception):
    """An error the client caused (or a server fault), sent as OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status, message, param, code, kind)

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def model_not_found(name: str, names: list[str]) -> ApiError:
    return ApiError(404, f"The model '{name}' does not exist; this server has: "
                    f"{', '.join(names)}", param="model", code="model_not_found")


class StrictModel(BaseModel):
    """Refuses undeclared fields (server._validation_error names them in the 400). A field
    sent as null is dropped first: null asks for nothing (OpenAI's "not given"), so an
    undeclared one passes and a declared one takes its default."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data):
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    # "developer" is OpenAI's newer name for "system".
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_template_message(self) -> dict:
        text = self.content if isinstance(self.content, str) else \
            "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(StrictModel):
    include_usage: bool = False


class JsonSchemaFormat(StrictModel):
    # OpenAI's rule for the name; ``description`` (a hint to the model) is not declared:
    # nothing here would show it to the model.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # none: any object
    strict: bool | None = None  # a grammar holds to the schema either way


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs the json_schema object "
                             "({\"name\": ..., \"schema\": {...}})")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"json_schema is given, but type is {self.type!r}")
        return self


class SamplingRequest(StrictModel):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # None means "the OpenAI default" (temperature 1, top_p 1): clients send null.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1)
    logprobs: bool | int | None = None
    response_format: ResponseFormat | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    store: bool | None = None
    user: str | None = None  # changes no output; see the module docstring

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n):
        if n is not None and n != 1:
            raise ValueError("only n=1 is supported by this server")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs):
        if logprobs:  # refused rather than silently answered without them
            raise ValueError("logprobs are not supported by this server")
        return logprobs

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, penalty):
        if penalty:
            raise ValueError("only 0 is supported by this server (it applies no penalties)")
        return penalty

    @field_validator("store")
    @classmethod
    def _nothing_stored(cls, store):
        if store:
            raise ValueError("this server stores no completions; send false or leave it out")
        return store

    def token_limit(self) -> int | None:
        return self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # OpenAI's newer name

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("exactly one prompt string is supported by this server")
            return prompt[0]
        return prompt


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(model: str, text: str, finish_reason: str, prompt_tokens: int,
                  completion_tokens: int) -> dict:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def completion_response(model: str, text: str, finish_reason: str, prompt_tokens: int,
                        completion_tokens: int) -> dict:
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chat_chunk(response_id: str, created: int, model: str, delta: dict,
               finish_reason: str | None = None, with_choice: bool = True) -> dict:
    choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    return {"id": response_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": choices if with_choice else []}


def completion_chunk(response_id: str, created: int, model: str, text: str,
                     finish_reason: str | None = None, with_choice: bool = True) -> dict:
    choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]
    return {"id": response_id, "object": "text_completion", "created": created,
            "model": model, "choices": choices if with_choice else []}
