"""The RabbitMQ notifier and inbox against a real broker (FXCRM_AMQP_URL, default
amqp://guest:guest@127.0.0.1:5672/). Without a reachable broker or without py-amqp the tests
skip, saying why; with FXCRM_REQUIRE_AMQP=1 (CI) they fail instead.

Each test declares its own uniquely named exchange and queue and deletes them after."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from fxcrm_core.engagement.notifier import (
    Channel,
    DeliveryError,
    Envelope,
    MessageKind,
    Notifier,
    Receipt,
)
from fxcrm_core.kernel.errors import ValidationError

REQUIRE = os.environ.get("FXCRM_REQUIRE_AMQP") == "1"
URL = os.environ.get("FXCRM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

if importlib.util.find_spec("amqp") is None:  # pragma: no cover - the extra is missing
    if REQUIRE:
        raise ImportError("FXCRM_REQUIRE_AMQP=1 but py-amqp is not installed")
    pytest.skip(
        "py-amqp is not installed (pip install 'fxcrm-core[amqp]')", allow_module_level=True
    )

from fxcrm_core.engagement.amqp import (  # noqa: E402 - after the skip above
    AmqpInbox,
    AmqpNotifier,
    AmqpSettings,
    InboxStats,
    SqliteDedupStore,
    decode_envelope,
    encode_envelope,
)

pytestmark = pytest.mark.slow
AT = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
SECRET_PARAM = "param-text-that-must-never-appear-in-an-error"


def _envelope(key: str = "welcome:once:c-1", attempt: int = 1) -> Envelope:
    return Envelope(
        key=key,
        client_id="c-1",
        channel=Channel.EMAIL,
        template="welcome",
        params=(("name", SECRET_PARAM), ("tier", "gold")),
        locale="en",
        kind=MessageKind.SERVICE,
        attempt=attempt,
    )


@pytest.fixture(scope="module")
def settings() -> AmqpSettings:
    """The broker's settings, or a skip (a failure under FXCRM_REQUIRE_AMQP=1)."""
    found = AmqpSettings.from_url(URL, timeout=10.0)
    try:
        found.connect(confirms=False).close()
    except Exception as exc:
        reason = f"RabbitMQ not reachable at {found.where} ({type(exc).__name__})"
        if REQUIRE:
            pytest.fail(f"FXCRM_REQUIRE_AMQP=1: {reason}")
        pytest.skip(reason)
    return found


@attrs.frozen
class Names:
    exchange: str
    queue: str
    routing_key: str


@pytest.fixture
def names(settings: AmqpSettings) -> Iterator[Names]:
    """A fresh exchange and queue (declared by the notifier), deleted after the test."""
    tag = uuid.uuid4().hex[:12]
    made = Names(f"fxcrm-test-{tag}", f"fxcrm-test-{tag}", "notify")
    with _notifier(settings, made) as notifier:
        notifier.declare(made.queue)
    yield made
    conn = settings.connect(confirms=False)
    try:
        channel = conn.channel()
        channel.queue_delete(made.queue)
        channel.exchange_delete(made.exchange)
    finally:
        conn.close()


def _notifier(settings: AmqpSettings, names: Names, **overrides: Any) -> AmqpNotifier:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "password": settings.password,
        "vhost": settings.vhost,
        "exchange": names.exchange,
        "routing_key": names.routing_key,
        "timeout": settings.timeout,
    }
    options.update(overrides)
    return AmqpNotifier(**options)


class Effects:
    """A handler whose effect is a row in the dedup store's own database."""

    def __init__(self, store: SqliteDedupStore) -> None:
        self.store = store
        store.connection.execute("CREATE TABLE IF NOT EXISTS sent_mail (key TEXT, attempt INT)")
        self.calls = 0

    def __call__(self, envelope: Envelope, tx: sqlite3.Connection) -> None:
        self.calls += 1
        tx.execute("INSERT INTO sent_mail VALUES (?, ?)", (envelope.key, envelope.attempt))

    def rows(self) -> list[tuple[str, int]]:
        return self.store.connection.execute("SELECT key, attempt FROM sent_mail").fetchall()


def _inbox(
    settings: AmqpSettings,
    names: Names,
    store: SqliteDedupStore,
    handler: Callable[[Envelope, sqlite3.Connection], None],
) -> AmqpInbox[sqlite3.Connection]:
    return AmqpInbox(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        vhost=settings.vhost,
        exchange=names.exchange,
        routing_key=names.routing_key,
        queue=names.queue,
        seen=store,
        handler=handler,
        timeout=settings.timeout,
    )


def _drain(inbox: AmqpInbox[sqlite3.Connection], expected: int) -> InboxStats:
    """Consume the ``expected`` messages however slow the broker (a requeue or a redelivery is
    asynchronous), then whatever else comes within 0.3 s: what one inbox did in all."""
    first = inbox.drain(max_messages=expected, idle=15)
    rest = inbox.drain(idle=0.3)
    return InboxStats(
        handled=first.handled + rest.handled,
        skipped=first.skipped + rest.skipped,
        rejected=first.rejected + rest.rejected,
    )


def _queued(settings: AmqpSettings, queue: str) -> int:
    conn = settings.connect(confirms=False)
    try:
        _, count, _ = conn.channel().queue_declare(queue, passive=True)
        return int(count)
    finally:
        conn.close()


# --- no broker needed -----------------------------------------------------------------------


def test_the_body_round_trips_and_garbage_is_refused_without_echo() -> None:
    body = encode_envelope(_envelope(), AT)
    assert decode_envelope(body) == _envelope()
    for bad in (b"not json", b"[]", b'{"v": 2}', body.replace(b'"attempt":1', b'"attempt":"1"')):
        with pytest.raises(ValidationError) as caught:
            decode_envelope(bad)
        assert SECRET_PARAM not in str(caught.value)


def test_the_url_is_parsed_and_the_password_never_shown() -> None:
    parsed = AmqpSettings.from_url("amqp://u%40x:p%2Fw@mq.example:5673/%2Fcrm", timeout=3)
    assert (parsed.user, parsed.password, parsed.vhost) == ("u@x", "p/w", "/crm")
    assert (parsed.host, parsed.port, parsed.timeout) == ("mq.example", 5673, 3)
    assert "p/w" not in repr(parsed)
    assert AmqpSettings.from_url("amqp://h").vhost == "/"


def test_a_handler_that_raises_leaves_neither_effect_nor_key(tmp_path: Path) -> None:
    store = SqliteDedupStore(tmp_path / "inbox.db")
    effects = Effects(store)

    def failing(tx: sqlite3.Connection) -> None:
        effects(_envelope(), tx)
        raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        store.once("k", failing)
    assert (effects.rows(), store.seen("k")) == ([], False)
    assert store.once("k", lambda tx: effects(_envelope(), tx)) is True
    assert store.once("k", lambda tx: effects(_envelope(), tx)) is False
    assert effects.rows() == [("welcome:once:c-1", 1)]


# --- against the broker ---------------------------------------------------------------------


def test_publish_then_consume_delivers_once(
    settings: AmqpSettings, names: Names, tmp_path: Path
) -> None:
    with _notifier(settings, names) as notifier:
        receipt = notifier.send(_envelope(), AT)
    assert (receipt.key, receipt.at) == ("welcome:once:c-1", AT)
    store = SqliteDedupStore(tmp_path / "inbox.db")
    effects = Effects(store)
    with _inbox(settings, names, store, effects) as inbox:
        stats = _drain(inbox, 1)
    assert (stats.handled, stats.skipped, stats.rejected) == (1, 0, 0)
    assert effects.rows() == [("welcome:once:c-1", 1)]
    assert _queued(settings, names.queue) == 0  # acked


def test_the_message_is_persistent_and_carries_the_key(
    settings: AmqpSettings, names: Names
) -> None:
    with _notifier(settings, names) as notifier:
        notifier.send(_envelope(), AT)
    conn = settings.connect(confirms=False)
    try:
        message = conn.channel().basic_get(names.queue, no_ack=True)
    finally:
        conn.close()
    assert message.properties["delivery_mode"] == 2
    assert message.properties["message_id"] == "welcome:once:c-1"
    assert decode_envelope(message.body) == _envelope()


def test_the_same_key_published_twice_runs_the_handler_once(
    settings: AmqpSettings, names: Names, tmp_path: Path
) -> None:
    with _notifier(settings, names) as notifier:
        notifier.send(_envelope(attempt=1), AT)
        notifier.send(_envelope(attempt=2), AT)  # the relay's retry
        notifier.send(_envelope("other:once:c-1"), AT)
    store = SqliteDedupStore(tmp_path / "inbox.db")
    effects = Effects(store)
    with _inbox(settings, names, store, effects) as inbox:
        stats = _drain(inbox, 3)
    assert (stats.handled, stats.skipped) == (2, 1)
    assert sorted(effects.rows()) == [("other:once:c-1", 1), ("welcome:once:c-1", 1)]


_PUBLISHER = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from fxcrm_core.engagement.amqp import AmqpNotifier
from fxcrm_core.engagement.notifier import Channel, Envelope, MessageKind

url, exchange, routing_key, sent, attempt, pause = sys.argv[1:]
if Path(sent).exists():  # the outbox says sent: nothing to relay
    sys.exit(0)
envelope = Envelope("welcome:once:c-1", "c-1", Channel.EMAIL, "welcome", (("name", "Ann"),),
                    "en", MessageKind.SERVICE, int(attempt))
notifier = AmqpNotifier(url, exchange=exchange, routing_key=routing_key, timeout=10)
notifier.send(envelope, datetime.now(UTC))
print("published", flush=True)
time.sleep(float(pause))  # the window in which a crash loses the "sent" record
Path(sent).write_text("sent")
print("recorded", flush=True)
"""


def test_a_relay_killed_between_publish_and_sent_publishes_again_and_the_consumer_acts_once(
    settings: AmqpSettings, names: Names, tmp_path: Path
) -> None:
    script, sent = tmp_path / "relay.py", tmp_path / "sent"
    script.write_text(textwrap.dedent(_PUBLISHER))
    args = [sys.executable, str(script), URL, names.exchange, names.routing_key, str(sent)]
    first = subprocess.Popen([*args, "1", "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "published"
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        first.kill()
    assert not sent.exists()  # the crash lost the record: the relay will send again
    again = subprocess.run([*args, "2", "0"], capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["published", "recorded"]
    assert sent.exists()

    store = SqliteDedupStore(tmp_path / "inbox.db")
    effects = Effects(store)
    with _inbox(settings, names, store, effects) as inbox:
        stats = _drain(inbox, 2)
    assert (stats.handled, stats.skipped) == (1, 1)  # two on the wire, one acted on
    assert effects.rows() == [("welcome:once:c-1", 1)]


_CONSUMER = """
import sys, time
from fxcrm_core.engagement.amqp import AmqpInbox, SqliteDedupStore

url, exchange, routing_key, queue, db = sys.argv[1:]
store = SqliteDedupStore(db)
store.connection.execute("CREATE TABLE IF NOT EXISTS sent_mail (key TEXT, attempt INT)")

class CommitThenHang:
    def once(self, key, effect):
        done = store.once(key, effect)  # the handler's effect and the key: committed
        print("committed", flush=True)
        time.sleep(60)  # killed here, before the ack
        return done

def handler(envelope, tx):
    tx.execute("INSERT INTO sent_mail VALUES (?, ?)", (envelope.key, envelope.attempt))

inbox = AmqpInbox(url, exchange=exchange, routing_key=routing_key, queue=queue,
                  seen=CommitThenHang(), handler=handler, timeout=10)
inbox.drain(idle=10)
"""


def test_a_consumer_killed_after_its_commit_and_before_the_ack_skips_the_redelivery(
    settings: AmqpSettings, names: Names, tmp_path: Path
) -> None:
    with _notifier(settings, names) as notifier:
        notifier.send(_envelope(), AT)
    script, db = tmp_path / "consumer.py", tmp_path / "inbox.db"
    script.write_text(textwrap.dedent(_CONSUMER))
    args = [sys.executable, str(script), URL, names.exchange, names.routing_key, names.queue]
    child = subprocess.Popen([*args, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "committed"
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()

    store = SqliteDedupStore(db)
    effects = Effects(store)
    assert effects.rows() == [("welcome:once:c-1", 1)]
    assert store.seen("welcome:once:c-1")
    with _inbox(settings, names, store, effects) as inbox:
        stats = _drain(inbox, 1)  # back on the queue once the broker saw the connection die
    assert (stats.handled, stats.skipped, effects.calls) == (0, 1, 0)  # redelivered, skipped
    assert effects.rows() == [("welcome:once:c-1", 1)]
    assert _queued(settings, names.queue) == 0  # and acked this time


def test_a_handler_that_raises_gets_the_message_again(
    settings: AmqpSettings, names: Names, tmp_path: Path
) -> None:
    with _notifier(settings, names) as notifier:
        notifier.send(_envelope(), AT)
    store = SqliteDedupStore(tmp_path / "inbox.db")
    effects = Effects(store)
    failures = [RuntimeError("the template is broken")]

    def handler(envelope: Envelope, tx: sqlite3.Connection) -> None:
        effects(envelope, tx)
        if failures:
            raise failures.pop()

    with _inbox(settings, names, store, handler) as inbox:
        with pytest.raises(RuntimeError, match="template is broken"):
            inbox.drain(idle=15)
        assert effects.rows() == []  # rolled back with its key
        stats = _drain(inbox, 1)  # requeued: comes back
    assert stats.handled == 1
    assert effects.rows() == [("welcome:once:c-1", 1)]


def test_a_message_that_is_not_an_envelope_is_rejected_not_handled(
    settings: AmqpSettings, names: Names, tmp_path: Path
) -> None:
    import amqp  # type: ignore[import-untyped]

    conn = settings.connect(confirms=False)
    try:
        conn.channel().basic_publish(
            amqp.Message(b"garbage", message_id="x"), names.exchange, names.routing_key
        )
    finally:
        conn.close()
    store = SqliteDedupStore(tmp_path / "inbox.db")
    effects = Effects(store)
    with _inbox(settings, names, store, effects) as inbox:
        stats = _drain(inbox, 1)
    assert (stats.rejected, effects.calls, _queued(settings, names.queue)) == (1, 0, 0)


def test_an_unroutable_message_is_an_error_not_a_silent_loss(
    settings: AmqpSettings, names: Names
) -> None:
    with _notifier(settings, names, routing_key="no-queue-bound") as notifier:
        with pytest.raises(DeliveryError) as caught:
            notifier.send(_envelope(), AT)
        assert caught.value.retryable
        assert "NO_ROUTE" in str(caught.value)
    with _notifier(settings, names, exchange=names.exchange + "-missing") as notifier:
        with pytest.raises(DeliveryError) as caught:
            notifier.send(_envelope(), AT)
        assert caught.value.retryable
        assert SECRET_PARAM not in str(caught.value)


def test_an_unreachable_broker_is_a_quick_retryable_delivery_error(settings: AmqpSettings) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    names = Names("x", "x", "x")
    started = time.monotonic()
    unreachable = _notifier(settings, names, host="127.0.0.1", port=free_port, timeout=1.0)
    with unreachable, pytest.raises(DeliveryError) as caught:
        unreachable.send(_envelope(), AT)
    assert time.monotonic() - started < 8.0  # the 1 s timeout, with room for a slow machine
    assert caught.value.retryable
    assert SECRET_PARAM not in str(caught.value)

    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        mute = _notifier(settings, names, host="127.0.0.1", port=port, timeout=0.5)
        with mute, pytest.raises(DeliveryError) as caught:
            mute.send(_envelope(), AT)
        assert time.monotonic() - started < 8.0  # the 0.5 s timeout, not a hang
        assert caught.value.retryable


class _Proxy:
    """A TCP forwarder to the broker whose connections can be cut (a dropped connection)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for each in self.sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_dropped_connection_fails_one_send_and_the_next_reconnects(
    settings: AmqpSettings, names: Names, tmp_path: Path
) -> None:
    proxy = _Proxy(settings.host, settings.port)
    try:
        with _notifier(settings, names, host="127.0.0.1", port=proxy.port) as notifier:
            notifier.send(_envelope(), AT)
            proxy.cut()
            time.sleep(0.1)
            with pytest.raises(DeliveryError) as caught:
                notifier.send(_envelope(attempt=2), AT)
            assert caught.value.retryable
            notifier.send(_envelope(attempt=3), AT)  # a new connection
    finally:
        proxy.close()
    store = SqliteDedupStore(tmp_path / "inbox.db")
    effects = Effects(store)
    with _inbox(settings, names, store, effects) as inbox:
        stats = _drain(inbox, 2)  # the first send and the third (the second failed)
    assert stats.handled == 1
    assert len(effects.rows()) == 1


# --- the Notifier contract suite --------------------------------------------------------------

try:
    from fxcrm_core.testing.notifier_contract import NotifierContract
except ImportError:  # pragma: no cover - the suite is not in this checkout
    NotifierContract = None  # type: ignore[assignment,misc]


class _FailingAmqpNotifier(AmqpNotifier):
    """Fails its next sends for real: they go to an exchange the broker does not have (a 404
    from the broker, a retryable DeliveryError), then it sends normally again."""

    failures = 0

    def send(self, envelope: Envelope, at: datetime) -> Receipt:
        if self.failures <= 0:
            return super().send(envelope, at)
        self.failures -= 1
        exchange, self.exchange = self.exchange, self.exchange + "-absent"
        try:
            return super().send(envelope, at)
        finally:
            self.exchange = exchange


if NotifierContract is not None:

    @pytest.mark.usefixtures("settings")
    class TestAmqpNotifierContract(NotifierContract):
        """The shared Notifier contract on RabbitMQ: each notifier gets its own exchange and
        queue; ``consumed`` drains that queue through an AmqpInbox with an SQLite dedup store
        (the keys it acted on, once per act). Non-retryable failures do not exist on this wire
        (every broker failure is retryable): that case skips."""

        @pytest.fixture(autouse=True)
        def _topology(self, settings: AmqpSettings) -> Iterator[None]:
            self.broker = settings
            self.made: dict[int, tuple[Names, SqliteDedupStore, list[str]]] = {}
            self.notifiers: list[AmqpNotifier] = []
            yield
            for each in self.notifiers:
                each.close()
            conn = settings.connect(confirms=False)
            try:
                channel = conn.channel()
                for names, store, _ in self.made.values():
                    channel.queue_delete(names.queue)
                    channel.exchange_delete(names.exchange)
                    store.close()
            finally:
                conn.close()

        def make_notifier(self) -> Notifier:
            tag = uuid.uuid4().hex[:12]
            names = Names(f"fxcrm-contract-{tag}", f"fxcrm-contract-{tag}", "notify")
            notifier = _FailingAmqpNotifier(
                URL, exchange=names.exchange, routing_key=names.routing_key, timeout=10.0
            )
            notifier.declare(names.queue)
            self.notifiers.append(notifier)
            self.made[id(notifier)] = (names, SqliteDedupStore(":memory:"), [])
            return notifier

        def consumed(self, notifier: Notifier) -> list[str]:
            names, store, acted = self.made[id(notifier)]
            waiting = _queued(self.broker, names.queue)  # confirmed sends are all queued
            if waiting:
                inbox = _inbox(self.broker, names, store, lambda e, tx: acted.append(e.key))
                with inbox:
                    assert inbox.drain(max_messages=waiting, idle=15).received == waiting
            return list(acted)

        failure_kinds = (True,)  # every failure on the AMQP wire is retryable

        def fail_next(self, notifier: Notifier, count: int, *, retryable: bool) -> None:
            assert retryable
            assert isinstance(notifier, _FailingAmqpNotifier)
            notifier.failures += count
