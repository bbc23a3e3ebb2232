"""A thin layer over aetcd for what packyard needs: connect with retry, read a prefix at one
revision, write many keys in transactions, watch a prefix from a revision.

Batching matters: on this machine one put at a time reaches ~1,000 keys/s while transactions of 128
puts reach ~24,000 (FIELD-NOTES). etcd refuses transactions of more than --max-txn-ops operations
(default 128), so writes are chunked to that size.

Every member of the cluster is used: an operation that finds its member unreachable (UNAVAILABLE,
a deadline, etcd's "no leader") moves to the next member and is tried again, with capped
exponential backoff once a whole round of members failed, for at most `retry_for` seconds; then it
raises EtcdUnavailable. Long-running loops catch that and go on; an API call turns it into an error.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

import aetcd
import grpc
from aetcd import exceptions as etcd_errors

from packyard import keys, tls

log = logging.getLogger(__name__)

MAX_TXN_OPS = 128          # etcd's default --max-txn-ops: what any etcd takes
LARGE_TXN_OPS = 1024       # what ours is started with (scheduler/embedded_etcd.py)
EtcdError = etcd_errors.ClientError
T = TypeVar("T")

# A fresh channel reconnects at once, but a channel that failed backs off up to 120 s by default:
# far longer than an etcd restart takes. Keepalive finds a member that vanished without a reset.
CHANNEL_OPTIONS = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.min_reconnect_backoff_ms": 100,
                   "grpc.max_reconnect_backoff_ms": 1000, "grpc.keepalive_time_ms": 10_000,
                   "grpc.keepalive_timeout_ms": 5_000,
                   # listing 100,000 instance records at start-up is ~35 MB in one reply
                   "grpc.max_receive_message_length": 1 << 30}
# etcd cancels a watch whose member lost its leader (else a partitioned member's watch just goes quiet)
WATCH_METADATA = (("hasleader", "true"),)
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 1.0
# One try of a small request on one member. A member without a leader holds a write for its whole
# request timeout (7 s with default settings) before answering "request timed out": better to give
# up on it sooner and ask a member that has one. Reading a large prefix gets the client's timeout.
ATTEMPT_SECONDS = 2.0


class EtcdUnavailable(etcd_errors.ConnectionFailedError):
    """No member of the cluster answered within the retry budget."""


class WatchCompacted(EtcdError):
    """A watch's start revision was compacted away: the caller must list again."""

    def __init__(self, prefix: str, compact_revision: int):
        self.prefix = prefix
        self.compact_revision = compact_revision
        super().__init__(f"watch on {prefix}: revisions before {compact_revision} were compacted")


class Outage:
    """For a loop that retries through etcd outages: one line when it starts failing and one when
    it works again, not one per try."""

    def __init__(self, logger: logging.Logger, what: str):
        self.log = logger
        self.what = what
        self.since: float | None = None

    def failed(self, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s failed (%s); retrying until etcd answers", self.what, _short(error))

    def ok(self) -> None:
        if self.since is not None:
            self.log.warning("%s works again after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Event:
    kind: str            # "put" | "delete"
    key: str
    value: bytes         # empty for deletes
    revision: int


def endpoints_problem(url: str) -> str:
    """Why `url` is not a list of etcd endpoints (for a flag's one-line error), or ""."""
    try:
        _parsed(url)
    except ValueError as e:
        return str(e)
    return ""


def _parsed(url: str) -> list:
    """`http://127.0.0.1:2379`, `https://...` (mutual TLS), `127.0.0.1:2379`, or a comma list of
    them (the cluster's members), each checked."""
    out = []
    for part in url.split(","):
        part = part.strip()
        if not part:
            continue
        parsed = urlparse(part if "://" in part else "http://" + part)
        try:
            port = parsed.port          # ValueError beyond 65535 or not a number
        except ValueError:
            port = None
        if parsed.scheme not in ("http", "https") or not parsed.hostname or not port:
            raise ValueError(f"etcd endpoint '{part}' must be host:port, http://host:port or https://host:port")
        out.append(parsed)
    if not out:
        raise ValueError(f"no etcd endpoint in '{url}'")
    return out


def parse_endpoints(url: str) -> list[tuple[str, int]]:
    """(host, port) of each endpoint of `url` (see _parsed)."""
    return [(p.hostname, p.port) for p in _parsed(url)]


def uses_tls(url: str) -> bool:
    """Whether the endpoints are https:// (all of them, or none: a mix is refused)."""
    schemes = {p.scheme for p in _parsed(url)}
    if len(schemes) > 1:
        raise ValueError(f"etcd endpoints '{url}' mix http and https")
    return schemes == {"https"}


class TLSClient(aetcd.Client):
    """aetcd.Client over mutual TLS (aetcd itself dials plaintext only): its connect() with a
    secure channel; the client certificate is the credential, so no user or password."""

    def __init__(self, *args, credentials: grpc.ChannelCredentials, **kwargs):
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        from aetcd import rpc, watcher
        try:
            self._is_connecting = True
            self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                                   options=list(self._options.items()))
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


def parse_endpoint(url: str) -> tuple[str, int]:
    """The first of the endpoints."""
    return parse_endpoints(url)[0]


def unreachable(e: BaseException) -> bool:
    """Whether an error means "this member cannot serve now" (try another), not a refused request."""
    if isinstance(e, (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError, TimeoutError)):
        return True
    return isinstance(e, grpc.aio.AioRpcError) and e.code() in (
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Etcd:
    def __init__(self, endpoints: str, timeout: float = 10.0, retry_for: float = 5.0,
                 attempt: float = ATTEMPT_SECONDS, identity: tls.Identity | None = None):
        """`identity` (a role's certificates, `--tls`): mutual TLS to https:// endpoints, the
        etcd server checked by its role name (packyard-etcd) like every other peer."""
        self.endpoints = endpoints
        self.members = parse_endpoints(endpoints)
        self.identity = identity
        self.credentials = None
        if uses_tls(endpoints):
            if identity is None:
                raise ValueError(f"etcd at {endpoints} wants TLS: start with --tls DIR")
            self.credentials = tls.channel_credentials(identity)
        self.timeout = timeout
        self.retry_for = retry_for
        self.attempt = attempt
        self._member = 0
        self.txn_ops = MAX_TXN_OPS     # raised by connect() if etcd allows larger transactions
        self.client = self._client_for(0)
        self.txn = self.client.transactions
        self._down_since: float | None = None     # set while an outage (or a failover) lasts
        self._delay = BACKOFF_FIRST
        self._closing: set[asyncio.Task] = set()

    def _client_for(self, index: int) -> aetcd.Client:
        host, port = self.members[index]
        if self.credentials is not None:
            return TLSClient(host=host, port=port, timeout=self.timeout, credentials=self.credentials,
                             options={**CHANNEL_OPTIONS, **dict(tls.channel_options("etcd"))})
        return aetcd.Client(host=host, port=port, timeout=self.timeout, options=dict(CHANNEL_OPTIONS))

    @property
    def current_endpoint(self) -> str:
        host, port = self.members[self._member]
        return f"{host}:{port}"

    # --- failover -------------------------------------------------------------------------------
    def _failed(self, client: aetcd.Client, error: BaseException) -> None:
        """`client`'s member could not serve: move everyone to the next member. Many calls fail
        together; only the first of them, still holding the current client, switches."""
        if client is not self.client:
            return
        if len(self.members) == 1 and isinstance(error, TimeoutError):
            # nowhere else to go, and a new channel to the same member would only cancel every
            # call in flight on this one (a busy process's loop makes calls look slow, too)
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
            nxt = self.members[(self._member + 1) % len(self.members)]
            log.warning("etcd at %s failed (%s); trying %s:%d and the other members, with backoff",
                        self.current_endpoint, _short(error), *nxt)
        self._member = (self._member + 1) % len(self.members)
        self.client = self._client_for(self._member)
        task = asyncio.get_running_loop().create_task(_close_quietly(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _answered(self) -> None:
        self._delay = BACKOFF_FIRST
        if self._down_since is not None:
            log.warning("etcd answers again at %s after %.1f s", self.current_endpoint,
                        time.monotonic() - self._down_since)
            self._down_since = None

    async def _backoff(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, min(self._delay, deadline - time.monotonic())))
        self._delay = min(self._delay * 2, BACKOFF_MAX)

    async def _call(self, op: Callable[[aetcd.Client], Awaitable[T]], retry_for: float | None = None,
                    attempt: float | None = None) -> T:
        """Run op on the current member; on an unreachable member, on the next one. A call that
        failed because another call switched members meanwhile (its channel closed) is retried too."""
        budget = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + budget
        tries = 0
        while True:
            client = self.client
            try:
                await client.connect()
                result = await asyncio.wait_for(op(client), attempt or self.attempt)
            except (Exception, asyncio.CancelledError) as e:
                if isinstance(e, asyncio.CancelledError) and cancelled_from_outside():
                    raise
                if not unreachable(e) and client is self.client:
                    raise
                self._failed(client, e)
                tries += 1
                if time.monotonic() >= deadline:
                    raise EtcdUnavailable(f"no etcd member of {self.endpoints} answered within "
                                          f"{budget:g} s ({_short(e)})") from e
                if tries % len(self.members) == 0:   # a whole round failed: wait before the next
                    await self._backoff(deadline)
                continue
            self._answered()
            return result

    async def connect(self, wait_seconds: float = 30.0) -> None:
        """Connect, retrying until a member answers: a cluster's parts may start in any order.
        Then learn how many operations a transaction may hold here (see txn_ops)."""
        await self._call(lambda c: c.status(), retry_for=wait_seconds)
        await self._learn_txn_ops()

    async def _learn_txn_ops(self) -> None:
        """etcd refuses transactions of more than its --max-txn-ops (128 unless configured; our
        embedded etcd allows 1,024). Fewer, larger transactions cost fewer round trips: try a
        read-only transaction of the larger size once and keep whichever size etcd takes."""
        # a node's agent may read only its own keys (etcd_auth.py): it probes its node record
        key = keys.node(self.identity.node) if self.identity is not None and self.identity.node else "/packyard/txn-probe"
        probe = [self.txn.get(key.encode())] * LARGE_TXN_OPS
        try:
            await self._call(lambda c: c.transaction(compare=[], success=probe, failure=[]))
            self.txn_ops = LARGE_TXN_OPS
        except etcd_errors.InvalidArgumentError:   # "too many operations in txn request"
            self.txn_ops = MAX_TXN_OPS

    async def close(self) -> None:
        await self.client.close()
        for task in list(self._closing):
            await task

    # --- keys -----------------------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        got = await self._call(lambda c: c.get(key.encode()))
        return got.value if got is not None else None

    async def get_prefix(self, prefix: str) -> tuple[int, list[KV]]:
        """All keys under prefix and the revision they were read at."""
        got = await self._call(lambda c: c.get_prefix(prefix.encode()), attempt=self.timeout)
        kvs = [KV(kv.key.decode(), kv.value, kv.mod_revision) for kv in got]
        return got.header.revision, kvs

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        res = await self._call(lambda c: c.put(key.encode(), value, lease=lease))
        return res.header.revision

    async def delete(self, key: str) -> None:
        await self._call(lambda c: c.delete(key.encode()))

    async def delete_prefix(self, prefix: str) -> None:
        await self._call(lambda c: c.delete_prefix(prefix.encode()), attempt=self.timeout)

    async def put_many(self, items: Iterable[tuple[str, bytes]], lease: int | None = None) -> None:
        """Unconditional puts (under `lease`, if given), MAX_TXN_OPS per transaction. Retrying a
        chunk whose reply was lost writes the same values again: harmless."""
        ops = [self.txn.put(k.encode(), v, lease=lease) for k, v in items]
        for i in range(0, len(ops), self.txn_ops):
            chunk = ops[i:i + self.txn_ops]
            await self._call(lambda c, chunk=chunk: c.transaction(compare=[], success=chunk, failure=[]))

    async def _txn(self, compare: list, ops: list) -> int:
        """One compare-and-write transaction; the new revision, or 0 if a comparison failed. If a
        member dies after committing but before replying, the retry's comparison fails and this
        returns 0: the caller re-reads and decides again, as for any conflict."""
        from aetcd import rpc
        request = rpc.TxnRequest(compare=[c.build_message() for c in compare],
                                 success=self.client._ops_to_requests(ops), failure=[])
        reply = await self._call(lambda c: c.kvstub.Txn(request, timeout=c._timeout))
        return reply.header.revision if reply.succeeded else 0

    async def put_if_unchanged(self, writes: list[tuple[str, bytes, int]],
                               deletes: Iterable[str] = (), guard: tuple[str, int] | None = None) -> int:
        """Puts that succeed only if every key still has the given mod_revision (0 = must not
        exist): optimistic concurrency, as Kubernetes binds. Returns the new revision, or 0 if
        any key had changed (nothing written). Caller chunks to MAX_TXN_OPS. `guard` (key,
        mod_revision) is one more comparison without a write: a fencing token such as the
        leader key, so a deposed leader's writes fail."""
        # the request is built from etcd's messages directly: aetcd's op objects cost more than
        # the write itself when a placement commits 100,000 instances
        from aetcd import rpc
        compare = [rpc.Compare(key=k.encode(), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                               mod_revision=rev) for k, _, rev in writes]
        if guard is not None:
            compare.append(rpc.Compare(key=guard[0].encode(), target=rpc.Compare.MOD,
                                       result=rpc.Compare.EQUAL, mod_revision=guard[1]))
        ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=k.encode(), value=v)) for k, v, _ in writes]
        ops += [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k.encode())) for k in deletes]
        request = rpc.TxnRequest(compare=compare, success=ops, failure=[])
        reply = await self._call(lambda c: c.kvstub.Txn(request, timeout=c._timeout))
        return reply.header.revision if reply.succeeded else 0

    async def create_if_absent(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Create `key` only if it does not exist (as elections need). Returns the revision of
        the write, or 0 if the key was already there."""
        k = key.encode()
        return await self._txn([self.txn.create(k) == 0], [self.txn.put(k, value, lease=lease)])

    # --- leases ---------------------------------------------------------------------------------
    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl))
        return lease.id

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive; returns its remaining TTL (0 or less: it has expired)."""
        reply = await self._call(lambda c: c.refresh_lease(lease_id))
        return reply.TTL

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(lambda c: c.revoke_lease(lease_id))

    # --- watches --------------------------------------------------------------------------------
    async def watch_prefix(self, prefix: str, start_revision: int,
                           handler: Callable[[list[Event]], Awaitable[None]],
                           on_compacted: Callable[[int], Awaitable[int]] | None = None) -> asyncio.Task:
        """Run handler on each batch of events under prefix, from start_revision on, until the
        returned task is cancelled. One etcd watch response (e.g. one transaction) is one batch.
        If the stream breaks (its member died, etcd restarting) it is opened again, on another
        member if need be, from the revision after the last one handled: no event is lost or
        repeated. If that revision was compacted, on_compacted(compact_revision) must list the
        prefix again and return the revision to watch from; without it the task ends with
        WatchCompacted."""
        return asyncio.get_running_loop().create_task(
            self._watch(prefix, start_revision, handler, on_compacted))

    async def _watch(self, prefix: str, revision: int, handler, on_compacted) -> None:
        from aetcd import rpc
        key = prefix.encode()
        delay, broken = BACKOFF_FIRST, False
        while True:
            create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=key, range_end=aetcd.utils.prefix_range_end(key), start_revision=revision))
            client, call = self.client, None
            try:
                await client.connect()
                # the request side stays open (closing it would end the watch); written by us, not
                # fed from a generator, so a call closed under it leaves no task behind
                call = rpc.WatchStub(client.channel).Watch(metadata=WATCH_METADATA)
                async with contextlib.aclosing(_confirmed(call, create, self.attempt)) as responses:
                    async for response in responses:
                        if response.compact_revision:
                            revision = await _compacted(prefix, response.compact_revision, on_compacted)
                            break
                        if response.canceled:
                            raise etcd_errors.ConnectionFailedError(f"watch canceled: {response.cancel_reason}")
                        if response.created and broken:
                            self._answered()
                            log.info("watch on %s resumed at %s from revision %d", prefix,
                                     self.current_endpoint, revision)
                            delay, broken = BACKOFF_FIRST, False
                        if not response.events:
                            continue
                        batch = [Event("delete" if ev.type == 1 else "put", ev.kv.key.decode(),
                                       ev.kv.value, ev.kv.mod_revision) for ev in response.events]
                        revision = batch[-1].revision + 1
                        await handler(batch)
            except WatchCompacted:
                raise
            except (Exception, asyncio.CancelledError) as e:  # stream broken: member gone, or switched
                if isinstance(e, asyncio.CancelledError) and cancelled_from_outside():
                    raise
                if not broken:
                    log.warning("watch on %s broke (%s); resuming from revision %d", prefix,
                                _short(e), revision)
                broken = True
                if unreachable(e) or client is not self.client:
                    self._failed(client, e)
            finally:
                if call is not None:
                    call.cancel()   # ends the watch on its member too
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


async def _confirmed(call, create, within: float):
    """The watch's responses, once etcd confirmed its creation within `within` seconds. A stream
    opened while its member was coming back (the whole cluster restarting) could wait for ever with
    no error, neither written nor answered, and the watch never resumed: a stream not confirmed in
    time is given up like a broken one (TimeoutError: the member cannot serve), and opened again."""
    stream = aiter(call)
    async with asyncio.timeout(within):
        await call.write(create)
        first = await anext(stream)
    yield first
    async for response in stream:
        yield response


async def _compacted(prefix: str, compact_revision: int, on_compacted) -> int:
    if on_compacted is None:
        log.error("watch on %s: revisions before %d were compacted; nobody to list again",
                  prefix, compact_revision)
        raise WatchCompacted(prefix, compact_revision)
    log.warning("watch on %s: revisions before %d were compacted; listing again", prefix, compact_revision)
    return await on_compacted(compact_revision)


def cancelled_from_outside() -> bool:
    """A CancelledError is ours to pass on only if this task is being cancelled: gRPC raises one
    too in a call whose channel was closed, which is what switching members does to the calls and
    watches still on the old member; those must be retried, not end the caller's loop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _short(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__


async def _close_quietly(client: aetcd.Client) -> None:
    try:
        await client.close()
    except Exception as e:  # its member is gone; nothing to tell anyone
        log.debug("closing a client of a failed member: %s", e)

