"""The server's cap on a request body, counted on the bytes that arrive.

A Content-Length over the cap is refused at once, before a byte of the body is read. A
body sent without one (``Transfer-Encoding: chunked``) declares nothing, so the bytes are
counted as they arrive and the request is refused as soon as they pass the cap: no body
larger than the cap is ever held in memory or handed to the app.
"""

from __future__ import annotations

from tunelab.serve.schemas import ApiError


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets a 413 in OpenAI's error shape. The
    body is read whole before the app runs (the handlers parse it whole anyway) and handed
    on as one message."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _declared_length(scope) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-body: nobody to answer
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break
        body_sent = False

        async def replay():
            nonlocal body_sent
            if body_sent:  # after the body: the client's disconnect, for streamed answers
                return await receive()
            body_sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        from starlette.responses import JSONResponse

        err = ApiError(413, f"request body over {self.max_bytes} bytes", code="request_too_large")
        await JSONResponse(err.body(), status_code=err.status)(scope, receive, send)


def _declared_length(scope) -> int:
    length = dict(scope["headers"]).get(b"content-length", b"0")
    return int(length) if length.isdigit() else 0  # a garbled one: h11 refuses it anyway
