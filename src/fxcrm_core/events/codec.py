"""The one codec between domain events and stored bytes.

Write: unstructure (cattrs) → seal the PII fields under the subject's key → JSON → encrypt the
whole payload (optional). Read: the reverse, then upcast old versions step by step, then
structure into the event class.

An event's PII fields are sealed together in one ciphertext, stored as
``"$pii": "<field>,<field>|<token>"``; the other fields stay readable. The ciphertext is bound to
the subject, the event type and the field names, so it opens nowhere else.

A PII field holds text, or a personal-data value type (``email: Email = pii()``), which
declares the field's kind: the privacy context's value types carry ``__pii_value__``, are
stored as their canonical text (``reveal()``, the same bytes a text field holds, so both read
alike) and read back through ``from_stored`` (an erased field as the type's erased value). A
value type outside a ``pii()`` field would be stored in clear: registering such an event is
refused.
"""

from __future__ import annotations

import collections
import functools
import json
import threading
import typing
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import attrs
import cattrs

from fxcrm_core.events.event import ERASED, DomainEvent, EventMetadata, RecordedEvent
from fxcrm_core.events.store import NewEvent, StoredEvent
from fxcrm_core.kernel._decimal import to_decimal
from fxcrm_core.kernel.errors import (
    CodecError,
    FxCrmError,
    UnknownEventTypeError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "EventCodec",
    "EventRegistry",
    "FieldCipher",
    "PayloadCipher",
    "Upcaster",
    "ValueCodec",
    "make_converter",
]

EventT = TypeVar("EventT", bound=type[DomainEvent])
T = TypeVar("T")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# Events kept for reuse (see EventCodec.__init__): only this big, and only this many.
_REUSE_MIN = 1 << 16
_REUSE_KEPT = 16  # per event type
_REUSE_BYTES = 32 << 20  # payload bytes kept per event type (the newest is kept whatever its size)
# A one-byte tag in front of non-plain payloads; plain JSON objects start with "{".
_ENCRYPTED = b"e"
_PII = "$pii"
_METADATA_KEPT = 1024  # distinct metadata records whose bytes are kept


@runtime_checkable
class FieldCipher(Protocol):
    """Seals PII under the data subject's own key (the privacy context plugs in here).

    ``context`` names what the ciphertext belongs to (event type and field names); a cipher
    must bind the ciphertext to the subject and the context (AEAD associated data).
    """

    def encrypt_for(self, subject_id: str, context: str, plaintext: bytes) -> str: ...

    def decrypt_for(self, subject_id: str, context: str, token: str) -> bytes | None:
        """The plaintext, or None when the subject's key was destroyed (erased)."""
        ...


@runtime_checkable
class PayloadCipher(Protocol):
    """Encrypts whole payloads; ``associated_data`` binds a ciphertext to its stream and type."""

    def encrypt_payload(self, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def decrypt_payload(self, ciphertext: bytes, associated_data: bytes) -> bytes: ...


def make_converter() -> cattrs.Converter:
    """The edge converter: Decimal as string, times as ISO-8601 UTC, Money as ``"10.50 USD"``."""
    c = cattrs.Converter()
    c.register_unstructure_hook(Decimal, str)
    c.register_structure_hook(Decimal, lambda v, _: to_decimal(v))
    c.register_unstructure_hook(datetime, lambda v: to_utc(v).isoformat())
    c.register_structure_hook(datetime, lambda v, _: _parse_datetime(v))
    c.register_unstructure_hook(timedelta, lambda v: v // timedelta(microseconds=1))
    c.register_structure_hook(timedelta, lambda v, _: timedelta(microseconds=int(v)))
    c.register_unstructure_hook(date, date.isoformat)
    c.register_structure_hook(date, lambda v, _: date.fromisoformat(v))
    c.register_unstructure_hook(Currency, lambda v: v.code)
    c.register_structure_hook(Currency, lambda v, _: Currency.of(v))
    c.register_unstructure_hook(Money, str)
    c.register_structure_hook(Money, lambda v, _: Money.parse(v))
    c.register_unstructure_hook(UnroundedMoney, lambda v: f"{v.amount!s} {v.currency.code}")
    c.register_structure_hook(UnroundedMoney, lambda v, _: _parse_unrounded(v))
    # Tuples of JSON scalars go to the JSON encoder as they are (it writes them as arrays):
    # the generic hook would call a function per item, and an event may hold 10,000 of them.
    c.register_unstructure_hook_func(_scalar_tuple, _as_is)
    # Personal-data value types as their canonical text (sealed by the codec: pii() fields).
    c.register_unstructure_hook_factory(_is_pii_value, _pii_text_of)
    c.register_structure_hook_func(_is_pii_value, _pii_from_stored)
    return c


def _is_pii_value(form: Any) -> bool:
    return isinstance(form, type) and getattr(form, "__pii_value__", False) is True


def _pii_text_of(form: Any) -> Callable[[Any], str]:
    """How a field declared as value type ``form`` is stored: the value's canonical text, for
    a value of that very type only (an Email in a PersonName field would be read back, and
    shown, as a name; bare text or None has no kind)."""

    def text(value: Any) -> str:
        if type(value) is not form:
            raise CodecError(f"a {form.__name__} field holds only a {form.__name__} value")
        revealed = value.reveal()
        if not isinstance(revealed, str):
            raise CodecError("a personal-data value reveals no text")
        return revealed

    return text


def _pii_from_stored(data: Any, form: Any) -> Any:
    if not isinstance(data, str):
        raise CodecError("a stored personal-data value is text")
    return form.from_stored(data)


def _mentions(form: Any, leaf: Callable[[Any], bool]) -> bool:
    """Whether a field's type is, or has among its arguments (``X | None``, ``tuple[X, ...]``),
    a type ``leaf`` names."""
    return leaf(form) or any(_mentions(arg, leaf) for arg in typing.get_args(form))


def _is_loose(form: Any) -> bool:
    """Whether a field's type lets any value in (``Any``, ``object``, or a container of them):
    a personal-data value there is found only at encode time."""
    return _mentions(form, lambda f: f is Any or f is object)


def _personal(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is, or holds, a personal-data value type (looked for in containers)."""
    if getattr(type(value), "__pii_value__", False) is True:
        return True
    if depth > 32:
        return False
    if isinstance(value, dict):
        return any(_personal(v, depth + 1) or _personal(k, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_personal(v, depth + 1) for v in value)
    return False


def _holds_pii_value(form: Any) -> bool:
    """Whether a field's type is, or contains, a personal-data value type."""
    return _mentions(form, _is_pii_value)


_SCALARS = (str, int, bool, float)


def _scalar_tuple(form: Any) -> bool:
    """``tuple[str, ...]``, ``tuple[int, int]``, ``tuple[tuple[int, int], ...]`` and the like."""
    if typing.get_origin(form) is not tuple:
        return False
    args = typing.get_args(form)
    items = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
    return bool(items) and all(a in _SCALARS or _scalar_tuple(a) for a in items)


def _as_is(value: Any) -> Any:
    return value


def _parse_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is UTC else to_utc(parsed)


def _parse_unrounded(value: str) -> UnroundedMoney:
    amount, code = value.split(" ")
    return UnroundedMoney(Decimal(amount), Currency.of(code))


@attrs.frozen(slots=True)
class _Spec:
    cls: type[DomainEvent]
    name: str
    version: int
    pii_fields: tuple[str, ...]
    subject: str | None
    #: Fields typed loosely (``Any``, ``object``): checked at encode for personal data.
    loose: tuple[str, ...] = ()


@attrs.frozen
class ValueCodec:
    """How a value type held in events is stored, in place of the generic field-by-field form:
    ``unstructure`` turns a value into JSON-ready data, ``structure`` turns that data back.
    ``cls`` is a class, or a generic form such as ``tuple[Entry, ...]`` to encode a whole
    collection at once (one call for a batch of millions, instead of one per item)."""

    cls: Any
    unstructure: Callable[[Any], Any]
    structure: Callable[[Any], Any]


class EventRegistry:
    """Names, versions and upcasters of the event types a store may hold."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Spec] = {}
        self._by_class: dict[type[DomainEvent], _Spec] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self.value_codecs: dict[Any, ValueCodec] = {}

    def register(
        self,
        cls: EventT,
        *,
        name: str | None = None,
        version: int = 1,
        namespace: str | None = None,
    ) -> EventT:
        """Register an event class (usable as a decorator). The name defaults to the class name,
        prefixed by ``namespace`` and a dot when one is given (a host's events live in their own
        namespace, so they can never take an SDK event's name)."""
        if namespace is not None:
            if not namespace.isidentifier():
                raise ValidationError("an event namespace is an identifier")
            name = f"{namespace}.{name or cls.__name__}"
        if not (isinstance(cls, type) and issubclass(cls, DomainEvent) and _is_attrs(cls)):
            raise ValidationError("an event type must be an attrs class deriving DomainEvent")
        if version < 1:
            raise ValidationError("event versions start at 1")
        event_name = name or cls.__name__
        existing = self._by_name.get(event_name)
        if existing is not None and existing.cls is not cls:
            raise ValidationError(f"event name {event_name} is already registered")
        fields = attrs.fields(cast(Any, cls))
        pii_fields = tuple(f.name for f in fields if f.metadata.get("pii"))
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # a forward reference the module cannot resolve
            raise ValidationError(
                f"{event_name}: its field types cannot be resolved (a name the module lacks?)"
            ) from None
        clear = [
            f.name
            for f in fields
            if not f.metadata.get("pii") and _holds_pii_value(hints.get(f.name))
        ]
        if clear:
            raise ValidationError(
                f"{event_name}: {', '.join(clear)} hold personal data; declare them with pii()"
            )
        subject = cls.__subject__
        if pii_fields and (subject is None or subject not in {f.name for f in fields}):
            raise ValidationError(f"{event_name} has PII fields but no __subject__ field")
        for value in cls.__value_codecs__:
            if not isinstance(value, ValueCodec):
                raise ValidationError(f"{event_name}: __value_codecs__ lists ValueCodec entries")
            known = self.value_codecs.get(value.cls)
            if known is not None and known != value:
                raise ValidationError(f"{value.cls!r} already has another value codec")
        loose = tuple(
            f.name for f in fields if not f.metadata.get("pii") and _is_loose(hints.get(f.name))
        )
        spec = _Spec(cls, event_name, version, pii_fields, subject, loose)
        self._by_name[event_name] = spec
        self._by_class[cls] = spec
        for value in cls.__value_codecs__:
            self.value_codecs[value.cls] = value
        return cls

    def register_all(
        self, classes: Iterable[type[DomainEvent]], *, namespace: str | None = None
    ) -> None:
        for cls in classes:
            self.register(cls, namespace=namespace)

    def knows(self, cls: type[DomainEvent]) -> bool:
        return cls in self._by_class

    def name_of(self, cls: type[DomainEvent]) -> str:
        """The name ``cls`` is stored under."""
        return self.spec_for_class(cls).name

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorate a function turning version ``from_version`` of ``name`` into the next one."""

        def decorate(fn: Upcaster) -> Upcaster:
            key = (name, from_version)
            if key in self._upcasters:
                raise ValidationError(f"{name} v{from_version} already has an upcaster")
            self._upcasters[key] = fn
            return fn

        return decorate

    def spec_for_class(self, cls: type[DomainEvent]) -> _Spec:
        try:
            return self._by_class[cls]
        except KeyError:
            raise UnknownEventTypeError(f"{cls.__name__} is not registered") from None

    def spec_for_name(self, name: str) -> _Spec:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventTypeError(f"unknown event type {name!r}") from None

    def upcast(self, name: str, version: int, data: dict[str, Any], target: int) -> dict[str, Any]:
        while version < target:
            step = self._upcasters.get((name, version))
            if step is None:
                raise CodecError(f"no upcaster for {name} v{version}")
            data = step(data)
            version += 1
        return data

    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)


class EventCodec:
    """Turns events into stored rows and back; the single place for format, ciphers, upcasts."""

    def __init__(
        self,
        registry: EventRegistry,
        *,
        converter: cattrs.Converter | None = None,
        field_cipher: FieldCipher | None = None,
        payload_cipher: PayloadCipher | None = None,
    ) -> None:
        self.registry = registry
        self.converter = converter or make_converter()
        self.field_cipher = field_cipher
        self.payload_cipher = payload_cipher
        # Per event class, what writing it takes: its spec and its unstructure function.
        self._plans: dict[type, tuple[_Spec, Callable[[Any], dict[str, Any]]]] = {}
        self._dumps = _make_dumps()
        self._loads = _make_loads()
        self._last_metadata: tuple[EventMetadata | None, bytes] = (None, b"")
        self._metadata: dict[EventMetadata, bytes] = {}
        self._values: set[Any] = set()
        self._sync_value_codecs()
        # Per event type, the last big events written with ``__reuse_decoded__``, with their
        # stored bytes: a reader in this process of those very bytes (a policy run inline)
        # gets the event back instead of decoding it again. Private: what is stored never
        # depends on it.
        self._written: dict[str, collections.deque[tuple[str, str, bytes, DomainEvent]]] = {}
        self._written_bytes: dict[str, int] = {}
        self._written_lock = threading.Lock()

    def _sync_value_codecs(self) -> None:
        """Teach the converter the registry's value codecs (events may be registered later)."""
        for cls, value in self.registry.value_codecs.items():
            if cls not in self._values:
                if isinstance(cls, type):
                    self.converter.register_unstructure_hook(cls, value.unstructure)
                    self.converter.register_structure_hook(cls, _structure_with(value))
                else:  # a generic form: matched by equality
                    self.converter.register_unstructure_hook_func(_is(cls), value.unstructure)
                    self.converter.register_structure_hook_func(_is(cls), _structure_with(value))
                self._values.add(cls)
                self._plans.clear()

    def carries_pii(self, event_type: type[DomainEvent]) -> bool:
        """Whether events of this type have PII fields."""
        return bool(self.registry.spec_for_class(event_type).pii_fields)

    # -- write ---------------------------------------------------------------------------
    def encode(self, stream_id: str, event: DomainEvent, metadata: EventMetadata) -> NewEvent:
        return self.encode_many(stream_id, (event,), metadata)[0]

    def encode_many(
        self, stream_id: str, events: Iterable[DomainEvent], metadata: EventMetadata
    ) -> tuple[NewEvent, ...]:
        """Encode the events of one command; they share one metadata record."""
        return self._encode_stream(stream_id, events, metadata)[0]

    def _encode_stream(
        self, stream_id: str, events: Iterable[DomainEvent], metadata: EventMetadata
    ) -> tuple[tuple[NewEvent, ...], bool]:
        """:meth:`encode_many`, and whether any of the events has PII fields (for the unit of
        work, which keeps only states built without PII)."""
        last, meta = self._last_metadata
        if last is not metadata:
            meta = self.encode_metadata(metadata)
        plans = self._plans
        plain = self.payload_cipher is None
        encoded = []
        pii = False
        for event in events:
            plan = plans.get(type(event))
            if plan is None:
                plan = self._plan(type(event))
            spec, unstructure = plan
            if spec.loose:
                _refuse_loose_pii(spec, event)
            if spec.pii_fields:
                pii = True
            elif plain and spec.version == 1:
                # Most events: no PII, no payload cipher, first version.
                try:
                    payload = self._dumps(unstructure(event)).encode()
                except ValueError:  # NaN or infinite floats: JSON cannot hold them
                    raise CodecError(f"{spec.name}: a value cannot be stored as JSON") from None
                encoded.append(_new_event((spec.name, payload, meta)))
                if len(payload) >= _REUSE_MIN and spec.cls.__reuse_decoded__:
                    self._keep_written((stream_id, spec.name, payload, event))
                continue
            encoded.append(_new_event((spec.name, self._payload(stream_id, event, plan), meta)))
        return tuple(encoded), pii

    def _keep_written(self, written: tuple[str, str, bytes, DomainEvent]) -> None:
        """Keep a big event just written for a reader of its bytes: the last few of its type,
        within :data:`_REUSE_BYTES` of payload."""
        name = written[1]
        with self._written_lock:
            kept = self._written.get(name)
            if kept is None:
                kept = self._written[name] = collections.deque()
            kept.append(written)
            size = self._written_bytes.get(name, 0) + len(written[2])
            while len(kept) > 1 and (len(kept) > _REUSE_KEPT or size > _REUSE_BYTES):
                size -= len(kept.popleft()[2])
            self._written_bytes[name] = size

    def _plan(self, cls: type[DomainEvent]) -> tuple[_Spec, Callable[[Any], dict[str, Any]]]:
        spec = self.registry.spec_for_class(cls)
        self._sync_value_codecs()
        plan = (spec, self.converter.get_unstructure_hook(spec.cls))
        self._plans[cls] = plan
        return plan

    def _payload(
        self,
        stream_id: str,
        event: DomainEvent,
        plan: tuple[_Spec, Callable[[Any], dict[str, Any]]],
    ) -> bytes:
        spec, unstructure = plan
        data = unstructure(event)
        if spec.pii_fields and self.field_cipher is not None:
            names = [n for n in spec.pii_fields if data.get(n) is not None]
            if names:
                values = [data.pop(n) for n in names]
                if any(not isinstance(v, str) or "\0" in v for v in values):
                    raise CodecError(f"{spec.name}: PII fields must be text without NUL")
                listed = ",".join(names)
                token = self.field_cipher.encrypt_for(
                    str(getattr(event, spec.subject or "")),
                    f"{spec.name}:{listed}",
                    "\0".join(values).encode(),
                )
                data[_PII] = f"{listed}|{token}"
        if spec.version > 1:
            data["_v"] = spec.version
        try:
            payload = self._dumps(data).encode()
        except ValueError:  # NaN or infinite floats: JSON cannot hold them
            raise CodecError(f"{spec.name}: a value cannot be stored as JSON") from None
        if self.payload_cipher is not None:
            payload = _ENCRYPTED + self.payload_cipher.encrypt_payload(
                payload, _associated(stream_id, spec.name)
            )
        return payload

    def encode_metadata(self, metadata: EventMetadata) -> bytes:
        # A command encodes one (immutable) metadata record once per stream it writes, and
        # commands of one kind by one actor share their records' bytes.
        last, raw = self._last_metadata
        if last is metadata:
            return raw
        known = self._metadata.get(metadata)
        if known is None:
            doc = {"a": metadata.actor}
            if metadata.correlation_id is not None:
                doc["c"] = metadata.correlation_id
            if metadata.causation_id is not None:
                doc["k"] = metadata.causation_id
            if metadata.reason is not None:
                doc["r"] = metadata.reason
            known = self._dumps(doc).encode()
            if len(self._metadata) >= _METADATA_KEPT:
                self._metadata.clear()
            self._metadata[metadata] = known
        self._last_metadata = (metadata, known)
        return known

    def encode_state(self, state: object) -> bytes:
        """An attrs object (an aggregate state for a snapshot) as JSON bytes."""
        return self._dumps(self.converter.unstructure(state, type(state))).encode()

    def decode_state(self, cls: type[T], raw: bytes) -> T:
        try:
            return self.converter.structure(self._loads(bytes(raw).decode()), cls)
        except Exception:  # corrupt bytes, JSON or shape (cattrs wraps errors in several types)
            raise CodecError(f"a stored {cls.__name__} state is corrupt") from None

    # -- read ----------------------------------------------------------------------------
    def decode(self, stored: StoredEvent) -> RecordedEvent[DomainEvent]:
        return RecordedEvent(
            stored.stream_id,
            stored.version,
            stored.position,
            stored.recorded_at,
            self.decode_event(stored.stream_id, stored.event_type, stored.data),
            self.decode_metadata(stored.metadata),
        )

    def decode_metadata(self, raw: bytes) -> EventMetadata:
        if type(raw) is not bytes:
            if not isinstance(raw, bytes | bytearray | memoryview):
                raise CodecError("stored event metadata is bytes")
            raw = bytes(raw)
        return _decode_metadata(raw)

    def decode_event(self, stream_id: str, event_type: str, payload: bytes) -> DomainEvent:
        spec = self.registry.spec_for_name(event_type)
        if type(payload) is not bytes:
            if not isinstance(payload, bytes | bytearray | memoryview):
                # e.g. a TEXT column written by hand: refuse it rather than guess its encoding
                raise CodecError(f"{spec.name}: a stored payload is bytes")
            payload = bytes(payload)
        if len(payload) >= _REUSE_MIN and self._written:
            # (a copy taken at once: another thread's write may land while this one looks)
            for written in reversed(tuple(self._written.get(spec.name, ()))):
                if written[2] == payload and written[0] == stream_id:
                    return written[3]
        if payload[:1] == _ENCRYPTED:
            if self.payload_cipher is None:
                raise CodecError("payload is encrypted but no payload cipher is configured")
            payload = self.payload_cipher.decrypt_payload(
                payload[1:], _associated(stream_id, spec.name)
            )
        try:
            data = self._loads(payload.decode())
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise CodecError(f"{event_type}: payload is not valid JSON") from None
        if type(data) is not dict:
            raise CodecError(f"{event_type}: payload is not a JSON object")
        version = data.pop("_v", 1)
        if version != spec.version:
            if type(version) is not int or not 1 <= version <= spec.version:
                raise CodecError(f"{event_type}: stored version is not one this codec knows")
            try:
                data = self.registry.upcast(spec.name, version, data, spec.version)
            except FxCrmError:
                raise
            except Exception:  # an upcaster meeting a corrupt payload; values may be PII
                raise CodecError(f"{event_type}: cannot upcast the stored payload") from None
            if type(data) is not dict:
                raise CodecError(f"{event_type}: an upcaster returned no JSON object")
        erased: list[str] = []
        sealed = data.pop(_PII, None)
        if sealed is not None:
            if self.field_cipher is None:
                raise CodecError("PII is encrypted but no field cipher is configured")
            if not isinstance(sealed, str) or "|" not in sealed:
                raise CodecError(f"{event_type}: malformed encrypted PII")
            listed, token = sealed.split("|", 1)
            names = listed.split(",")
            plain = self.field_cipher.decrypt_for(
                str(data.get(spec.subject or "")), f"{spec.name}:{listed}", token
            )
            # A field sealed by an older version that the class no longer has (an upcaster
            # dropped it, but it could not see inside the seal) is opened and let go.
            kept = spec.pii_fields
            if plain is None:
                erased = [name for name in names if name in kept]
                data.update(dict.fromkeys(erased, ERASED))
            else:
                try:
                    values = plain.decode().split("\0")
                except UnicodeDecodeError:
                    raise CodecError(f"{event_type}: encrypted PII is not text") from None
                if len(values) != len(names):
                    raise CodecError(f"{event_type}: encrypted PII does not match its fields")
                data.update((n, v) for n, v in zip(names, values, strict=True) if n in kept)
        if len(self._values) != len(self.registry.value_codecs):
            self._sync_value_codecs()
        try:
            event = self.converter.structure(data, spec.cls)
        except Exception:  # cattrs wraps errors in several types; values may be PII
            raise CodecError(f"{event_type}: payload does not match the event class") from None
        for name in erased:
            # Keep the marker's identity (cattrs may copy strings) so `is ERASED` holds; a value
            # type already reads as its erased value.
            if isinstance(getattr(event, name), str):
                object.__setattr__(event, name, ERASED)
        return event


def _refuse_loose_pii(spec: _Spec, event: DomainEvent) -> None:
    for name in spec.loose:
        if _personal(getattr(event, name)):
            raise CodecError(
                f"{spec.name}.{name} holds personal data outside a pii() field: declare it"
            )


# NewEvent without its Python-level __new__ (called once per event written).
_new_event = cast(
    Callable[[tuple[str, bytes, bytes]], NewEvent], functools.partial(tuple.__new__, NewEvent)
)


def _is(form: Any) -> Callable[[Any], bool]:
    return lambda t: bool(t == form)


def _structure_with(value: ValueCodec) -> Callable[[Any, Any], Any]:
    return lambda data, _: value.structure(data)


def _not_json(value: object) -> object:
    raise CodecError(f"cannot store a {type(value).__name__} in an event payload")


def _make_dumps() -> Callable[[object], str]:
    """Compact JSON text. ``JSONEncoder.encode`` builds a new C encoder per call; on the append
    hot path we build it once (falling back to the pure-Python encoder where C is missing)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_not_json
        ).encode
    c_encode = make(
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def dumps(value: object) -> str:
        return "".join(c_encode(value, 0))

    return dumps


def _make_loads() -> Callable[[str], Any]:
    """JSON text to Python. ``JSONDecoder.decode`` runs a whitespace regex around every call;
    our payloads are compact, so the scanner is called directly, with the full decoder as the
    fallback for anything else (and the judge of what is not JSON)."""
    decoder = json.JSONDecoder()
    scan: Callable[[str, int], tuple[Any, int]] = getattr(decoder, "scan_once")  # noqa: B009 - set in __init__, untyped

    def loads(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except StopIteration:
            return decoder.decode(text)  # raises the proper ValueError
        return value if end == len(text) else decoder.decode(text)

    return loads


@functools.lru_cache(maxsize=4096)
def _decode_metadata(raw: bytes) -> EventMetadata:
    # Events of one command share their metadata bytes; EventMetadata is immutable.
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CodecError("event metadata is corrupt") from None
    if type(doc) is not dict or type(doc.get("a")) is not str:
        raise CodecError("event metadata is corrupt")
    fields = (doc.get("c"), doc.get("k"), doc.get("r"))
    if any(f is not None and type(f) is not str for f in fields):
        raise CodecError("event metadata is corrupt")
    return EventMetadata(doc["a"], *fields)


def _is_attrs(cls: type) -> bool:
    return attrs.has(cls)


def _associated(stream_id: str, event_type: str) -> bytes:
    return f"{stream_id}\0{event_type}".encode()
