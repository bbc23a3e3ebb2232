"""An API call that needs etcd while no member answers fails with UNAVAILABLE ("etcd unavailable:
..."), the code that tells ctl another replica may answer; without this gRPC reports UNKNOWN with
a Python exception name. The call never hangs: the etcd client gives up after its retry budget."""
from __future__ import annotations

import grpc

from packyard.etcd import EtcdUnavailable


async def _abort(context, e: EtcdUnavailable) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd unavailable, try again: {e}")


def _unary(inner):
    async def call(request, context):
        try:
            return await inner(request, context)
        except EtcdUnavailable as e:
            await _abort(context, e)
    return call


def _streaming(inner):
    async def call(request, context):
        try:
            async for item in inner(request, context):
                yield item
        except EtcdUnavailable as e:
            await _abort(context, e)
    return call


class EtcdUnavailableToStatus(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary),
                                                       handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_streaming(handler.unary_stream),
                                                        handler.request_deserializer,
                                                        handler.response_serializer)
        return handler
