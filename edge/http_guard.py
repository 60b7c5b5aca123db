"""An HTTP server that idle or slow clients cannot take down (the health endpoint's).

The standard library's ThreadingHTTPServer starts a thread per accepted connection and
reads with no deadline: a thousand idle connections meant a thousand threads, every file
descriptor and a full core, and /health stopped answering. Here a connection costs no
thread until it has sent something: accepted sockets wait in a selector (at most
`max_waiting`; the oldest is closed to make room, and each is closed after
`idle_timeout_s`); a readable one is handed to a handler thread, of which at most
`max_active` run (beyond that the client gets an immediate 503), and the handler's reads
have a deadline (`request_timeout_s`, the handler class's `timeout`). Written by hand: no
library in the standard set offers this for http.server, and the endpoint must stay a
few lines of stdlib.

Not responsible for: what is served (edge.health_http).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from http.server import ThreadingHTTPServer

_BUSY_BODY = b'{"error": "busy, try again"}'
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class GuardedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 makes clients wait for SYN retries under load

    def __init__(self, address, handler, *, max_active: int = 16, max_waiting: int = 256,
                 idle_timeout_s: float = 5.0):
        super().__init__(address, handler)
        self.socket.setblocking(False)  # accept everything pending at each wake, never block on it
        self.max_waiting = max_waiting
        self.idle_timeout_s = idle_timeout_s
        self.refused = 0   # connections closed unread: the waiting room was full, or busy
        self.expired = 0   # connections that sent nothing within idle_timeout_s
        self._active = threading.BoundedSemaphore(max_active)
        self._handlers: set[threading.Thread] = set()
        self._waiting: dict[socket.socket, tuple[object, float]] = {}  # insertion order: oldest first
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()

    def serve(self) -> None:
        """Accept, wait for data, dispatch; until `stop()`."""
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                deadline = min((d for _, d in self._waiting.values()), default=now + 1.0)
                for key, _ in selector.select(max(0.0, min(deadline - now, 1.0))):
                    if key.fileobj is self.socket:
                        self._accept(selector)
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(64)
                    else:
                        selector.unregister(key.fileobj)
                        addr, _ = self._waiting.pop(key.fileobj)
                        self._dispatch(key.fileobj, addr)
                self._expire(selector, time.monotonic())
        finally:
            for conn in list(self._waiting):
                selector.unregister(conn)
                conn.close()
            self._waiting.clear()
            selector.close()

    def _accept(self, selector) -> None:
        while True:
            try:
                conn, addr = self.socket.accept()
            except OSError:  # nothing more pending, the client went away, or out of descriptors
                return
            conn.setblocking(True)
            self._park(selector, conn, addr)

    def _park(self, selector, conn: socket.socket, addr) -> None:
        if len(self._waiting) >= self.max_waiting:
            oldest = next(iter(self._waiting))
            selector.unregister(oldest)
            del self._waiting[oldest]
            oldest.close()
            self.refused += 1
        self._waiting[conn] = (addr, time.monotonic() + self.idle_timeout_s)
        selector.register(conn, selectors.EVENT_READ)

    def _expire(self, selector, now: float) -> None:
        for conn, (_, deadline) in list(self._waiting.items()):
            if deadline > now:
                break  # oldest first: the rest are younger
            selector.unregister(conn)
            del self._waiting[conn]
            conn.close()
            self.expired += 1

    def _dispatch(self, conn: socket.socket, addr) -> None:
        if not self._active.acquire(blocking=False):
            try:
                conn.settimeout(0.5)
                conn.sendall(BUSY)
            except OSError:
                pass  # the client is gone or not reading: nothing to tell it
            conn.close()
            self.refused += 1
            return
        thread = threading.Thread(target=self._handle, args=(conn, addr), name="health-http-request", daemon=True)
        self._handlers.add(thread)
        thread.start()

    def _handle(self, conn: socket.socket, addr) -> None:
        try:
            self.finish_request(conn, addr)
        except Exception:  # a broken request must not end the server; socketserver's own report
            self.handle_error(conn, addr)
        finally:
            self.shutdown_request(conn)
            self._active.release()
            self._handlers.discard(threading.current_thread())

    def stop(self) -> None:
        """Make `serve()` return (from another thread)."""
        self._stop.set()
        self._wake_w.send(b"x")

    def close(self, timeout: float = 5.0) -> None:
        """After `serve()` returned: wait for the handlers still answering, then release."""
        for thread in list(self._handlers):
            thread.join(timeout)
        self.server_close()
        self._wake_r.close()
        self._wake_w.close()
