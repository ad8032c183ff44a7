"""Who may call the StoreService methods: merged into auth.py's default method roles (kept here
so the access tables of auth.py stay one screen). LoadSupply and LoadNodes are in auth.py's
own tables: they are audited loader and admin writes like AddSupply and UpsertNode."""

from __future__ import annotations

READ_ROLES = ("reader", "checkout", "pos", "loader", "admin")
# Till operations: a store terminal's (pos, within its node scope) and admin's.
TILL_ROLES = ("pos", "admin")

STORE_METHOD_ROLES: dict[str, tuple[str, ...]] = {
    "StoreService/ListDiscrepancies": READ_ROLES,
    "StoreService/ListInspection": READ_ROLES,
    "StoreService/RecordSale": TILL_ROLES,
    "StoreService/RecordOfflineSales": TILL_ROLES,
    "StoreService/RecordReturn": TILL_ROLES,
    "StoreService/Exchange": TILL_ROLES,
    "StoreService/ReleaseInspection": TILL_ROLES,
}


def store_method_roles() -> dict[str, set[str]]:
    """Method -> roles of the till and store follow-up calls (fresh sets for auth's table)."""
    return {method: set(roles) for method, roles in STORE_METHOD_ROLES.items()}
