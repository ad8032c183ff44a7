"""The store-operations lines of README's "A short tour" run as written against the demo data
set (its rules and network) and do what the tour says."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from service.harness import ServerThread, running_server

from atpd.cli.entry import main
from atpd.config import Config
from atpd.core.commands import SetNetwork, SetRules
from atpd.demo import load_demo

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "atpd" / "demo"
PROGRAM = ".venv/bin/atpd"
# The one command substitution the tour uses: the id of a fresh plan.
PLAN_ID = re.compile(
    r"\"\$\(\.venv/bin/atpd (restock plan [^|]+?) \| awk '/\^plan /\{print \$2\}'\)\""
)


def tour_lines() -> list[str]:
    """The tour's shell lines from its store-operations comment to the end of the block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## A short tour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# store operations"))
    return [line for line in lines[start:] if line and not line.startswith("#")]


@pytest.fixture
def demo_server() -> Iterator[ServerThread]:
    with running_server(Config(port=0, metrics_port=-1)) as server:
        engine = server.app.engine

        def load() -> None:
            now_ms = engine.now_ms()
            load_demo(engine.state, now_ms)
            engine.state.apply(SetRules((DEMO / "rules.toml").read_text(), "demo"), now_ms)
            engine.state.apply(SetNetwork((DEMO / "network.toml").read_text(), "demo"), now_ms)

        server.call(load)
        yield server


@pytest.mark.grpc
def test_store_operations_tour_runs_as_written(
    demo_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line exits 0 but the unforced short sale (3); the forced one leaves a discrepancy,
    the inbound transfer shows for a VIP, and the EU restock plan applies as transfers."""
    target = ["--target", demo_server.target]

    def run(words: list[str]) -> tuple[int, str]:
        assert words[0] == PROGRAM, words
        code = main([*words[1:], *target])
        return code, capsys.readouterr().out

    outputs: list[tuple[list[str], int, str]] = []
    for line in tour_lines():
        substitution = PLAN_ID.search(line)
        if substitution:
            _, planned = run([PROGRAM, *shlex.split(substitution.group(1))])
            [plan_id] = re.findall(r"^plan (RP-\S+)", planned, re.MULTILINE)
            line = line.replace(substitution.group(0), plan_id)
        assert "$(" not in line, f"a substitution this test does not know: {line}"
        for command in line.split(" ; "):
            words = shlex.split(command, comments=True)
            outputs.append((words, *run(words)))
    sales = [(code, out) for words, code, out in outputs if words[1] == "sale"]
    assert sales[0][0] == 3 and "INSUFFICIENT_STOCK" in sales[0][1]
    assert sales[1][0] == 0 and "(1 missing)" in sales[1][1]
    for words, code, out in outputs:
        if words[1] != "sale":
            assert code == 0, (words, out)
    printed = "\n".join(out for _, _, out in outputs)
    assert "ST-PAR-02: 2 inbound from WH-EU-01" in printed
    assert re.search(r"^plan RP-\S+: OK, \d+ transfers", printed, re.MULTILINE), printed
    assert "node ST-NCE-01 created" in printed
