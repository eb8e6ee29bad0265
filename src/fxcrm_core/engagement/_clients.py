"""What the engagement services check of a client before recording about it (private)."""

from __future__ import annotations

from fxcrm_core.clients import Client
from fxcrm_core.events import Repository
from fxcrm_core.kernel.errors import NotFoundError, SubjectErasedError

__all__ = ["live_client"]


def live_client(repository: Repository, client_id: str) -> None:
    """Refuse a client id not registered (NotFoundError) or erased (SubjectErasedError): a
    complaint, a survey or a service record is about a client the log knows and keeps."""
    client = repository.load(Client, client_id)
    if client is None or client.stage is None:
        raise NotFoundError("no such client")
    if client.name is not None and client.name.erased:
        raise SubjectErasedError("the client was erased: no new records")
