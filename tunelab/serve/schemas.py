"""Request schemas, response bodies and errors of the OpenAI-compatible server.

The field names, defaults, ranges and error shape follow the OpenAI API, so the
official clients work unchanged. No field is silently ignored: every request model
refuses what it does not declare (a 400 naming the field: ``functions``, ``logit_bias``,
``echo``, a typo), and a declared field the server cannot honour in some value is
refused in that value (``n`` > 1, ``logprobs``, non-zero penalties, ``store`` true).
A field sent as null asks for nothing, so it passes whatever its name. Besides what
changes the answer, ``user`` alone is accepted: it only names the caller's end user
(OpenAI uses it for abuse monitoring) and changes no output, and clients pass it
through. ``metadata`` is refused: it labels stored completions, and this server
stores none, so it would be lost without a word.

Tools take OpenAI's shape: ``tools`` (function schemas; ``strict`` true is refused, as
nothing holds the arguments to the schema), ``tool_choice`` "auto" or "none" (any other
value is refused), assistant messages with ``tool_calls`` (``arguments`` a JSON string)
and ``tool`` messages. ``as_template_message`` and ``template_tools`` turn them into
tunelab.data.tool_calls' shape, the one training renders.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
                      model_validator)

from tunelab.data import tool_calls


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


class FunctionCall(StrictModel):
    name: str = Field(min_length=1)
    arguments: str  # JSON text, as OpenAI sends it

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, arguments, info: ValidationInfo):
        # The check training data gets: a ValueError unless a JSON object.
        tool_calls.normalise_call({"name": info.data.get("name", "?"), "arguments": arguments}, "")
        return arguments


class ToolCall(StrictModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictModel):
    # "developer" is OpenAI's newer name for "system".
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # None only beside tool_calls
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _fields_of_its_role(self):
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only tool messages have a tool_call_id")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required (it may be null only beside tool_calls)")
        return self

    def as_template_message(self) -> dict:
        text = self.content if isinstance(self.content, str) else \
            "".join(part.text for part in self.content or [])
        message = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.tool_calls:
            message["tool_calls"] = [tool_calls.normalise_call(call.model_dump(exclude_none=True),
                                                               "") for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class FunctionDefinition(StrictModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")  # OpenAI's rule
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("strict")
    @classmethod
    def _not_strict(cls, strict):
        if strict:
            raise ValueError("strict function calling is not supported by this server (nothing "
                             "holds the arguments to the schema); send false or leave it out")
        return strict


class ToolDefinition(StrictModel):
    type: Literal["function"]
    function: FunctionDefinition


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
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("tools")
    @classmethod
    def _distinct_names(cls, tools):
        tool_calls.normalise_tools([tool.model_dump(exclude_none=True) for tool in tools])
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _auto_or_none(cls, tool_choice):
        if tool_choice not in ("auto", "none"):
            raise ValueError("only 'auto' and 'none' are supported by this server, got "
                             f"{json.dumps(tool_choice)}")
        return tool_choice

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def template_tools(self) -> list[dict] | None:
        """The tools to show the model, in tunelab.data.tool_calls' shape: none when
        ``tool_choice`` is "none" (the model is not to call them, so it is not shown them)."""
        if not self.tools or self.tool_choice == "none":
            return None
        return tool_calls.normalise_tools([tool.model_dump(exclude_none=True)
                                           for tool in self.tools])


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
                  completion_tokens: int, calls: list[dict] | None = None,
                  reasoning_text: str = "") -> dict:
    """``calls`` (tunelab.data.tool_calls' shape) go out as OpenAI's ``tool_calls``, the
    text beside them as ``content`` (null when there is none), finish reason tool_calls
    (unless the answer was cut at the token limit); a reasoning model's think block as
    ``reasoning_content`` (the field vLLM and DeepSeek's API use), where it wrote one."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message = {"role": "assistant", "content": text or None,
                   "tool_calls": [wire_call(call) for call in calls]}
        finish_reason = "length" if finish_reason == "length" else "tool_calls"
    if reasoning_text:
        message["reasoning_content"] = reasoning_text
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def wire_call(call: dict) -> dict:
    """A normalised call as OpenAI sends one: a fresh id, the arguments as JSON text."""
    function = call["function"]
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": function["name"],
                         "arguments": json.dumps(function["arguments"], ensure_ascii=False)}}


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
