"""Option tokens: a promise's plan, signed, carried by the client back to Reserve.

A token is `<payload>.<signature>`, both base64url without padding: the payload is compact JSON
`{"v": 1, "iat": ms, "exp": ms, "seq": n, "plan": [...]}` and the signature its HMAC-SHA256
under the server's key. A client can read a token but not forge or alter one. `seq` is the
journal sequence the promise was computed at (information for the client and the logs: the
writer re-checks the whole plan when it is reserved, and answers PROMISE_CHANGED rather than
holding part of it, so a token never needs to be trusted for stock or slots).

The key comes from `option_token_key_file` (32 random bytes or more), or is drawn at start when
none is configured — then tokens do not survive a restart, which is harmless: they live minutes
(`option_token_ttl_s`) and a stale one only means "promise again".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from atpd.core.plan import MAX_PLAN_LINES, MAX_PLAN_SHIPMENTS, Plan, PlannedLine, Shipment
from atpd.files import FileRefused, read_regular_file

TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 16_384
MIN_KEY_BYTES = 32


class InvalidToken(ValueError):
    """The token cannot be used: malformed, signed by another key, altered, or expired."""


def new_key() -> bytes:
    return secrets.token_bytes(MIN_KEY_BYTES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def plan_to_json(plan: Plan) -> list[Any]:
    return [
        plan.destination,
        plan.channel,
        plan.segment,
        [
            [s.node_id, s.service, s.ship_day, [[line.sku, line.quantity] for line in s.lines]]
            for s in plan.shipments
        ],
    ]


def plan_from_json(value: Any) -> Plan:
    """The plan a (verified) payload carries; InvalidToken if its shape is wrong."""
    try:
        destination, channel, segment, shipments = value
        if not isinstance(shipments, list) or not 1 <= len(shipments) <= MAX_PLAN_SHIPMENTS:
            raise InvalidToken("plan: wrong number of shipments")
        built = []
        lines_total = 0
        for node_id, service, ship_day, lines in shipments:
            if not isinstance(lines, list) or not lines:
                raise InvalidToken("plan: a shipment without lines")
            lines_total += len(lines)
            built.append(
                Shipment(
                    str(node_id),
                    str(service),
                    int(ship_day),
                    tuple(PlannedLine(str(sku), int(quantity)) for sku, quantity in lines),
                )
            )
        if lines_total > MAX_PLAN_LINES:
            raise InvalidToken("plan: too many lines")
        return Plan(tuple(built), str(destination), str(channel), str(segment))
    except InvalidToken:
        raise
    except (TypeError, ValueError) as error:
        raise InvalidToken(f"plan: malformed ({type(error).__name__})") from None


MAX_KEY_FILE_BYTES = 4096


def load_option_tokens(key_file: Path | None, ttl_s: float) -> OptionTokens:
    """The server's OptionTokens: the key from `key_file` (a regular file of at least
    MIN_KEY_BYTES bytes, read as raw bytes), or a fresh random key when none is configured."""
    if key_file is None:
        key = new_key()
    else:
        key = read_regular_file(key_file, MAX_KEY_FILE_BYTES, "option_token_key_file")
        if len(key) < MIN_KEY_BYTES:
            raise FileRefused(
                f"option_token_key_file {key_file}: {len(key)} bytes, at least {MIN_KEY_BYTES} "
                "random bytes are needed (e.g. head -c 32 /dev/urandom > FILE)"
            )
    return OptionTokens(key, round(ttl_s * 1000))


class OptionTokens:
    """Issues and verifies option tokens under one key."""

    def __init__(self, key: bytes, ttl_ms: int) -> None:
        assert len(key) >= MIN_KEY_BYTES, "option token key too short"
        assert ttl_ms > 0, ttl_ms
        self._key = key
        self.ttl_ms = ttl_ms

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, plan: Plan, now_ms: int, sequence: int) -> str:
        body = {
            "v": TOKEN_VERSION,
            "iat": now_ms,
            "exp": now_ms + self.ttl_ms,
            "seq": sequence,
            "plan": plan_to_json(plan),
        }
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def verify(self, token: str, now_ms: int, *, check_expiry: bool = True) -> Plan:
        """The plan of a token this server signed and (with `check_expiry`) that has not
        expired."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("option_token: empty or too long")
        payload_text, _, signature_text = token.partition(".")
        try:
            payload, signature = _unb64(payload_text), _unb64(signature_text)
        except (ValueError, UnicodeEncodeError):
            raise InvalidToken("option_token: not base64url") from None
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidToken("option_token: not signed by this server (or altered)")
        try:
            body = json.loads(payload)
        except ValueError:
            raise InvalidToken("option_token: payload is not JSON") from None
        if not isinstance(body, dict) or body.get("v") != TOKEN_VERSION:
            raise InvalidToken("option_token: unknown version")
        expires = body.get("exp")
        if not isinstance(expires, int) or (check_expiry and now_ms >= expires):
            raise InvalidToken("option_token: expired; ask for a promise again")
        return plan_from_json(body.get("plan"))
