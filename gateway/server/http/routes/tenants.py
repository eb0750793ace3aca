"""/v1/tenants: operators' view across tenants (operator keys only; gateway.server.access)."""

from __future__ import annotations

from fastapi import APIRouter

from ..access import requires
from ..dependencies import Service
from ..schemas import ERRORS, TenantCount, TenantDeleted, TenantList, TenantName

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.get("", openapi_extra=requires("tenants"), response_model=TenantList, responses=ERRORS,
            summary="Every tenant holding records, with its count (operator keys)")
async def list_tenants(service: Service) -> TenantList:
    return TenantList(tenants=[TenantCount(tenant=name, images=count) for name, count in (await service.tenants()).items()])


@router.get("/{tenant}", openapi_extra=requires("count"), response_model=TenantCount, responses=ERRORS,
            summary="One tenant's record count (0 for a tenant without records; operator keys)")
async def count_tenant(service: Service, tenant: TenantName) -> TenantCount:
    return TenantCount(tenant=tenant, images=await service.count(tenant))


@router.delete("/{tenant}", openapi_extra=requires("delete_tenant"), response_model=TenantDeleted, responses=ERRORS,
               summary="Delete every record of one tenant (operator keys with the admin scope)")
async def delete_tenant(service: Service, tenant: TenantName) -> TenantDeleted:
    return TenantDeleted(tenant=tenant, deleted=await service.delete_tenant(tenant))
