"""A TCP proxy that forwards to a server until it is frozen; then it keeps every connection open and never answers,
as a tracking server does when it hangs (a stuck database, a full disk, a network that drops packets)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class FreezableProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        self.frozen.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(client)
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        if self.frozen.is_set():
            return  # accepted, never answered
        server = socket.create_connection(self.target)
        self.held.append(server)
        while not self.frozen.is_set():
            ready, _, _ = select.select([client, server], [], [], 0.1)
            for source in ready:
                data = source.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        client.close()
                        server.close()
                    return
                if self.frozen.is_set():
                    return  # what arrives after the freeze is swallowed
                (server if source is client else client).sendall(data)

    def close(self) -> None:
        self.listener.close()
        for s in self.held:
            with contextlib.suppress(OSError):
                s.close()
