"""gRPC server reflection under both names: `grpc.reflection.v1.ServerReflection` (what current
tools ask first) and `grpc.reflection.v1alpha.ServerReflection`.

grpcio-reflection serves only v1alpha. The v1 service is the same protocol renamed: its messages
have the same fields and numbers, so v1alpha's servicer answers v1 requests byte for byte. The
v1 file descriptor is registered too (v1alpha's, with the package renamed), so a client that
asks reflection about reflection itself finds v1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> list[str]:
    """Serve reflection (v1 and v1alpha) of `service_names` on `server`; the names of every
    service it then serves, reflection's own included."""
    _register_v1_descriptor()
    names = [*service_names, V1_SERVICE, reflection.SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": handler}),)
    )
    return names


def _register_v1_descriptor() -> None:
    pool: Any = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    pool.Add(proto)
