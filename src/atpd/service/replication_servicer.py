"""ReplicationService.Follow: the primary's end of a follower's stream (replication_source.py
decides what is sent; this adapter checks the request and reads the follower's acks)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from atpd.service.errors import abort, is_bug, status_of
from atpd.service.replication_role import ReplicationRole
from atpd.service.replication_source import FollowerLink
from atpd.service.validation import InvalidArgument
from atpd.v1 import replication_pb2, replication_pb2_grpc

MAX_FOLLOWER_ID_CHARS = 128
# A follower must say who it is and where it starts this soon after opening the stream.
START_TIMEOUT_S = 10.0


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    def __init__(self, role: ReplicationRole) -> None:
        self.role = role

    async def Follow(
        self, request_iterator: AsyncIterator[replication_pb2.FollowerMessage], context: Any
    ) -> AsyncIterator[replication_pb2.FollowMessage]:
        metrics = self.role.engine.metrics
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        source = self.role.source
        link: FollowerLink | None = None
        reader: asyncio.Task[None] | None = None
        try:
            start = await _start_of(request_iterator)
            link = source.open_link(start.follower_id, start.from_sequence)
            reader = asyncio.get_running_loop().create_task(self._read_acks(request_iterator, link))
            async for message in source.messages(link):
                if reader.done():
                    reader.result()  # the follower's ack was refused: raise it
                    return  # the follower closed its side: the stream is over
                yield message
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            code = status_of(error)
            if is_bug(error):
                raise
            if context.done() or context.cancelled():
                # The follower went away (cancelled, past its deadline): its request stream
                # simply ended, and there is nobody left to send a status to.
                code = grpc.StatusCode.CANCELLED
                return
            try:
                await abort(context, code, str(error))
            except grpc.aio.AbortError:
                raise
            except Exception:
                # The call ended between the check and the status (a deadline just passed):
                # end the handler as a cancelled call, which gRPC expects quietly.
                code = grpc.StatusCode.CANCELLED
                raise asyncio.CancelledError from None
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            if link is not None:
                source.close_link(link)
            metrics.rpc_latency.labels("Follow").observe(time.perf_counter() - started)
            metrics.rpc_calls.labels("Follow", code.name).inc()

    async def _read_acks(
        self, requests: AsyncIterator[replication_pb2.FollowerMessage], link: FollowerLink
    ) -> None:
        async for message in requests:
            if message.WhichOneof("kind") != "ack":
                raise InvalidArgument("FollowerMessage", "after `start`, only `ack` may be sent")
            self.role.source.acknowledge(link, message.ack.durable_sequence)


async def _start_of(
    requests: AsyncIterator[replication_pb2.FollowerMessage],
) -> replication_pb2.FollowRequest:
    """The first message, which must be `start` with a follower id and a sequence >= 0."""
    try:
        first = await asyncio.wait_for(anext(requests), START_TIMEOUT_S)
    except StopAsyncIteration:
        raise InvalidArgument("FollowerMessage.start", "the stream ended before it") from None
    except TimeoutError:
        raise InvalidArgument(
            "FollowerMessage.start", f"not sent within {START_TIMEOUT_S:.0f} s"
        ) from None
    if first.WhichOneof("kind") != "start":
        raise InvalidArgument("FollowerMessage.start", "the first message must be `start`")
    start = first.start
    if not start.follower_id or len(start.follower_id) > MAX_FOLLOWER_ID_CHARS:
        raise InvalidArgument(
            "FollowRequest.follower_id", f"must be 1..{MAX_FOLLOWER_ID_CHARS} characters"
        )
    if start.from_sequence < 0:
        raise InvalidArgument("FollowRequest.from_sequence", f"{start.from_sequence} is negative")
    return start
