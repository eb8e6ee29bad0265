"""What the engagement services check of a client before recording about it (private)."""

from __future__ import annotations

from fxcrm_core.access import AccessControl
from fxcrm_core.clients import Client
from fxcrm_core.events import ProjectionRunner, Repository
from fxcrm_core.kernel.errors import ArgumentTypeError, NotFoundError, SubjectErasedError

__all__ = ["check_parts", "live_client"]


def check_parts(what: str, repository: object, access: object, projections: object) -> None:
    """The broker's parts an engagement service is built on, of the right kinds
    (ArgumentTypeError naming the service: ``what``)."""
    if not isinstance(repository, Repository):
        raise ArgumentTypeError(f"{what} need a repository")
    if not isinstance(access, AccessControl):
        raise ArgumentTypeError(f"{what} need an AccessControl")
    if not isinstance(projections, ProjectionRunner):
        raise ArgumentTypeError(f"{what} need the broker's ProjectionRunner")


def live_client(repository: Repository, client_id: str) -> None:
    """Refuse a client id not registered (NotFoundError) or erased (SubjectErasedError): a
    complaint, a survey or a service record is about a client the log knows and keeps."""
    client = repository.load(Client, client_id)
    if client is None or client.stage is None:
        raise NotFoundError("no such client")
    if client.name is not None and client.name.erased:
        raise SubjectErasedError("the client was erased: no new records")
