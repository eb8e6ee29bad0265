"""The deal feed in the log: what a trading server reported, recorded once per item, a batch
per event, so policies (rebates, a client's first trade) react to deals like to any event.

One :class:`DealFeed` stream per server holds the cursor; :meth:`DealFeeds.pull` appends at
the stream's version, so two processes pulling at once never record an item twice.
"""

from __future__ import annotations

from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent, EventMetadata, Repository, UnitOfWork
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.trading.deal import UnknownServerResponseError
from fxcrm_core.trading.server import FeedItem, TradingServer

__all__ = ["FEED_EVENTS", "DealFeed", "DealFeeds", "DealsReceived"]


@attrs.frozen
class DealsReceived(DomainEvent):
    """Deal adds, updates and deletes read from ``server``'s feed, in cursor order, the last
    at ``upto_cursor``."""

    server: str
    upto_cursor: int
    items: tuple[FeedItem, ...]


FEED_EVENTS = (DealsReceived,)


@attrs.frozen(kw_only=True)
class DealFeed(Aggregate):
    """How far one server's deal feed has been recorded (the id is the server's name)."""

    category = "dealfeed"
    cursor: int = 0
    items: int = 0  # recorded in all

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, DealsReceived):
            return self.evolve(cursor=event.upto_cursor, items=self.items + len(event.items))
        raise ValidationError(f"DealFeed cannot apply {type(event).__name__}")


class DealFeeds:
    """Records trading servers' deal feeds in the log."""

    def __init__(self, repository: Repository, *, actor: str = "system:feed") -> None:
        self.repository = repository
        self.actor = actor

    def cursor(self, server: str) -> int:
        """The cursor of the last item recorded from ``server`` (0: none yet)."""
        feed = self.repository.load(DealFeed, server)
        return 0 if feed is None else feed.cursor

    def pull(self, server: TradingServer, *, limit: int = 1000, batch: int = 100) -> int:
        """Read up to ``limit`` items after the recorded cursor and record them, ``batch`` items
        per :class:`DealsReceived` event, in one atomic append; returns how many.

        A concurrent pull of the same server that committed first makes this one raise
        :class:`~fxcrm_core.kernel.ConcurrencyError` with nothing written: pull again.
        """
        for name, value in (("limit", limit), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be a positive integer")
        feed = self.repository.load(DealFeed, server.name) or DealFeed.blank(server.name)
        items = server.deal_feed(after_cursor=feed.cursor, limit=limit)
        if not items:
            return 0
        _check(server.name, feed.cursor, items, limit)
        metadata = EventMetadata(self.actor, reason=f"deal feed of {server.name}")
        with UnitOfWork(self.repository, metadata) as uow:
            for start in range(0, len(items), batch):
                chunk = tuple(items[start : start + batch])
                feed = uow.record(feed, DealsReceived(server.name, chunk[-1].cursor, chunk))
            uow.commit()
        return len(items)


def _check(server: str, after: int, items: list[FeedItem], limit: int) -> None:
    """The port's promises, checked before anything is recorded: no more than asked, cursors
    rising past ``after``, every deal from this server."""
    if len(items) > limit:
        raise UnknownServerResponseError("the deal feed returned more items than asked for")
    last = after
    for item in items:
        if not isinstance(item, FeedItem) or isinstance(item.cursor, bool):
            raise UnknownServerResponseError("the deal feed returned something else than items")
        if item.cursor <= last:
            raise UnknownServerResponseError("deal feed cursors must rise past the one asked")
        if item.deal.server != server:
            # Rebates and their restore key deals by (server, ticket): one name per server.
            raise UnknownServerResponseError("a deal in the feed names another server")
        last = item.cursor
