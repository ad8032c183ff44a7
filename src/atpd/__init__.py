"""atpd: in-memory availability-to-promise server."""
