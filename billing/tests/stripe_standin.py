"""A local HTTP stand-in of Stripe's API, enough of it for the official SDK: the payment provider's HTTP
is the one thing tests replace (STYLE.md), so the real SDK, its retries and its error mapping all run.

Canned behaviour by payment method, like Stripe's test methods:
- pm_card_visa (and other unknown-to-us methods that are not listed below) succeed;
- pm_card_chargeDeclined / …InsufficientFunds: 402 card_error, the intent left in requires_payment_method;
- pm_card_authenticationRequired: requires_action with next_action.redirect_to_url; `authenticate()` plays
  the customer confirming on Stripe's page;
- pm_card_networkError: the intent is created, then the connection is closed without an answer;
- pm_card_timeout: the intent is created, then the answer comes after `timeout_sleep` seconds.
POSTs honour Idempotency-Key like Stripe: the same key replays the stored answer (the misbehaviour above
happens only on the first request), the same key with other parameters answers 400 idempotency_error.
Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds",
                                                "Your card has insufficient funds."),
}
CANCELABLE = {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture", "processing"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding: a[b]=1 → {"a": {"b": "1"}}, a[0]=x → {"a": ["x"]}."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = out
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if isinstance(node, list):
                if last:
                    node.append(value)
                else:
                    node.append({})
                    node = node[-1]
                continue
            if last:
                node[part] = value
            else:
                following = parts[index + 1]
                node = node.setdefault(part, [] if following.isdigit() else {})
    return out


@dataclass
class StripeStandin:
    api_key: str = "sk_test_standin"
    timeout_sleep: float = 2.0
    intents: dict[str, dict] = field(default_factory=dict)
    refunds: dict[str, dict] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _idempotent: dict[str, tuple[dict, int, dict]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StripeStandin:
        standin = self

        class Handler(StandinHandler):
            pass

        Handler.standin = standin
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a sleeping "timeout" answer must not hold up the test
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="stripe-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- helpers for tests -------------------------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def authenticate(self, intent_id: str, *, approve: bool = True) -> dict:
        """The customer's answer on Stripe's authentication page."""
        with self._lock:
            intent = self.intents[intent_id]
            assert intent["status"] == "requires_action", intent["status"]
            intent["next_action"] = None
            if approve:
                intent["status"] = "succeeded"
                intent["latest_charge"] = f"ch_{secrets.token_hex(8)}"
            else:
                intent["status"] = "requires_payment_method"
                intent["last_payment_error"] = {
                    "type": "invalid_request_error", "code": "payment_intent_authentication_failure",
                    "message": "The provided PaymentMethod has failed authentication."}
            return json.loads(json.dumps(intent))

    def event(self, intent_id: str, type: str, *, intent: dict | None = None) -> dict:
        """A snapshot event as Stripe sends it, carrying the intent as it is now (or as given)."""
        return {
            "id": f"evt_{secrets.token_hex(12)}", "object": "event", "api_version": "2026-10-28.endive",
            "created": int(time.time()), "livemode": False, "pending_webhooks": 1, "type": type,
            "data": {"object": intent or json.loads(json.dumps(self.intents[intent_id]))},
            "request": {"id": None, "idempotency_key": None},
        }

    # --- the API -----------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict, headers: dict[str, str]) -> tuple[int, dict, str]:
        """Answer one request: (status, body, misbehaviour) where misbehaviour is "", "close" or "sleep"."""
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, _error("invalid_request_error", "Invalid API Key provided."), ""
        key = headers.get("idempotency-key") if method == "POST" else None
        with self._lock:
            if key is not None and key in self._idempotent:
                stored_params, status, body = self._idempotent[key]
                if stored_params != {"path": path, **params}:
                    return 400, _error("idempotency_error", "Keys for idempotent requests can only be used with "
                                       "the same parameters they were first used with."), ""
                return status, body, ""
            status, body, misbehaviour = self._route(method, path, params)
            if key is not None:
                self._idempotent[key] = ({"path": path, **params}, status, body)
            return status, body, misbehaviour

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict, str]:
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_intent(params)
        if method == "GET" and path == "/v1/payment_intents/search":
            return 200, self._search(params.get("query", "")), ""
        match = re.fullmatch(r"/v1/payment_intents/(pi_\w+)(/cancel)?", path)
        if match:
            intent = self.intents.get(match.group(1))
            if intent is None:
                return 404, _error("invalid_request_error", f"No such payment_intent: '{match.group(1)}'",
                                   code="resource_missing", param="intent"), ""
            if method == "GET" and not match.group(2):
                return 200, intent, ""
            if method == "POST" and match.group(2):
                return self._cancel(intent)
        if method == "POST" and path == "/v1/refunds":
            return self._refund(params)
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path})."), ""

    def _create_intent(self, params: dict) -> tuple[int, dict, str]:
        payment_method = params.get("payment_method", "")
        intent = {
            "id": f"pi_{secrets.token_hex(12)}", "object": "payment_intent", "amount": int(params["amount"]),
            "amount_received": 0, "currency": params["currency"], "description": params.get("description"),
            "metadata": params.get("metadata", {}), "payment_method": payment_method,
            "payment_method_types": params.get("payment_method_types", ["card"]), "status": "succeeded",
            "next_action": None, "last_payment_error": None, "latest_charge": None, "cancellation_reason": None,
            "created": int(time.time()), "livemode": False,
        }
        self.intents[intent["id"]] = intent
        if payment_method in DECLINES:
            code, decline_code, message = DECLINES[payment_method]
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {"type": "card_error", "code": code, "decline_code": decline_code,
                                            "message": message}
            error = _error("card_error", message, code=code, decline_code=decline_code)
            error["error"]["payment_intent"] = json.loads(json.dumps(intent))
            return 402, error, ""
        if payment_method == "pm_card_authenticationRequired" and str(params.get("off_session")).lower() == "true":
            message = "Your card was declined. This transaction requires authentication."
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {"type": "card_error", "code": "authentication_required",
                                            "decline_code": "authentication_required", "message": message}
            error = _error("card_error", message, code="authentication_required", decline_code="authentication_required")
            error["error"]["payment_intent"] = json.loads(json.dumps(intent))
            return 402, error, ""
        if payment_method == "pm_card_authenticationRequired":
            intent["status"] = "requires_action"
            intent["next_action"] = {"type": "redirect_to_url", "redirect_to_url": {
                "url": f"{self.url}/standin/authenticate/{intent['id']}", "return_url": params.get("return_url")}}
            return 200, intent, ""
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
        intent["latest_charge"] = f"ch_{secrets.token_hex(8)}"
        misbehaviour = {"pm_card_networkError": "close", "pm_card_timeout": "sleep"}.get(payment_method, "")
        return 200, intent, misbehaviour

    def _search(self, query: str) -> dict:
        match = re.fullmatch(r'metadata\["([^"]+)"\]:"([^"]*)"', query.strip())
        found = [i for i in self.intents.values()
                 if match and i["metadata"].get(match.group(1)) == match.group(2)]
        return {"object": "search_result", "url": "/v1/payment_intents/search", "has_more": False,
                "next_page": None, "data": found}

    def _cancel(self, intent: dict) -> tuple[int, dict, str]:
        if intent["status"] not in CANCELABLE:
            error = _error("invalid_request_error", "You cannot cancel this PaymentIntent because it has a "
                           f"status of {intent['status']}.", code="payment_intent_unexpected_state")
            error["error"]["payment_intent"] = json.loads(json.dumps(intent))
            return 400, error, ""
        intent.update(status="canceled", next_action=None, cancellation_reason="requested_by_customer")
        return 200, intent, ""

    def _refund(self, params: dict) -> tuple[int, dict, str]:
        intent = self.intents.get(params.get("payment_intent", ""))
        if intent is None or intent["status"] != "succeeded":
            return 400, _error("invalid_request_error", "This PaymentIntent has no successful charge to refund.",
                               code="charge_not_refundable"), ""
        refunded = sum(r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent["id"])
        amount = int(params.get("amount", intent["amount"] - refunded))
        if amount > intent["amount"] - refunded:
            return 400, _error("invalid_request_error", f"Refund amount ({amount}) is greater than the unrefunded "
                               "amount on the charge.", code="amount_too_large", param="amount"), ""
        refund = {"id": f"re_{secrets.token_hex(12)}", "object": "refund", "amount": amount,
                  "currency": intent["currency"], "payment_intent": intent["id"], "charge": intent["latest_charge"],
                  "metadata": params.get("metadata", {}), "status": "succeeded", "created": int(time.time())}
        self.refunds[refund["id"]] = refund
        return 200, refund, ""


def _error(type: str, message: str, **extra: str) -> dict:
    return {"error": {"type": type, "message": message, **extra}}


class StandinHandler(BaseHTTPRequestHandler):
    standin: StripeStandin
    protocol_version = "HTTP/1.0"  # one request per connection: a closed connection is unambiguous

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            pairs += parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True)
        params = parse_form(pairs)
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.standin.requests.append(RecordedRequest(method, split.path, params, headers))
        status, body, misbehaviour = self.standin.handle(method, split.path, params, headers)
        if misbehaviour == "close":
            self.close_connection = True
            return  # no status line at all: the client sees the connection dropped
        if misbehaviour == "sleep":
            time.sleep(self.standin.timeout_sleep)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", f"req_{secrets.token_hex(8)}")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): as Stripe would
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header exactly as Stripe computes it."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
