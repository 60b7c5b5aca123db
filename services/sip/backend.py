"""What the intercom needs from a SIP stack, so another one can replace baresip later: a
line that registers and reports its state, outgoing calls to a URI, incoming calls to
accept or reject, DTMF keys, hanging up, and a clean stop. Everything the stack reports
comes out of `next_event()` as the small records below, in the order it happened.

Not responsible for: which targets to call and when (calls.py), baresip itself (baresip.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Line states
REGISTERING, REGISTERED, AUTH_FAILED, UNREACHABLE, UNREGISTERED = (
    "registering", "registered", "auth_failed", "unreachable", "unregistered")
# Call event kinds
RINGING, ANSWERED, ENDED, INCOMING, DTMF = "ringing", "answered", "ended", "incoming", "dtmf"

AUTH_CODES = (401, 403, 407)


def sip_code(text: str | None) -> int | None:
    """The SIP status code a reason starts with ("486 Busy Here" → 486), else None."""
    match = re.match(r"\s*([1-6]\d\d)\b", text or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class LineEvent:
    state: str           # REGISTERED, AUTH_FAILED, UNREACHABLE, UNREGISTERED
    reason: str          # the registrar's answer ("200 OK", "401 Unauthorized", "Connection refused")
    code: int | None = None
    expires_s: int | None = None  # REGISTERED: the lifetime the registrar granted


@dataclass(frozen=True)
class CallEvent:
    kind: str            # RINGING, ANSWERED, ENDED, INCOMING, DTMF
    peer: str            # the other side's URI
    call_id: str | None  # the stack's id of the call (None until it has one)
    detail: str = ""     # ENDED: why ("486 Busy Here"); DTMF: the key
    code: int | None = None


@dataclass(frozen=True)
class BackendGone:
    """The stack stopped answering or exited; the owner restarts it."""
    reason: str


class BackendError(Exception):
    """A request to the stack failed; the text says why."""


class IntercomBackend:
    """The interface; `BaresipBackend` implements it."""

    def start(self) -> None:
        """Start the stack and begin registering; BackendError when it cannot start."""
        raise NotImplementedError

    def stop(self, timeout_s: float, unregister: bool = True) -> None:
        """Hang up every call (BYE / CANCEL), un-register and end the stack within `timeout_s`."""
        raise NotImplementedError

    def next_event(self, timeout_s: float) -> LineEvent | CallEvent | BackendGone | None:
        raise NotImplementedError

    def wake(self) -> None:
        """Make a `next_event` waiting now return None at once."""
        raise NotImplementedError

    def dial(self, uri: str) -> str | None:
        """Place a call to `uri`; the new call's id when the stack can say, else None."""
        raise NotImplementedError

    def hangup(self, peer: str, call_id: str | None) -> None:
        """End one call: CANCEL while it rings, BYE once answered, a rejection when incoming."""
        raise NotImplementedError

    def accept(self, peer: str, call_id: str | None) -> None:
        raise NotImplementedError

    def stop_registering(self) -> None:
        """Stop every further REGISTER (wrong credentials: PBXs ban addresses that retry them)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def pid(self) -> int | None:
        return None
