"""What every ImageSearch call goes through before and after its handler, as HTTP's middleware does:
a request id, the caller's key, scope and rate limit (checked before the handler reads the request,
gateway.server.access), the caller's deadline for every Triton and Milvus call the request makes
(gateway.core.deadlines), errors mapped to status codes with trailing metadata (errors.py), a
latency histogram per method and code, one log line per call."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc

from ...core.consistency import consistency
from ...core.deadlines import within
from ...core.errors import ErrorKind, ServiceError
from ..access import OPERATOR_ONLY, SCOPE_OF, AccessControl, calling
from ..logging import REQUEST_ID
from ..metrics import ERRORS, GRPC_SECONDS
from .errors import STATUS, trailing_metadata
from .messages import check_known
from .servicer import OPERATIONS, SERVICE_NAME

log = logging.getLogger("gateway")
# Dependencies get the caller's deadline less this, so that the gateway's own DEADLINE_EXCEEDED (with
# its request id and error code) reaches the caller before the caller's deadline ends the call.
REPLY_MARGIN_S = 0.05
CONSISTENCY_KEY = "x-consistency-token"  # metadata in (reads), trailing metadata out (writes)


def peer_host(peer: str) -> str:
    """The address of "ipv4:10.0.0.7:51234" / "ipv6:[::1]:51234" (what anonymous rate limits count against)."""
    address = peer.split(":", 1)[-1]
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


def checked(request):
    """The request with every message checked for fields its type does not declare (a stream: each
    message as the handler reads it)."""
    if not hasattr(request, "__aiter__"):
        check_known(request)
        return request

    async def messages():
        async for message in request:
            check_known(message)
            yield message
    return messages()


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, access: AccessControl):
        self.access = access
        self.prefix = f"/{SERVICE_NAME}/"

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self.prefix):
            return handler  # health, reflection: public
        name = details.method[len(self.prefix):]
        operation = OPERATIONS[name]
        scope, operator_only = SCOPE_OF[operation], operation in OPERATOR_ONLY
        headers = {k.lower(): v for k, v in details.invocation_metadata or () if isinstance(v, str)}

        async def call(behavior, request, context: grpc.aio.ServicerContext):
            request_id = (headers.get("x-request-id") or uuid.uuid4().hex)[:64]
            token = REQUEST_ID.set(request_id)
            start, code, principal = time.perf_counter(), grpc.StatusCode.OK, "refused"
            try:
                caller = self.access.authorize(headers, peer_host(context.peer()), scope, operator_only)
                principal = caller.name
                left = context.time_remaining()
                with within(None if left is None else max(0.0, left - REPLY_MARGIN_S)), calling(caller, headers), \
                        consistency(headers.get(CONSISTENCY_KEY)) as state:
                    reply = await behavior(checked(request), context)
                written = () if state.written is None else ((CONSISTENCY_KEY, str(state.written)),)
                context.set_trailing_metadata((("x-request-id", request_id), *written))
                return reply
            except ServiceError as exc:
                code = STATUS[exc.kind]
                await self.refuse(context, exc, request_id)
            except asyncio.CancelledError:  # the caller went away or its deadline passed
                left = context.time_remaining()
                expired = left is not None and left <= REPLY_MARGIN_S
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error")
                code = grpc.StatusCode.INTERNAL
                await self.refuse(context, ServiceError(ErrorKind.INTERNAL, "internal error"), request_id)
            finally:
                elapsed = time.perf_counter() - start
                GRPC_SECONDS.labels(name, code.name).observe(elapsed)
                log.info("rpc", extra={"fields": {"method": name, "request_id": request_id, "code": code.name,
                                                  "seconds": round(elapsed, 4), "principal": principal}})
                REQUEST_ID.reset(token)

        # (grpc.aio awaits a behaviour only when it is a coroutine function: no lambdas here)
        if handler.request_streaming:
            async def stream_unary(requests, context):
                return await call(handler.stream_unary, requests, context)
            return grpc.stream_unary_rpc_method_handler(stream_unary, handler.request_deserializer, handler.response_serializer)

        async def unary_unary(request, context):
            return await call(handler.unary_unary, request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)

    @staticmethod
    async def refuse(context: grpc.aio.ServicerContext, exc: ServiceError, request_id: str) -> None:
        ERRORS.labels(exc.code).inc()
        if STATUS[exc.kind] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
            log.warning("dependency or internal error: %s", exc.message)
        await context.abort(STATUS[exc.kind], exc.message, trailing_metadata(exc, request_id))
