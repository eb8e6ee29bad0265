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
from fxcrm_core.access.control import (
    DEFAULT_POLICY,
    AccessControl,
    AccessPolicy,
    Actor,
    Relationships,
    Role,
    RowScope,
)

__all__ = [
    "APPROVAL_EVENTS",
    "DEFAULT_POLICY",
    "AccessControl",
    "AccessPolicy",
    "Actor",
    "ApprovalClosedError",
    "ApprovalRequest",
    "ApprovalRule",
    "ApprovalStatus",
    "Approvals",
    "Decision",
    "Relationships",
    "Role",
    "RowScope",
    "SelfApprovalError",
]
