"""Access: actors and roles, deny-by-default permissions with row scopes, maker-checker approvals,
and the hash-chained audit trail.

Depends on ``kernel`` and ``events`` only.
"""

from fxcrm_core.access.approvals import (
    APPROVAL_EVENTS,
    ApprovalClosedError,
    ApprovalRequest,
    ApprovalRule,
    Approvals,
    ApprovalStatus,
    Decision,
    SelfApprovalError,
)
from fxcrm_core.access.audit import (
    AUDIT_SECRET,
    AuditFinding,
    AuditHead,
    AuditLog,
    AuditRecord,
    AuditSecrets,
    AuditTrail,
    MemoryAuditLog,
)
from fxcrm_core.access.control import (
    DEFAULT_POLICY,
    AccessControl,
    AccessPolicy,
    Actor,
    Relationships,
    Role,
    RowScope,
)
from fxcrm_core.events import EventRegistry

__all__ = [
    "register_events",
    "APPROVAL_EVENTS",
    "AUDIT_SECRET",
    "DEFAULT_POLICY",
    "AccessControl",
    "AccessPolicy",
    "Actor",
    "ApprovalClosedError",
    "ApprovalRequest",
    "ApprovalRule",
    "ApprovalStatus",
    "AuditFinding",
    "AuditHead",
    "AuditLog",
    "AuditRecord",
    "AuditSecrets",
    "AuditTrail",
    "Approvals",
    "Decision",
    "MemoryAuditLog",
    "Relationships",
    "Role",
    "RowScope",
    "SelfApprovalError",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(APPROVAL_EVENTS)
