"""OpenAI wire format: request parsing and response/chunk rendering, all pure.

Prompt convention (documented in the README): a chat with one user message (plus
optional system messages) is sent to the model as the user text, system text first,
separated by a blank line; longer conversations are sent as a ``role: content``
transcript ending with ``assistant:``. Small specialists are usually fine-tuned on
bare task inputs, which is why the single-turn case stays verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
#: OpenAI sampling fields forwarded to Triton's sampling_parameters as they are.
PASSTHROUGH = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
#: Routing (rules and classifier) sees at most the first ROUTING_HEAD_CHARS and the last
#: ROUTING_TAIL_CHARS of the routing text: char n-gram TF-IDF over a multi-MB message
#: would block the event loop for seconds.
ROUTING_HEAD_CHARS = 2000
ROUTING_TAIL_CHARS = 1000


def routing_excerpt(text: str) -> str:
    """The part of a (possibly huge) message that routing looks at."""
    if len(text) <= ROUTING_HEAD_CHARS + ROUTING_TAIL_CHARS:
        return text
    return text[:ROUTING_HEAD_CHARS] + "\n" + text[-ROUTING_TAIL_CHARS:]


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    kind: str  # "chat" | "completion"
    model: str
    prompt: str
    routing_text: str
    messages: tuple[dict[str, str], ...] = ()
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)


def _text_of(content: Any, idx: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad_request(
                    "only text content parts are supported", param=f"messages[{idx}].content"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise bad_request(
        "message content must be a string or a list of parts", param=f"messages[{idx}].content"
    )


def _common(body: Any) -> tuple[str, bool, bool, int | None, dict[str, Any]]:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", param="stream")
    opts = body.get("stream_options") or {}
    include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise bad_request("'max_tokens' must be a positive integer", param="max_tokens")
    n = body.get("n", 1)
    if n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    sampling = {k: body[k] for k in PASSTHROUGH if body.get(k) is not None}
    extra = body.get("sampling_parameters")
    if extra is not None:
        if not isinstance(extra, dict):
            raise bad_request(
                "'sampling_parameters' must be an object", param="sampling_parameters"
            )
        sampling.update(extra)
    return model, stream, include_usage, max_tokens, sampling


def parse_chat(body: Any, *, max_messages: int) -> ParsedRequest:
    """Validate a chat completion request; raise RouterError(400) naming the field."""
    model, stream, include_usage, max_tokens, sampling = _common(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", param="messages")
    if len(messages) > max_messages:
        raise bad_request(
            f"too many messages: {len(messages)} > {max_messages}",
            code="too_many_messages",
            param="messages",
        )
    norm = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request("each message needs a valid 'role'", param=f"messages[{i}].role")
        norm.append({"role": m["role"], "content": _text_of(m.get("content"), i)})
    users = [m["content"] for m in norm if m["role"] == "user"]
    routing_text = routing_excerpt(users[-1] if users else norm[-1]["content"])
    return ParsedRequest(
        kind="chat",
        model=model,
        prompt=chat_prompt(norm),
        routing_text=routing_text,
        messages=tuple(norm),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        sampling=sampling,
    )


def parse_completion(body: Any) -> ParsedRequest:
    model, stream, include_usage, max_tokens, sampling = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request("'prompt' must be a string", param="prompt")
    return ParsedRequest(
        kind="completion",
        model=model,
        prompt=prompt,
        routing_text=routing_excerpt(prompt),
        messages=({"role": "user", "content": prompt},),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        sampling=sampling,
    )


def chat_prompt(messages: list[dict[str, str]]) -> str:
    """The text a chat becomes for a text-in/text-out model (see module docstring)."""
    if all(m["role"] in ("system", "developer") for m in messages[:-1]) and (
        messages[-1]["role"] == "user"
    ):
        return "\n\n".join(m["content"] for m in messages if m["content"])
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    lines.append("assistant:")
    return "\n".join(lines)


# ---- responses ------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def full_response(
    req: ParsedRequest,
    *,
    rid: str,
    created: int,
    model: str,
    text: str,
    reasoning: str | None,
    finish_reason: str,
    usage_: dict[str, Any],
    decision: dict[str, Any],
) -> dict[str, Any]:
    if req.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning:
            message["reasoning_content"] = reasoning
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        obj = "text_completion"
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_,
        "slmfleet": decision,
    }


def chunk(
    req: ParsedRequest,
    *,
    rid: str,
    created: int,
    model: str,
    text: str | None = None,
    role: bool = False,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    if req.kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}
