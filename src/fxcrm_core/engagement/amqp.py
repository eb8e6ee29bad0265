"""RabbitMQ (AMQP 0.9.1) adapters of the :class:`~fxcrm_core.engagement.notifier.Notifier`
port, on py-amqp: install ``fxcrm-core[amqp]``. Nothing in the package imports this module; a
host that sends through RabbitMQ imports it itself.

**The wire** (:class:`AmqpNotifier`). ``send`` publishes the envelope as a persistent message
(``delivery_mode`` 2, ``message_id`` = the outbox key, body: the envelope as JSON) to a durable
exchange, ``mandatory`` (a message no queue takes is an error, not a silent loss), with
publisher confirms on: it returns its :class:`Receipt` only after the broker confirmed, that is
took the message into its durable queues. Anything else (the broker away, a timeout, a nack, no
queue bound) raises a retryable :class:`DeliveryError` whose message names the broker and the
failure's kind, never the envelope's parameters, and drops the connection: the next ``send``
connects again. The topology is declared by :meth:`AmqpNotifier.declare` (or
:meth:`AmqpInbox.declare`), never as a side effect.

**The consumer** (:class:`AmqpInbox`) gets each message at least once (a relay that crashed
after publishing and before recording "sent" publishes again; a consumer that died before its
ack gets it again) and calls its handler **once per message_id** through a :class:`DedupStore`:

* :meth:`SqliteDedupStore.once` opens one SQLite transaction, checks the key, lets the handler
  do its own writes on the same connection, records the key and commits. The handler's effect
  and the key are one commit: both or neither.
* The inbox acks only after ``once`` returned, that is after that commit. A crash before the
  commit leaves neither effect nor key and no ack: the message comes back and runs for the
  first time. A crash after the commit and before the ack leaves effect and key: the message
  comes back, ``once`` finds the key, runs nothing, and the inbox acks it. So every message_id's
  effect is committed exactly once.
* A handler whose effect is outside that database (it calls a gateway) is run inside the
  transaction and its key committed after it returns: a crash between the two runs it again on
  redelivery. Exactly once for such effects needs the far side to dedup by the key too (pass
  ``envelope.key`` as its idempotency key).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

import attrs

try:
    import amqp  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("fxcrm_core.engagement.amqp needs py-amqp: install fxcrm-core[amqp]") from exc

from fxcrm_core.engagement.notifier import (
    Channel,
    DeliveryError,
    Envelope,
    MessageKind,
    Receipt,
)
from fxcrm_core.kernel.errors import ValidationError

__all__ = [
    "AmqpInbox",
    "AmqpNotifier",
    "AmqpSettings",
    "DedupStore",
    "InboxStats",
    "SqliteDedupStore",
    "decode_envelope",
    "encode_envelope",
]

_log = logging.getLogger(__name__)

#: The body's schema version; :func:`decode_envelope` refuses any other.
BODY_VERSION: Final = 1
CONTENT_TYPE: Final = "application/json"
MESSAGE_TYPE: Final = "fxcrm.envelope"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


# --- connection settings --------------------------------------------------------------------


@attrs.frozen
class AmqpSettings:
    """Where the broker is and how long to wait for it. ``repr`` never shows the password."""

    host: str = "127.0.0.1"
    port: int = 5672
    user: str = "guest"
    password: str = attrs.field(default="guest", repr=False)
    vhost: str = "/"
    timeout: float = 5.0

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0) -> AmqpSettings:
        """``amqp://user:password@host:port/vhost`` (the vhost percent-encoded, ``%2F`` for
        ``/``; an empty path is ``/``)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "amqp":
            raise ValidationError("an AMQP url starts with amqp:// (amqps is not supported)")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5672,
            user=urllib.parse.unquote(parts.username or "guest"),
            password=urllib.parse.unquote(parts.password or "guest"),
            vhost=urllib.parse.unquote(path) if path else "/",
            timeout=timeout,
        )

    @property
    def where(self) -> str:
        """The broker's address for messages: host, port and vhost, no credentials."""
        return f"{self.host}:{self.port}{self.vhost if self.vhost.startswith('/') else '/'}"

    def connect(self, *, confirms: bool) -> Any:
        """An open py-amqp connection; every socket operation bounded by ``timeout``."""
        conn = amqp.Connection(
            host=f"{self.host}:{self.port}",
            userid=self.user,
            password=self.password,
            virtual_host=self.vhost,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
            confirm_publish=confirms,
        )
        try:
            conn.connect()
        except BaseException:
            _close_quietly(conn)
            raise
        return conn


def _settings(
    url: str | None, host: str, port: int, user: str, password: str, vhost: str, timeout: float
) -> AmqpSettings:
    if timeout <= 0:
        raise ValidationError("an AMQP timeout is a positive number of seconds")
    if url is not None:
        return AmqpSettings.from_url(url, timeout=timeout)
    return AmqpSettings(host, port, user, password, vhost, timeout)


def _close_quietly(conn: Any) -> None:
    # drop the socket without a closing handshake a dead peer would not answer
    with contextlib.suppress(Exception):
        conn.collect()


def _declare(channel: Any, exchange: str, queue: str | None, routing_key: str) -> None:
    channel.exchange_declare(exchange, "direct", durable=True, auto_delete=False)
    if queue is not None:
        channel.queue_declare(queue, durable=True, exclusive=False, auto_delete=False)
        channel.queue_bind(queue, exchange, routing_key)


# --- the body -------------------------------------------------------------------------------


def encode_envelope(envelope: Envelope, at: datetime) -> bytes:
    """The message body: the envelope as JSON (parameters as ordered pairs) and the instant
    it was handed over. Nothing else: no credentials, no broker detail."""
    body = {
        "v": BODY_VERSION,
        "key": envelope.key,
        "client_id": envelope.client_id,
        "channel": envelope.channel.value,
        "template": envelope.template,
        "params": [list(pair) for pair in envelope.params],
        "locale": envelope.locale,
        "kind": envelope.kind.value,
        "attempt": envelope.attempt,
        "at": at.astimezone(UTC).isoformat(),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def decode_envelope(body: bytes) -> Envelope:
    """The envelope back from a body :func:`encode_envelope` wrote; :class:`ValidationError`
    for anything else (its message never echoes the body)."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("v") != BODY_VERSION:
            raise ValueError
        params = tuple((str(name), str(text)) for name, text in data["params"])
        attempt = data["attempt"]
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            raise ValueError
        return Envelope(
            key=str(data["key"]),
            client_id=str(data["client_id"]),
            channel=Channel(data["channel"]),
            template=str(data["template"]),
            params=params,
            locale=str(data["locale"]),
            kind=MessageKind(data["kind"]),
            attempt=attempt,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError("not an fxcrm envelope message") from exc


# --- the wire -------------------------------------------------------------------------------


class AmqpNotifier:
    """The :class:`~fxcrm_core.engagement.notifier.Notifier` port on RabbitMQ: ``send``
    returns only after the broker confirmed the persistent message (see the module's doc).
    Give either ``url`` or host/port/user/password/vhost. One connection, opened on the first
    ``send`` and again after any failure; thread-safe (sends are serialised)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 5672,
        user: str = "guest",
        password: str = "guest",  # noqa: S107 - RabbitMQ's stock local account
        vhost: str = "/",
        exchange: str,
        routing_key: str,
        timeout: float = 5.0,
    ) -> None:
        self.settings = _settings(url, host, port, user, password, vhost, timeout)
        self.exchange = exchange
        self.routing_key = routing_key
        self._lock = threading.Lock()
        self._conn: Any = None
        self._channel: Any = None

    def __repr__(self) -> str:
        return f"AmqpNotifier({self.settings.where}, exchange={self.exchange!r})"

    def declare(self, queue: str | None = None) -> None:
        """Declare the durable exchange, and ``queue`` (durable) bound to it by the routing
        key if given. Idempotent; raises :class:`DeliveryError` if the broker is away."""
        with self._lock:
            self._guarded(
                "declare", lambda ch: _declare(ch, self.exchange, queue, self.routing_key)
            )

    def send(self, envelope: Envelope, at: datetime) -> Receipt:
        body = encode_envelope(envelope, at)
        message = amqp.Message(
            body,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=envelope.key,
            type=MESSAGE_TYPE,
            timestamp=int(at.timestamp()),
        )

        def publish(channel: Any) -> None:
            # With confirm_publish on the connection, basic_publish waits for the broker's ack
            # (MessageNacked on a nack; a mandatory message no queue took comes back first).
            channel.basic_publish(
                message,
                exchange=self.exchange,
                routing_key=self.routing_key,
                mandatory=True,
                confirm_timeout=self.settings.timeout,
            )

        with self._lock:
            self._guarded("publish", publish)
        return Receipt(envelope.key, envelope.key, at)

    def close(self) -> None:
        """Close the connection (a later ``send`` opens a new one)."""
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # already gone: nothing to close
                    _close_quietly(conn)

    def __enter__(self) -> AmqpNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guarded(self, what: str, action: Callable[[Any], None]) -> None:
        """Run ``action`` on the channel, connecting first if need be. Any failure drops the
        connection (its state, e.g. a confirm still in flight, is unknown) and becomes a
        retryable :class:`DeliveryError` naming only the broker and the failure's kind."""
        try:
            if self._channel is None:
                self._conn = self.settings.connect(confirms=True)
                self._channel = self._conn.channel()
            action(self._channel)
        except Exception as exc:  # nothing from the wire reaches the caller raw
            conn, self._conn, self._channel = self._conn, None, None
            if conn is not None:
                _close_quietly(conn)
            raise DeliveryError(_failure(what, self.settings, exc), retryable=True) from exc


def _failure(what: str, settings: AmqpSettings, exc: BaseException) -> str:
    if isinstance(exc, amqp.exceptions.MessageNacked):
        reason = "the broker refused (nack) the message"
    elif isinstance(exc, TimeoutError):
        reason = f"no answer within {settings.timeout:g}s"
    elif isinstance(exc, amqp.exceptions.AMQPError):
        # reply_code/reply_text are the broker's own words (no message content in them)
        reason = f"{type(exc).__name__} {getattr(exc, 'reply_code', '')}".rstrip()
        text = getattr(exc, "reply_text", "")
        if isinstance(text, str) and text:
            reason += f": {text[:200]}"
    else:
        reason = type(exc).__name__
    return f"AMQP {what} at {settings.where} failed: {reason}"


# --- the consumer ---------------------------------------------------------------------------

TxT_co = TypeVar("TxT_co", covariant=True)


class DedupStore(Protocol[TxT_co]):
    """The consumer's memory of the message keys it has acted on.

    ``once(key, effect)`` runs ``effect`` with the store's transaction and records ``key`` in
    it, atomically, unless ``key`` is already recorded (then it runs nothing and returns
    ``False``). It returns only once the key is durable: the caller acks after it."""

    def once(self, key: str, effect: Callable[[TxT_co], None]) -> bool: ...


class SqliteDedupStore:
    """A :class:`DedupStore` in SQLite: a table of keys (``key`` the primary key, ``at`` when
    recorded) in the database the handler writes its own effect to. The handler gets the
    ``sqlite3.Connection`` inside ``BEGIN IMMEDIATE``; its writes and the key commit together,
    or roll back together if it raises."""

    def __init__(self, path: str | Path, *, table: str = "inbox_seen") -> None:
        if not _NAME.fullmatch(table):
            raise ValidationError("a dedup table name is a plain SQL identifier")
        self.table = table
        # the table name is a checked identifier: no injection through it
        self._select = f"SELECT 1 FROM {table} WHERE key = ?"  # noqa: S608
        self._insert = f"INSERT INTO {table} (key, at) VALUES (?, ?)"  # noqa: S608
        self._lock = threading.Lock()
        self.connection = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=FULL")  # a committed key survives a crash
        self.connection.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, at TEXT NOT NULL)"
        )

    def once(self, key: str, effect: Callable[[sqlite3.Connection], None]) -> bool:
        with self._lock:
            conn = self.connection
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute(self._select, (key,))
                if found.fetchone() is not None:
                    conn.execute("ROLLBACK")
                    return False
                effect(conn)
                conn.execute(self._insert, (key, datetime.now(UTC).isoformat()))
                conn.execute("COMMIT")
                return True
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def seen(self, key: str) -> bool:
        """Whether ``key`` is recorded."""
        with self._lock:
            row = self.connection.execute(self._select, (key,))
            return row.fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self.connection.close()


@attrs.define
class InboxStats:
    """What one :meth:`AmqpInbox.drain` did: messages ``handled`` (the handler ran and its key
    committed), ``skipped`` (a key already recorded: acked, nothing run), ``rejected`` (not an
    envelope message: rejected without requeue, to the queue's dead-letter exchange if any)."""

    handled: int = 0
    skipped: int = 0
    rejected: int = 0

    @property
    def received(self) -> int:
        return self.handled + self.skipped + self.rejected


TxT = TypeVar("TxT")


class AmqpInbox(Generic[TxT]):
    """Consumes ``queue`` and calls ``handler(envelope, tx)`` once per message_id through
    ``seen`` (see the module's doc for the exactly-once argument): the ack goes out only after
    ``seen.once`` committed the key; a redelivered message whose key is recorded is acked and
    skipped. If the handler raises, its transaction rolls back, the message is requeued and the
    exception propagates out of :meth:`drain`.

    A message that is not an envelope (a body :func:`decode_envelope` refuses, or a
    ``message_id`` other than its key) is rejected without requeue (to the queue's dead-letter
    exchange if the host configured one). Connection failures propagate as
    :class:`DeliveryError` (retryable); the next ``drain`` connects again, and unacked messages
    come back to the queue. One inbox is used by one thread."""

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 5672,
        user: str = "guest",
        password: str = "guest",  # noqa: S107 - RabbitMQ's stock local account
        vhost: str = "/",
        exchange: str,
        routing_key: str,
        queue: str,
        seen: DedupStore[TxT],
        handler: Callable[[Envelope, TxT], None],
        timeout: float = 5.0,
        prefetch: int = 16,
    ) -> None:
        self.settings = _settings(url, host, port, user, password, vhost, timeout)
        self.exchange = exchange
        self.routing_key = routing_key
        self.queue = queue
        self.seen = seen
        self.handler = handler
        self.prefetch = prefetch
        self._conn: Any = None
        self._channel: Any = None
        self._stats = InboxStats()
        self._budget: int | None = None
        self._handler_error: Exception | None = None

    def declare(self) -> None:
        """Declare the durable exchange and the durable queue bound to it. Idempotent."""
        try:
            self._open()
            _declare(self._channel, self.exchange, self.queue, self.routing_key)
        except Exception as exc:
            self._drop()
            raise DeliveryError(_failure("declare", self.settings, exc)) from exc

    def drain(self, *, max_messages: int | None = None, idle: float = 0.5) -> InboxStats:
        """Consume until no message arrived for ``idle`` seconds, or ``max_messages`` were
        received; return what was done. A handler's exception propagates as is (its message
        requeued); a wire failure as a retryable :class:`DeliveryError` (the connection
        dropped, the next ``drain`` connects again)."""
        self._stats = InboxStats()
        self._budget = max_messages
        self._handler_error = None
        try:
            self._open()
            while self._budget is None or self._budget > 0:
                try:
                    self._conn.drain_events(timeout=idle)
                except TimeoutError:
                    break
        except Exception as exc:
            if exc is self._handler_error:
                raise
            self._drop()
            raise DeliveryError(_failure("consume", self.settings, exc)) from exc
        return self._stats

    def close(self) -> None:
        """Close the connection; messages received and not acked go back to the queue."""
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already gone: nothing to close
                _close_quietly(conn)

    def __enter__(self) -> AmqpInbox[TxT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        if self._channel is None:
            self._conn = self.settings.connect(confirms=False)
            self._channel = self._conn.channel()
            self._channel.basic_qos(0, self.prefetch, False)
            self._channel.basic_consume(self.queue, callback=self._on_message)

    def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            _close_quietly(conn)

    def _on_message(self, message: Any) -> None:
        channel, tag = message.channel, message.delivery_tag
        if self._budget is not None:
            self._budget -= 1
        key = message.properties.get("message_id")
        try:
            envelope = decode_envelope(message.body)
            if not isinstance(key, str) or key != envelope.key:
                raise ValidationError("the message_id is not the envelope's key")
        except ValidationError:
            _log.warning("rejected a message that is not an fxcrm envelope (tag %s)", tag)
            channel.basic_reject(tag, requeue=False)
            self._stats.rejected += 1
            return
        try:
            ran = self.seen.once(key, lambda tx: self.handler(envelope, tx))
        except Exception as exc:
            self._handler_error = exc
            try:
                channel.basic_reject(tag, requeue=True)
            except Exception:  # the connection is gone: it comes back anyway
                self._drop()
            raise
        # The key is committed (now or by an earlier delivery): only now the ack.
        channel.basic_ack(tag)
        if ran:
            self._stats.handled += 1
        else:
            self._stats.skipped += 1
