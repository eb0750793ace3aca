"""Tenants: one deployment shared by many clients, each seeing only its own records.

Every record belongs to one tenant (gateway.core.records: its ``key`` is the pair), and every operation
of the service acts for one: the stores filter every read by it and write it with every record, so a
record of another tenant answers exactly as an absent one. Which tenant a caller acts for is the access
layer's business (gateway.server.access: a key is bound to one, or is an operator key that names one);
without keys everything is the default tenant. Tenant names are checked here before they reach a store."""

from __future__ import annotations

from .errors import ErrorKind, ServiceError
from .records import DEFAULT_TENANT, is_tenant_name

__all__ = ["DEFAULT_TENANT", "check_tenant"]


def check_tenant(name: str) -> str:
    """``name`` when it is a tenant name (1 to 64 letters, digits, _ or -, starting with a letter or digit);
    else INVALID_REQUEST ``invalid_tenant``."""
    if not is_tenant_name(name):
        raise ServiceError(ErrorKind.INVALID_REQUEST, f"{name[:80]!r} is not a tenant name: 1 to 64 letters, digits, _ or -,"
                           " starting with a letter or digit", "invalid_tenant")
    return name
