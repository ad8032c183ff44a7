"""atpd: in-memory availability-to-promise server."""

import os

__version__ = "0.1.0"

# Snapshots fork the process (copy-on-write, as Redis BGSAVE); the child never touches gRPC, so
# gRPC's fork handlers are not needed, and with them gRPC logs a line per fork. Must be set
# before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
