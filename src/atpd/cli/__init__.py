"""The `atpd` command line (console script `atpd = "atpd.cli:main"`, or `python -m atpd.cli`).

entry          the argument parser and main
client         client options (target, token, TLS), channel, call wrapper, RPC errors
output         plain tables and enum names for humans
serve          serve, verify-journal, verify-snapshot (in-process, no gRPC client)
reads          availability, nodes, status, watch
writes         reserve, confirm / release / get / fulfil, snapshot
rules_supply   rules show / apply, supply add / receive / cancel / list
load_export    load and export of positions files through FeedService
tokens         token create / list / revoke (the tokens file, offline)
positions_file reading, validating and writing positions files (CSV, Parquet)
"""

from atpd.cli.entry import main

__all__ = ["main"]
