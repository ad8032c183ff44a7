"""Core values to proto messages."""

from __future__ import annotations

from typing import Any

from atpd.core.network_compile import EPOCH
from atpd.core.nodes import Node
from atpd.core.plan import Plan
from atpd.core.reservations import ReservationView
from atpd.core.results import PositionView, ReserveResult
from atpd.core.rules_compile import CompiledPolicy
from atpd.core.state import AtpState, AvailabilityView
from atpd.core.supply import Supply
from atpd.core.transfers import TransferStatus, inbound_at
from atpd.v1 import availability_pb2, inventory_pb2, reservations_pb2, supply_pb2


def pb_enum(value: int) -> Any:
    """A core IntEnum as a proto enum value (the generated stubs want their own wrapper type;
    the numbers are kept equal on purpose, see core.results.Outcome)."""
    return int(value)


def node_message(node: Node) -> inventory_pb2.Node:
    return inventory_pb2.Node(
        node_id=node.node_id,
        kind=pb_enum(node.kind),
        geo_path=node.geo,
        ships=node.ships,
        pickup=node.pickup,
        enabled=node.enabled,
        tags=node.tags,
    )


def position_message(view: PositionView) -> inventory_pb2.Position:
    return inventory_pb2.Position(
        sku=view.sku,
        node_id=view.node_id,
        on_hand=view.on_hand,
        reserved=view.reserved,
        safety_stock=view.safety_stock,
        atp=view.atp,
        last_source_sequence=view.last_source_sequence,
    )


def reservation_message(reservation: ReservationView) -> reservations_pb2.Reservation:
    message = reservations_pb2.Reservation()
    fill_reservation(message, reservation)
    return message


def fill_reservation(message: reservations_pb2.Reservation, reservation: ReservationView) -> None:
    """Write `reservation` into an empty message in place: on every Reserve and Release, so
    no sub-message is built apart and copied, and nothing is done for empty parts."""
    message.reservation_id = reservation.reservation_id
    message.status = int(reservation.status)  # type: ignore[assignment]
    message.kind = int(reservation.kind)  # type: ignore[assignment]
    add_line = message.lines.add
    for line in reservation.lines:
        add_line(sku=line.sku, node_id=line.node_id, quantity=line.quantity)
    fulfilled = reservation.fulfilled
    if any(fulfilled):
        add_fulfilled = message.fulfilled.add
        for line, quantity in zip(reservation.lines, fulfilled, strict=True):
            if quantity:
                add_fulfilled(sku=line.sku, node_id=line.node_id, quantity=quantity)
    message.created_at_ms = reservation.created_at_ms
    message.expires_at_ms = reservation.expires_at_ms
    message.updated_at_ms = reservation.updated_at_ms
    message.channel = reservation.channel
    message.segment = reservation.segment
    if reservation.plan is not None:
        add_plan(message, reservation.plan)
    maker = reservation.maker
    if maker is not None:
        principal = message.principal
        principal.name = maker.name
        principal.role = maker.role
        principal.node_ids.extend(maker.node_ids)
        principal.geo_prefixes.extend(maker.geo_prefixes)
        principal.channels.extend(maker.channels)


def reserve_response(result: ReserveResult) -> reservations_pb2.ReserveResponse:
    response = reservations_pb2.ReserveResponse()
    fill_reserve_response(response, result)
    return response


def fill_reserve_response(
    response: reservations_pb2.ReserveResponse, result: ReserveResult
) -> None:
    """Write `result` into an empty response in place (a batch's answers are parts of one
    message: building each apart and copying it in costs twice)."""
    response.outcome = pb_enum(result.outcome)
    if result.replayed:
        response.replayed = True
    if result.disabled_node_id:
        response.disabled_node_id = result.disabled_node_id
    if result.reservation is not None:
        fill_reservation(response.reservation, result.reservation)
    for shortage in result.shortages:
        response.shortages.add(
            sku=shortage.sku,
            node_id=shortage.node_id,
            requested=shortage.requested,
            available=shortage.available,
            reason=pb_enum(shortage.reason),
        )
    for change in result.changes:
        response.changes.add(
            shipment=change.shipment, resource=pb_enum(change.resource), detail=change.detail
        )


def reservation_response(
    outcome: Any, reservation: ReservationView
) -> reservations_pb2.ReservationResponse:
    """The answer of Confirm, Release and Fulfil (and GetReservation)."""
    response = reservations_pb2.ReservationResponse(outcome=pb_enum(outcome))
    fill_reservation(response.reservation, reservation)
    return response


def add_plan(message: reservations_pb2.Reservation, plan: Plan) -> None:
    """The shipments of a reservation of a promised option: what it holds besides stock."""
    message.destination = plan.destination
    for shipment in plan.shipments:
        added = message.shipments.add(
            node_id=shipment.node_id,
            service=shipment.service,
            ship_date=EPOCH.fromordinal(EPOCH.toordinal() + shipment.ship_day).isoformat(),
        )
        for line in shipment.lines:
            added.lines.add(sku=line.sku, node_id=shipment.node_id, quantity=line.quantity)


def supply_message(supply: Supply, now_ms: int) -> supply_pb2.Supply:
    return supply_pb2.Supply(
        supply_id=supply.supply_id,
        sku=supply.sku,
        node_id=supply.node_id,
        quantity=supply.quantity,
        eta_ms=supply.eta_ms,
        kind=pb_enum(supply.kind),
        received=supply.received,
        counted=supply.eta_ms >= now_ms and supply.quantity > 0,
    )


def explain_transfers(
    state: AtpState, entry: availability_pb2.NodeAvailability, sku_row: int, node: int
) -> None:
    """Transfers due at a node, and units held there for transfers (O(open transfers))."""
    for transfer, quantity in inbound_at(state.transfers, state.supply.by_id, sku_row, node):
        entry.inbound_transfers.add(
            transfer_id=transfer.transfer_id,
            from_node_id=transfer.from_node_id,
            quantity=quantity,
            eta_ms=transfer.eta_ms,
            shipped=transfer.status is TransferStatus.SHIPPED,
        )
    entry.held_for_transfers = state.transfers.held_at(sku_row, node)


def availability_response(
    state: AtpState,
    view: AvailabilityView,
    include_nodes: bool,
    now_ms: int,
    policy: CompiledPolicy | None = None,
    explain: bool = False,
) -> availability_pb2.GetAvailabilityResponse:
    """Only geo prefixes with ATP > 0 are listed, in tree order; nodes in scope with a position
    when asked."""
    response = availability_pb2.GetAvailabilityResponse(
        as_of_ms=now_ms, rules_version=state.rules.version
    )
    if policy is not None:
        response.channel = policy.channel
        response.segment = policy.segment
        response.max_per_line = policy.policy.max_per_line
    node_count = view.node_count
    geo_names = state.geo.geo_ids.names
    geo_levels = state.geo.geo_level
    geo_order = state.geo.ordered()
    node_names = state.node_ids.names
    cells = state.stock.cells
    present = state.stock.present
    for k, sku in enumerate(view.skus):
        row = view.matrix[k].tolist()
        sku_row = int(view.sku_rows[k])
        item = response.items.add(sku=sku, known=sku_row >= 0, total_atp=row[-1])
        if sku_row < 0:
            continue
        for geo in geo_order:
            atp = row[node_count + geo]
            if atp:
                item.geo.add(geo=geo_names[geo], level=geo_levels[geo] + 1, atp=atp)
        if include_nodes:
            mask = view.node_mask
            block = cells[sku_row].tolist()
            present_row = present[sku_row].tolist()
            # Explain also lists nodes that have nothing yet but incoming supply (a transfer).
            incoming = (
                {x.node_index for x in state.supply.by_sku.get(sku_row, ())} if explain else ()
            )
            for node in range(node_count):
                if not (mask[node] and (present_row[node] or row[node] or node in incoming)):
                    continue
                if policy is not None:
                    terms = state.explain_position(policy, sku_row, node)
                    entry = item.nodes.add(
                        node_id=node_names[node],
                        atp=row[node],
                        on_hand=terms["on_hand"],
                        reserved=terms["reserved"],
                        safety_stock=terms["safety_stock"],
                    )
                    if explain:
                        entry.buffer = terms["buffer"]
                        entry.supply = terms["supply"]
                        entry.protected_for_others = terms["protected_for_others"]
                else:
                    entry = item.nodes.add(
                        node_id=node_names[node],
                        atp=row[node],
                        on_hand=block[0][node],
                        reserved=block[1][node],
                        safety_stock=block[2][node],
                    )
                if explain and state.transfers.open:
                    explain_transfers(state, entry, sku_row, node)
    return response
