"""pynetbox with the timeouts and retries it lacks, the version check, and what a failed
request means for the worker.

pynetbox sets no timeout (a hung NetBox would block the worker until the watchdog calls it
HUNG), so its `requests.Session` gets an adapter that puts connect and read timeouts on
every request, and urllib3's own `Retry` (with backoff and jitter, honouring Retry-After)
restricted to what is safe to repeat:
- connection errors (nothing was sent): any method;
- read timeouts and dropped connections: GET only (a POST that timed out may have been
  stored; the next sync run reads and sees it, so nothing is created twice);
- 5xx: GET only, for the same reason; 429: any method (NetBox did not process it), but only
  when Retry-After is short, else the answer goes back to the worker, which waits;
- never 400 or 403: repeating them changes nothing.

Not responsible for: what to read or write (sync.py), the breaker and states (worker.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pynetbox
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

# NetBox API versions this sync was tested against (the fake answers as 4.4.10; the MAC
# address objects it writes exist from 4.2, `changelog_message` from 4.4).
TESTED_VERSIONS = ("4.4",)
MAX_RETRY_AFTER_S = 10.0  # a longer Retry-After is the worker's wait, not a retry inside one call


class NetboxRetry(Retry):
    """urllib3's Retry, plus: 429 is retried for any method, but not when Retry-After asks
    for longer than `max_retry_after_s` (the 429 is then handed back to the caller)."""

    max_retry_after_s = MAX_RETRY_AFTER_S

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429 and self.total is not None and self.total > 0:
            return True
        return super().is_retry(method, status_code, has_retry_after)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None and response.status == 429:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_retry_after_s:
                raise MaxRetryError(_pool, url, f"Retry-After {wait:.0f}s is longer than we wait inside one call")
        return super().increment(method, url, response, error, _pool, _stacktrace)


class TimeoutAdapter(HTTPAdapter):
    """Puts (connect, read) timeouts on every request that does not bring its own, and
    refuses every request once closed. requests' own close() only empties the pool: the
    session would open new connections, so a sync told to stop would go on to its end."""

    def __init__(self, timeout: tuple[float, float], **kwargs):
        self.timeout = timeout
        self.closed = False
        super().__init__(**kwargs)

    def close(self) -> None:
        self.closed = True
        super().close()

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if self.closed:
            raise requests.ConnectionError(f"not sent, the NetBox session was closed: {request.method} {request.url}")
        return super().send(request, stream=stream, timeout=timeout or self.timeout, verify=verify, cert=cert,
                            proxies=proxies)


def make_session(connect_timeout_s: float, read_timeout_s: float, retries: int, verify: bool | str = True,
                 backoff_factor: float = 0.5) -> requests.Session:
    retry = NetboxRetry(total=retries, connect=retries, read=retries, status=retries, other=0, redirect=0,
                        allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}),
                        status_forcelist=(429, 500, 502, 503, 504), backoff_factor=backoff_factor,
                        backoff_max=10.0, backoff_jitter=backoff_factor / 2, respect_retry_after_header=True,
                        raise_on_status=False)
    session = requests.Session()
    adapter = TimeoutAdapter((connect_timeout_s, read_timeout_s), max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = verify
    return session


def make_api(cfg, token: str, backoff_factor: float = 0.5) -> pynetbox.api:
    """A pynetbox API for the [netbox] section `cfg`, with our session."""
    api = pynetbox.api(cfg.url, token=token)
    verify: bool | str = (cfg.ca_file or True) if cfg.verify_tls else False
    api.http_session = make_session(cfg.connect_timeout_s, cfg.read_timeout_s, cfg.retries, verify, backoff_factor)
    return api


class UnsupportedVersion(Exception):
    pass


def check_version(api: pynetbox.api) -> str:
    """NetBox's API version (from its `API-Version` header); UnsupportedVersion outside the
    tested range, because a schema change would make the sync write the wrong fields."""
    found = api.version
    if not any(found == v or found.startswith(v + ".") for v in TESTED_VERSIONS):
        raise UnsupportedVersion(f"NetBox API version {found or '(none: is this NetBox?)'} is outside the range "
                                 f"this sync was tested with ({', '.join(TESTED_VERSIONS)}); nothing was written. "
                                 f"Update edge, or point [netbox] url at a supported NetBox")
    return found


# Outcomes of a failed sync, as the worker reports them.
UNREACHABLE, SLOW, SERVER_ERROR, RATE_LIMITED, FORBIDDEN, TLS, REJECTED, UNSUPPORTED, CONFLICT, MISSING = (
    "unreachable", "slow", "server_error", "rate_limited", "forbidden", "tls", "rejected", "unsupported",
    "conflict", "prerequisites_missing")
# Outcomes that are NetBox's trouble (retried later, DEGRADED) vs. ours to fix (a problem).
TRANSIENT = frozenset({UNREACHABLE, SLOW, SERVER_ERROR, RATE_LIMITED})


@dataclass(frozen=True)
class Failure:
    kind: str
    message: str
    retry_after_s: float | None = None


def classify(exc: BaseException) -> Failure | None:
    """What a request failure means (None: not a NetBox failure, a bug of ours)."""
    if isinstance(exc, UnsupportedVersion):
        return Failure(UNSUPPORTED, str(exc))
    if isinstance(exc, requests.exceptions.SSLError):
        return Failure(TLS, f"NetBox's TLS certificate was not accepted ({_root_cause(exc)}); set [netbox] ca_file "
                            f"to the CA that signed it (verify_tls = false only on a trusted network)")
    if isinstance(exc, pynetbox.ContentError):
        return Failure(SERVER_ERROR, "NetBox answered with something that is not JSON (a proxy's error page?); "
                                     "check [netbox] url")
    reason = getattr(exc.args[0], "reason", None) if getattr(exc, "args", None) else None
    if isinstance(exc, requests.exceptions.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        # (after the retries, requests reports a read timeout as a ConnectionError)
        return Failure(SLOW, "NetBox did not answer in time (read timeout); it is overloaded or hung, or "
                             "[netbox] read_timeout_s is too short for it")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return Failure(UNREACHABLE, f"cannot reach NetBox ({_root_cause(exc)})")
    if isinstance(exc, pynetbox.RequestError):
        status = exc.req.status_code
        if status in (401, 403):
            return Failure(FORBIDDEN, f"NetBox refused the API token ({status}: {_detail(exc)}); check [netbox] "
                                      f"token_file and the token's permissions (read and write on DCIM, IPAM, "
                                      f"extras)")
        if status == 429:
            retry_after = _retry_after(exc.req)
            return Failure(RATE_LIMITED, f"NetBox asks to slow down (429, Retry-After {retry_after})",
                           retry_after)
        if status >= 500:
            return Failure(SERVER_ERROR, f"NetBox answered {status}")
        return Failure(REJECTED, f"NetBox rejected a request ({status}: {_detail(exc)})")
    return None


def _detail(exc: pynetbox.RequestError) -> str:
    try:
        body = exc.req.json()
    except ValueError:
        return exc.req.text[:200]
    if isinstance(body, dict) and set(body) == {"detail"}:
        return str(body["detail"])
    return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in (body.items() if isinstance(body, dict) else enumerate(body)))


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _root_cause(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "certificate verify failed", "self-signed certificate", "hostname mismatch"):
        if marker in text:
            return marker.lower()
    return exc.__class__.__name__
