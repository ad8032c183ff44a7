"""The network applied at start: the configured `network_file` or, for a new demo, the demo
network (src/atpd/demo/network.toml), before the server reports SERVING."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from atpd.config import Config
from atpd.core.commands import SetNetwork
from atpd.core.network import NetworkError
from atpd.core.results import InvalidCommand
from atpd.files import MAX_RULES_FILE_BYTES, FileRefused, read_regular_text
from atpd.service.engine import Engine

log = logging.getLogger(__name__)

DEMO_NETWORK = Path(__file__).resolve().parent.parent / "demo" / "network.toml"


class StartOptions(Protocol):
    @property
    def demo(self) -> bool: ...


async def apply_network_at_start(engine: Engine, config: Config, options: StartOptions) -> None:
    """The configured network file (or, for a demo without a network yet, the demo network)
    replaces the recovered network when its text differs; journaled like any other change.
    Raises NetworkError naming the file and key when it is refused."""
    path = config.network_file
    if path is None and options.demo and not engine.state.network.text:
        path = DEMO_NETWORK
    if path is None:
        return
    try:
        text = read_regular_text(path, MAX_RULES_FILE_BYTES, "network file")
    except FileRefused as error:
        raise NetworkError(str(error)) from None
    if text == engine.state.network.text:
        return
    try:
        result = await engine.execute(SetNetwork(text, str(path)))
    except InvalidCommand as error:
        raise NetworkError(str(error)) from error
    log.info("network %s applied from %s", result.version, path)
