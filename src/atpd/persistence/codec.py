"""Commands to journal payloads and back (protobuf `atpd.v1.JournalCommand`).

Decoding checks what the core relies on — every id by the same full-match rules as a caller's,
enum values, geo paths, quantity ranges — and raises UndecodableRecord saying what is wrong: a
record written by a faulty build must stop recovery with a clear reason, not get into the state
(an id ending in a newline once did, and broke every later snapshot load). It does not check
the current limits: a journal written under a larger `max_lines_per_reservation` still replays
after the limit is lowered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from atpd.core.commands import (
    GROUPED_TYPES,
    AddSupply,
    AdjustStock,
    CancelSupply,
    Command,
    CommandGroup,
    Confirm,
    Fulfil,
    GroupedCommand,
    Line,
    Maker,
    ReceiveSupply,
    Release,
    ReservationKind,
    Reserve,
    SetCarrierCapacity,
    SetNetwork,
    SetRules,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.commands_amend import AmendReservation
from atpd.core.commands_store import (
    Exchange,
    NodeLoad,
    RecordOfflineSales,
    RecordReturn,
    RecordSale,
    ReleaseInspection,
    SupplyLoad,
)
from atpd.core.geo import parse_geo_path
from atpd.core.ids import is_load_id, is_name, is_node_id, is_reservation_id, is_sku_id, is_tag
from atpd.core.limits import MAX_QUANTITY
from atpd.core.load_command import BulkLoad, LoadMode
from atpd.core.network import parse_date
from atpd.core.supply import SupplyKind
from atpd.core.text import shown
from atpd.core.transfer_commands import (
    ApplyRestock,
    CancelTransfer,
    CreateTransfer,
    ReceiveTransfer,
    ShipTransfer,
)
from atpd.persistence.plan_codec import decode_plan, encode_plan, plan_problem
from atpd.persistence.store_codec import (
    STORE_ENTRIES,
    StoreRecordError,
    decode_store,
    encode_store,
    fill_node,
    fill_supply,
    node_of,
    store_problem,
    supply_of,
)
from atpd.persistence.transfer_codec import (
    ONEOF_FIELDS,
    decode_transfer_command,
    encode_transfer_command,
    transfer_command_problem,
)
from atpd.protowire import WIRETYPE_LEN, tag, varint
from atpd.v1 import inventory_pb2, journal_pb2, reservations_pb2

_SUPPLY_KINDS = frozenset(int(kind) for kind in SupplyKind)
# 0 (unset, journals written before kinds existed) is a cart.
_RESERVATION_KINDS = {0: ReservationKind.CART} | {int(kind): kind for kind in ReservationKind}


class UndecodableRecord(ValueError):
    pass


def _lines_pb(lines: tuple[Line, ...]) -> list[reservations_pb2.ReservationLine]:
    return [
        reservations_pb2.ReservationLine(sku=x.sku, node_id=x.node_id, quantity=x.quantity)
        for x in lines
    ]


def _lines(values: object) -> tuple[Line, ...]:
    # A list comprehension, not a generator: replay decodes 100k+ of these at recovery.
    return tuple([Line(x.sku, x.node_id, x.quantity) for x in values])  # type: ignore[attr-defined]


def _maker(message: reservations_pb2.ReservationPrincipal) -> Maker:
    return Maker(
        message.name,
        message.role,
        tuple(message.node_ids),
        tuple(message.geo_prefixes),
        tuple(message.channels),
    )


# JournalCommand.group (CommandGroupRecord) and CommandGroupRecord.commands: a group record is
# written by concatenating its members' encoded JournalCommands, never re-encoding them.
_FIELD_GROUP = 14
_FIELD_GROUP_COMMANDS = 1
_TAG_GROUP = tag(_FIELD_GROUP, WIRETYPE_LEN)
_TAG_GROUP_COMMAND = tag(_FIELD_GROUP_COMMANDS, WIRETYPE_LEN)


def encode_group(members: list[bytes]) -> bytes:
    """The payload of a CommandGroup from its members' payloads (each `encode_command` of a
    grouped command), in order: the bytes protobuf would write for the same message."""
    parts: list[bytes] = []
    for member in members:
        parts.append(_TAG_GROUP_COMMAND)
        parts.append(varint(len(member)))
        parts.append(member)
    body = b"".join(parts)
    return _TAG_GROUP + varint(len(body)) + body


# JournalCommand.reserve
_FIELD_RESERVE = 4
_TAG_RESERVE = tag(_FIELD_RESERVE, WIRETYPE_LEN)


def encode_reserve_request(request: bytes) -> bytes:
    """The payload of a Reserve from the ReserveRequest it was validated from, as serialized
    (unknown fields discarded): the same record `encode_command` writes for the command,
    without building it again. Only for a request whose command is its fields as they are:
    no principal, no plan, and the ttl_ms the command kept (a POS sale's is forced to 0)."""
    return _TAG_RESERVE + varint(len(request)) + request


def encode_command(command: Command) -> bytes:
    entry = journal_pb2.JournalCommand()
    match command:
        case CommandGroup():
            return encode_group([encode_command(member) for member in command.commands])
        case Reserve():
            # Filled in place: building sub-messages and copying them costs twice as much.
            message = entry.reserve
            message.reservation_id = command.reservation_id
            add_line = message.lines.add
            for line in command.lines:
                add_line(sku=line.sku, node_id=line.node_id, quantity=line.quantity)
            message.ttl_ms = command.ttl_ms
            message.kind = int(command.kind)  # type: ignore[assignment]
            message.channel = command.channel
            message.segment = command.segment
            maker = command.maker
            if maker is not None:
                principal = entry.reserve_principal
                principal.name = maker.name
                principal.role = maker.role
                principal.node_ids.extend(maker.node_ids)
                principal.geo_prefixes.extend(maker.geo_prefixes)
                principal.channels.extend(maker.channels)
            if command.plan is not None:
                encode_plan(command.plan, entry.reserve_plan)
        case Confirm():
            entry.confirm.reservation_id = command.reservation_id
        case Release():
            entry.release.reservation_id = command.reservation_id
        case Fulfil():
            entry.fulfil.CopyFrom(
                reservations_pb2.FulfilRequest(
                    reservation_id=command.reservation_id,
                    lines=_lines_pb(command.lines),
                    release_remainder=command.release_remainder,
                )
            )
        case SetStock():
            count = inventory_pb2.SetStockRequest(
                sku=command.sku,
                node_id=command.node_id,
                on_hand=command.on_hand,
                source_sequence=command.source_sequence,
            )
            if command.safety_stock is not None:
                count.safety_stock = command.safety_stock
            entry.set_stock.CopyFrom(count)
        case AdjustStock():
            entry.adjust_stock.CopyFrom(
                inventory_pb2.AdjustStockRequest(
                    sku=command.sku,
                    node_id=command.node_id,
                    delta=command.delta,
                    reason=command.reason,
                )
            )
        case UpsertNode():
            fill_node(entry.upsert_node.node, command)
        case Tick():
            entry.tick.SetInParent()
        case SetRules():
            entry.set_rules.text = command.text
            entry.set_rules.source = command.source
        case AddSupply():
            fill_supply(entry.add_supply, command)
        case ReceiveSupply():
            entry.receive_supply.supply_id = command.supply_id
            if command.quantity is not None:
                entry.receive_supply.quantity = command.quantity
        case CancelSupply():
            entry.cancel_supply.supply_id = command.supply_id
        case BulkLoad():
            # One small record; the rows are in the checksummed load file it names.
            assert command.stored_file and command.columns is not None, command.load_id
            load = entry.bulk_load
            load.load_id = command.load_id
            load.file = command.stored_file
            load.file_checksum = command.stored_checksum
            load.mode = int(command.mode)  # type: ignore[assignment]
            load.source_sequence = command.source_sequence
            load.rows = command.columns.rows
            load.node_count = len(command.node_ids)
        case SetNetwork():
            entry.set_network.text = command.text
            entry.set_network.source = command.source
        case SetCarrierCapacity():
            capacity = entry.set_carrier_capacity
            capacity.service = command.service
            capacity.node_id = command.node_id
            capacity.date = command.date
            capacity.slots = command.slots
        case (
            RecordSale()
            | RecordOfflineSales()
            | RecordReturn()
            | Exchange()
            | ReleaseInspection()
            | NodeLoad()
            | SupplyLoad()
        ):
            encode_store(command, entry)
        case AmendReservation():
            amend = entry.amend_reservation
            amend.reservation_id = command.reservation_id
            amend.lines.extend(_lines_pb(command.lines))
            amend.ttl_ms = command.ttl_ms
        case CreateTransfer() | ShipTransfer() | ReceiveTransfer() | CancelTransfer():
            encode_transfer_command(entry, command)
        case ApplyRestock():
            encode_transfer_command(entry, command)
        case _:
            raise AssertionError(f"no encoding for {command!r}")
    return entry.SerializeToString()


def decode_command(payload: bytes) -> Command:
    """The command a journal payload holds; raises UndecodableRecord saying what is wrong."""
    try:
        command = _decode(payload)
    except UndecodableRecord:
        raise
    except ValueError as error:  # an enum value out of range
        raise UndecodableRecord(f"bad value: {error}") from error
    problem = command_problem(command)
    if problem is not None:
        raise UndecodableRecord(f"{type(command).__name__}: {problem}")
    return command


def _id_problem(value: str, check: Callable[[str], bool], field: str) -> str | None:
    return None if check(value) else f"{field} {shown(value)} is not a valid id"


def _quantity_problem(value: int, field: str, minimum: int) -> str | None:
    if minimum <= value <= MAX_QUANTITY:
        return None
    return f"{field} {value} is outside {minimum}..{MAX_QUANTITY}"


def _lines_problem(lines: tuple[Line, ...]) -> str | None:
    # Checked first, field names formatted only for a bad line: replay checks every line of
    # every record, and three f-strings per line were a fifth of a record's decode.
    for line in lines:
        if not (
            is_sku_id(line.sku) and is_node_id(line.node_id) and 1 <= line.quantity <= MAX_QUANTITY
        ):
            return _line_problem(lines.index(line), line)
    return None


def _line_problem(i: int, line: Line) -> str | None:
    return (
        _id_problem(line.sku, is_sku_id, f"lines[{i}].sku")
        or _id_problem(line.node_id, is_node_id, f"lines[{i}].node_id")
        or _quantity_problem(line.quantity, f"lines[{i}].quantity", 1)
    )


def _names_problem(channel: str, segment: str) -> str | None:
    if not channel and not segment:
        return None  # most records: no tuples built for them
    for field, value in (("channel", channel), ("segment", segment)):
        if value and not is_name(value):
            return f"{field} {shown(value)} is not a valid name"
    return None


def maker_problem(maker: Maker | None) -> str | None:
    if maker is None:
        return None
    if not maker.name or not maker.name.isprintable():
        return f"principal name {shown(maker.name)} is empty or not printable"
    if not maker.role or not maker.role.isprintable():
        return f"principal role {shown(maker.role)} is empty or not printable"
    for i, node_id in enumerate(maker.node_ids):
        if not is_node_id(node_id):
            return f"principal node_ids[{i}] {shown(node_id)} is not a valid node id"
    for i, prefix in enumerate(maker.geo_prefixes):
        try:
            parse_geo_path(prefix)
        except ValueError as error:
            return f"principal geo_prefixes[{i}] {shown(prefix)} {error}"
    for i, channel in enumerate(maker.channels):
        if not is_name(channel):
            return f"principal channels[{i}] {shown(channel)} is not a valid name"
    return None


def _date_problem(text: str) -> str | None:
    try:
        parse_date(text)
    except ValueError as error:
        return f"date {error}"
    return None


def command_problem(command: Command) -> str | None:
    """What is wrong with a decoded command's content (None: nothing). The same rules as
    service/validation.py applies to callers, without the limits."""
    match command:
        case Reserve():
            return (
                _id_problem(command.reservation_id, is_reservation_id, "reservation_id")
                or _lines_problem(command.lines)
                or _names_problem(command.channel, command.segment)
                or (None if command.ttl_ms >= 0 else f"ttl_ms {command.ttl_ms} is negative")
                or maker_problem(command.maker)
                or (
                    None
                    if command.plan is None
                    else plan_problem(command.plan, command.lines, command.channel, command.segment)
                )
            )
        case Confirm() | Release():
            return _id_problem(command.reservation_id, is_reservation_id, "reservation_id")
        case Fulfil():
            return _id_problem(
                command.reservation_id, is_reservation_id, "reservation_id"
            ) or _lines_problem(command.lines)
        case SetStock():
            return (
                _id_problem(command.sku, is_sku_id, "sku")
                or _id_problem(command.node_id, is_node_id, "node_id")
                or _quantity_problem(command.on_hand, "on_hand", 0)
                or (
                    None
                    if command.safety_stock is None
                    else _quantity_problem(command.safety_stock, "safety_stock", 0)
                )
            )
        case AdjustStock():
            return _id_problem(command.sku, is_sku_id, "sku") or _id_problem(
                command.node_id, is_node_id, "node_id"
            )
        case UpsertNode():
            problem = _id_problem(command.node_id, is_node_id, "node_id")
            if problem is not None:
                return problem
            try:
                parse_geo_path("/".join(command.geo_path))
            except ValueError as error:
                return f"geo_path {error}"
            for i, tag in enumerate(command.tags):
                if not is_tag(tag):
                    return f"tags[{i}] {shown(tag)} is not a valid tag"
            return None
        case AddSupply():
            return (
                _id_problem(command.supply_id, is_reservation_id, "supply_id")
                or _id_problem(command.sku, is_sku_id, "sku")
                or _id_problem(command.node_id, is_node_id, "node_id")
                or _quantity_problem(command.quantity, "quantity", 1)
                or (None if command.kind in _SUPPLY_KINDS else f"kind {command.kind} unknown")
            )
        case ReceiveSupply() | CancelSupply():
            return _id_problem(command.supply_id, is_reservation_id, "supply_id")
        case BulkLoad():
            return _id_problem(command.load_id, is_load_id, "load_id")
        case Tick() | SetRules() | SetNetwork():
            return None  # rules and network text is parsed (and refused with a reason) when applied
        case SetCarrierCapacity():
            return (
                (
                    None
                    if is_name(command.service)
                    else f"service {shown(command.service)} is not a valid name"
                )
                or _id_problem(command.node_id, is_node_id, "node_id")
                or _date_problem(command.date)
                or _quantity_problem(command.slots, "slots", 0)
            )
        case (
            RecordSale() | RecordOfflineSales() | RecordReturn() | Exchange() | ReleaseInspection()
        ):
            return store_problem(command)
        case AmendReservation():
            return (
                _id_problem(command.reservation_id, is_reservation_id, "reservation_id")
                or _lines_problem(command.lines)
                or (None if command.ttl_ms >= 0 else f"ttl_ms {command.ttl_ms} is negative")
                or (None if command.lines else "lines is empty")
            )
        case NodeLoad() | SupplyLoad():
            rows: Sequence[Command] = (
                command.nodes if isinstance(command, NodeLoad) else command.rows
            )
            for i, row in enumerate(rows):
                problem = command_problem(row)
                if problem is not None:
                    return f"rows[{i}]: {problem}"
            return _id_problem(command.load_id, is_load_id, "load_id")
        case CreateTransfer() | ShipTransfer() | ReceiveTransfer() | CancelTransfer():
            return transfer_command_problem(command)
        case ApplyRestock():
            return transfer_command_problem(command)
        case CommandGroup():
            if not command.commands:
                return "the group is empty"
            for i, member in enumerate(command.commands):
                problem = command_problem(member)
                if problem is not None:
                    return f"commands[{i}] ({type(member).__name__}): {problem}"
            return None
    raise AssertionError(f"no check for {command!r}")


def _decode(payload: bytes) -> Command:
    entry = journal_pb2.JournalCommand()
    try:
        entry.ParseFromString(payload)
    except Exception as error:
        raise UndecodableRecord(f"not a JournalCommand: {error}") from error
    if entry.WhichOneof("command") == "group":
        return CommandGroup(
            tuple([_decode_member(i, m) for i, m in enumerate(entry.group.commands)])
        )
    return _decode_entry(entry)


def _decode_member(index: int, entry: journal_pb2.JournalCommand) -> GroupedCommand:
    command = _decode_entry(entry)
    if not isinstance(command, GROUPED_TYPES):
        raise UndecodableRecord(
            f"group commands[{index}] is a {type(command).__name__}: a group holds only "
            "Reserve, Confirm, Fulfil and Release"
        )
    return command


def _decode_entry(entry: journal_pb2.JournalCommand) -> Command:
    which = entry.WhichOneof("command")
    if which == "reserve":
        r = entry.reserve
        kind_value = r.kind
        return Reserve(
            r.reservation_id,
            _lines(r.lines),
            r.ttl_ms,
            # A dict lookup, not the enum call (a tenth of a Reserve's decode); an unknown
            # value still goes through the enum, whose ValueError names it.
            _RESERVATION_KINDS.get(kind_value) or ReservationKind(kind_value),
            r.channel,
            r.segment,
            _maker(entry.reserve_principal) if entry.HasField("reserve_principal") else None,
            decode_plan(entry.reserve_plan) if entry.HasField("reserve_plan") else None,
        )
    if which == "confirm":
        return Confirm(entry.confirm.reservation_id)
    if which == "release":
        return Release(entry.release.reservation_id)
    if which == "fulfil":
        f = entry.fulfil
        return Fulfil(f.reservation_id, _lines(f.lines), f.release_remainder)
    if which == "set_stock":
        s = entry.set_stock
        safety = s.safety_stock if s.HasField("safety_stock") else None
        return SetStock(s.sku, s.node_id, s.on_hand, s.source_sequence, safety)
    if which == "adjust_stock":
        a = entry.adjust_stock
        return AdjustStock(a.sku, a.node_id, a.delta, a.reason)
    if which == "upsert_node":
        return node_of(entry.upsert_node.node)
    if which == "tick":
        return Tick()
    if which == "set_rules":
        return SetRules(entry.set_rules.text, entry.set_rules.source)
    if which == "add_supply":
        return supply_of(entry.add_supply)
    if which == "receive_supply":
        r2 = entry.receive_supply
        return ReceiveSupply(r2.supply_id, r2.quantity if r2.HasField("quantity") else None)
    if which == "cancel_supply":
        return CancelSupply(entry.cancel_supply.supply_id)
    if which == "bulk_load":
        # The rows are read from the file at replay (persistence/load_file.resolve_stored).
        b = entry.bulk_load
        return BulkLoad(
            b.load_id, LoadMode(b.mode), b.source_sequence, (), None, "", b.file, b.file_checksum
        )
    if which == "set_network":
        return SetNetwork(entry.set_network.text, entry.set_network.source)
    if which == "set_carrier_capacity":
        c = entry.set_carrier_capacity
        return SetCarrierCapacity(c.service, c.node_id, c.date, c.slots)
    if which == "amend_reservation":
        a3 = entry.amend_reservation
        return AmendReservation(a3.reservation_id, _lines(a3.lines), a3.ttl_ms)
    if which in STORE_ENTRIES:
        try:
            return decode_store(entry, which)
        except StoreRecordError as error:
            raise UndecodableRecord(str(error)) from error
    if which in ONEOF_FIELDS:
        return decode_transfer_command(entry, which)
    raise UndecodableRecord(f"unknown command {which!r}")
