"""The StateService servicer: each RPC converts the request, calls the library, converts the answer.

One behaviour is kept from the original service for wire compatibility: a
``Get`` of a key that does not exist (or was deleted) answers OK with
``revision`` 0 and neither ``value`` nor ``last_updated``, as clients of the
original expect. A missing *store* is NOT_FOUND, like every other error
through :mod:`windshift_grpc.status`.
"""

from __future__ import annotations

from typing import Any

import windshift
from windshift import KeyNotFoundError, ValidationError
from windshift_grpc import convert
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as pb_grpc


class StateService(pb_grpc.StateServiceServicer):
    """``windshift.state.v1alpha1.StateService`` on a :class:`windshift.Client`."""

    def __init__(self, client: windshift.Client) -> None:
        self._client = client

    async def EnsureStore(
        self, request: pb.EnsureStoreRequest, context: Any
    ) -> pb.EnsureStoreResponse:
        await self._client.ensure_store(request.store)
        return pb.EnsureStoreResponse()

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        store = self._client.store(request.store)
        try:
            entry = await store.get(request.key)
        except KeyNotFoundError:  # a missing store (StoreNotFoundError) stays NOT_FOUND
            return pb.GetResponse(revision=0)
        return pb.GetResponse(
            revision=entry.revision,
            value=entry.value,
            last_updated=convert.to_timestamp(entry.updated),
        )

    async def Set(self, request: pb.SetRequest, context: Any) -> pb.SetResponse:
        if not request.HasField("value") or not request.value.type_url:
            raise ValidationError(f"set {request.key!r}: value is missing")
        revision = await self._client.store(request.store).set(
            request.key,
            request.value,
            create_only=request.create_only,
            last_revision=request.last_revision
            if request.HasField("last_revision") and not request.create_only
            else None,
        )
        return pb.SetResponse(revision=revision)

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        await self._client.store(request.store).delete(
            request.key,
            last_revision=request.last_revision if request.HasField("last_revision") else None,
        )
        return pb.DeleteResponse()


__all__ = ["StateService"]
