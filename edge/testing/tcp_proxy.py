"""A TCP proxy for partition tests: 127.0.0.1 on a free port, forwarding to a target.

`pause()` stops forwarding without closing either socket: the proxy simply stops reading,
so bytes wait in the kernel's buffers and each end sees a silent peer, as when a Wi-Fi link
or a NAT entry dies (nothing is closed, keepalives time out). New connections are accepted
but hang the same way. `pause("up")` holds only client → target (a PUBLISH that never
reaches the broker), `pause("down")` only target → client (a PUBACK that never comes back).
`resume()` forwards what waited. `drop_connections()` resets every connection, discarding
what waited (a process killed while its data was held never gets it delivered late).

One thread (a selector loop); `close()` ends it.
"""

from __future__ import annotations

import selectors
import socket
import threading

UP, DOWN = "up", "down"


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket):
        self.client = client
        self.server = server
        self.closed = False

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.server if sock is self.client else self.client

    def direction(self, sock: socket.socket) -> str:
        return UP if sock is self.client else DOWN

    def close(self, reset: bool = False) -> None:
        self.closed = True
        for s in (self.client, self.server):
            try:
                if reset:  # RST instead of FIN: buffered data is discarded, as when a process dies
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._paused: set[str] = set()
        self._pairs: list[_Pair] = []
        self._drop: threading.Event | None = None
        self._synced: list[threading.Event] = []  # callers waiting for the loop to apply a change
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"tcp-proxy-{self.port}", daemon=True)

    def start(self) -> "TcpProxy":
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()
        return self

    # -- control (any thread) -----------------------------------------------------------------
    def pause(self, direction: str = "both") -> None:
        """Returns once the loop holds that direction: nothing sent after this call moves."""
        with self._lock:
            self._paused = {UP, DOWN} if direction == "both" else {direction}
        self._sync_now()

    def resume(self) -> None:
        with self._lock:
            self._paused = set()
        self._sync_now()

    def _sync_now(self) -> None:
        done = threading.Event()
        with self._lock:
            self._synced.append(done)
        self._applied(done, "apply a pause or resume")

    def drop_connections(self) -> None:
        """Reset every open connection (what waited in the buffers is lost)."""
        done = threading.Event()
        with self._lock:
            self._drop = done
        self._applied(done, "drop its connections")

    def _applied(self, done: threading.Event, what: str) -> None:
        """Wake the loop and return once it has done what was asked (callers rely on that)."""
        self._poke()
        if not done.wait(5):
            raise RuntimeError(f"the TCP proxy on port {self.port} did not {what} within 5 s")

    @property
    def connections(self) -> int:
        with self._lock:
            return sum(1 for p in self._pairs if not p.closed)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._poke()
        self._thread.join(5)
        for pair in self._pairs:
            pair.close()
        self._sel.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                closed, paused, drop = self._closed, set(self._paused), self._drop
                synced, self._synced = self._synced, []
                self._drop = None
            if closed:
                for done in synced:
                    done.set()
                return
            if drop:
                for pair in self._pairs:
                    self._forget(pair, reset=True)
                self._pairs = []
                drop.set()
            self._sync(paused)
            for done in synced:
                done.set()
            for key, _ in self._sel.select(timeout=0.5):
                if key.data == "wake":
                    self._wake_r.recv(4096)
                elif key.data == "listen":
                    self._accept()
                elif key.data.direction(key.fileobj) not in self._paused_now():
                    self._pump(key.fileobj, key.data)

    def _paused_now(self) -> set[str]:
        with self._lock:
            return self._paused

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()  # the target is down: the client sees its connection closed
            return
        client.setblocking(True)
        server.settimeout(None)
        self._pairs.append(_Pair(client, server))

    def _sync(self, paused: set[str]) -> None:
        """Read only the directions that are not paused."""
        for pair in self._pairs:
            if pair.closed:
                continue
            for sock in (pair.client, pair.server):
                want = pair.direction(sock) not in paused
                registered = self._registered(sock)
                if want and not registered:
                    self._sel.register(sock, selectors.EVENT_READ, pair)
                elif not want and registered:
                    self._sel.unregister(sock)
        self._pairs = [p for p in self._pairs if not p.closed]

    def _registered(self, sock: socket.socket) -> bool:
        try:
            self._sel.get_key(sock)
            return True
        except (KeyError, ValueError):
            return False

    def _pump(self, sock: socket.socket, pair: _Pair) -> None:
        try:
            data = sock.recv(65536)
            if data:
                pair.peer(sock).sendall(data)
                return
        except OSError:
            pass
        self._forget(pair)

    def _forget(self, pair: _Pair, reset: bool = False) -> None:
        for s in (pair.client, pair.server):
            if self._registered(s):
                self._sel.unregister(s)
        pair.close(reset)
