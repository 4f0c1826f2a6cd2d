"""Writing an engine's Outcome back to the client: one OpenAI JSON body, or SSE chunks.

``answer_unary`` answers a non-streamed request (200 with the completion, or 202 with
the review case to poll); ``answer_stream`` streams the answer as it is generated, in
OpenAI's ``chat.completion.chunk`` / ``text_completion`` events, ending with a chunk
that carries the ``slmfleet`` decision (and ``usage`` when asked). A failure after the
first event cannot change the status any more: the stream then ends with an error event
and ``[DONE]``. Both stop the disconnect watch once answered, so a client leaving while
the last bytes go out cancels nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .decision import Decision
from .engine import Engine
from .errors import RouterError, UpstreamError
from .httpio import (
    DONE,
    SSE_HEADERS,
    ClientGone,
    Disconnect,
    Send,
    internal_error,
    resp_id,
    send_json,
    send_sse,
)
from .protocol import ParsedRequest, chunk, full_response, usage
from .snapshot import Snapshot
from .tiers import Outcome

log = logging.getLogger("slmfleet.router")


def midstream_error(exc: UpstreamError | RouterError) -> RouterError:
    """The error event of a stream that failed after its 200 went out: the status it
    would have answered (what the decision record keeps), a timeout told from a failure."""
    if isinstance(exc, RouterError):
        return RouterError(
            exc.status,
            f"upstream failure mid-stream: {exc.message}",
            type="upstream_error",
            code=exc.code,
        )
    timeout = exc.timeout
    return RouterError(
        504 if timeout else 502,
        ("upstream timeout mid-stream: " if timeout else "upstream failure mid-stream: ")
        + exc.public_message,
        type="upstream_error",
        code="upstream_timeout" if timeout else "upstream_error",
    )


async def answer_unary(
    engine: Engine, snap: Snapshot, req: ParsedRequest, d: Decision, watch: Disconnect, send: Send
) -> Outcome:
    out = await engine.run(snap, req, d)
    watch.stop()  # answered: a disconnect from here on is the client's business
    if out.status == 202:  # a review case to poll: the body names its URL
        d.status = 202
        loc = [(b"location", (out.location or "").encode())]
        await send_json(send, 202, out.body, d.headers() + loc)
        return out
    body = full_response(
        req,
        rid=resp_id(req, d.request_id),
        created=int(time.time()),
        model=req.model,
        text=out.text,
        reasoning=out.reasoning or None,
        finish_reason=out.finish_reason,
        usage_=usage(d.prompt_tokens, d.completion_tokens, d.reasoning_tokens),
        decision=d.summary(),
    )
    await send_json(send, 200, body, d.headers())
    return out


async def answer_stream(
    engine: Engine, snap: Snapshot, req: ParsedRequest, d: Decision, watch: Disconnect, send: Send
) -> Outcome | None:
    rid = resp_id(req, d.request_id)
    created = int(time.time())
    started = False

    async def start() -> None:
        nonlocal started
        started = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": SSE_HEADERS + d.headers(streaming=True),
            }
        )
        if req.kind == "chat":
            await send_sse(
                send, chunk(req, rid=rid, created=created, model=req.model, role=True, text="")
            )

    async def emit(delta: str) -> None:
        if watch.gone:
            raise ClientGone()
        if not started:
            await start()
        await send_sse(send, chunk(req, rid=rid, created=created, model=req.model, text=delta))

    try:
        out: Outcome = await engine.run(snap, req, d, emit)
    except (UpstreamError, RouterError) as exc:
        if isinstance(exc, RouterError) and not started:
            raise  # nothing sent yet: a proper status code and error body
        watch.stop()
        # Failed after the first token: the status is gone, end the stream cleanly. The
        # record keeps the status the failure would have had (504 for a timeout).
        err = midstream_error(exc)
        d.status = err.status
        d.error = str(exc)
        if not started:
            await start()
        await send_sse(send, err.body())
        await send({"type": "http.response.body", "body": DONE})
        return None
    except (ClientGone, asyncio.CancelledError):
        raise
    except Exception as exc:
        if not started:
            raise  # _completion answers a 500 with an error body
        watch.stop()
        log.exception("internal error mid-stream in %s", d.request_id)
        d.status = 500
        d.error = f"internal error: {exc!r}"
        await send_sse(send, internal_error().body())
        await send({"type": "http.response.body", "body": DONE})
        return None
    # Answered: a disconnect while the last events go out cancels nothing (and the
    # server reports the end of a response as a disconnect too).
    watch.stop()
    if not started:
        await start()
        if out.text:
            await send_sse(
                send, chunk(req, rid=rid, created=created, model=req.model, text=out.text)
            )
    last = chunk(req, rid=rid, created=created, model=req.model, finish_reason=out.finish_reason)
    last["slmfleet"] = d.summary()
    await send_sse(send, last)
    if req.include_usage:
        u = chunk(req, rid=rid, created=created, model=req.model)
        u["choices"] = []
        u["usage"] = usage(d.prompt_tokens, d.completion_tokens, d.reasoning_tokens)
        await send_sse(send, u)
    await send({"type": "http.response.body", "body": DONE})
    return out
