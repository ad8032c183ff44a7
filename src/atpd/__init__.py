"""atpd: in-memory availability-to-promise server."""

__version__ = "0.1.0"
