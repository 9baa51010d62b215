"""The embedded Redis of `injixo-freshchat dev` when no redis-server is on PATH.

fakeredis's TCP server (pure Python from PyPI, with lupa for Lua) made to answer what our
processes send the way Redis 7 does, so that no production module needs to know it is
talking to it: scripts that start with a `#!lua` shebang, RQ's `INFO` probe, and a
`CLIENT INFO` reply redis-py can parse. It keeps nothing on disk: for trying the product,
never for production. Only this module imports fakeredis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fakeredis import TcpFakeServer
from fakeredis._clients._sync import FakeRedisConnection
from fakeredis._clients._tcp_server import TCPFakeRequestHandler
from fakeredis._commands import command
from fakeredis._socket import FakeSocket

REDIS_VERSION = "7.0.0"


class _Socket(FakeSocket):
    """fakeredis's command set plus what Redis 7 answers and fakeredis does not."""

    def eval(self, script: bytes, numkeys: int, *keys_and_args: bytes) -> Any:
        """Run a script; a `#!lua` first line is commented out (lupa cannot parse it)."""
        if script.startswith(b"#!"):
            script = b"--" + script
        return super().eval(script, numkeys, *keys_and_args)

    @command(name="INFO", fixed=(), repeat=(bytes,))
    def info(self, *sections: bytes) -> bytes:
        """The server section RQ reads its version check from."""
        return f"# Server\r\nredis_version:{REDIS_VERSION}\r\n".encode()


class _Connection(FakeRedisConnection):
    """A server-side connection that runs commands on `_Socket`."""

    def _connect(self) -> _Socket:
        if self._server is None:  # the base class creates it in __init__
            raise RuntimeError("embedded Redis connection without a server")
        return _Socket(
            self._server,
            client_class=self._client_class,
            db=self.db,
            lua_modules=self._lua_modules,
            client_info=self._client_info,
        )


class _Handler(TCPFakeRequestHandler):
    """One TCP client: its commands go to `_Socket`, its address reads as Redis writes it."""

    def setup(self) -> None:
        """Set up as fakeredis does, then adjust the connection it made (not used yet)."""
        super().setup()
        self.current_client.__class__ = _Connection
        info = self.current_client._client_info
        for name in ("addr", "laddr"):
            if isinstance(info.get(name), tuple):
                host, port = info[name][:2]
                info[name] = f"{host}:{port}"  # "('127.0.0.1', 1)" has a space redis-py splits on


def start(port: int) -> tuple[str, Callable[[], None]]:
    """Serve on 127.0.0.1:`port` in a thread; returns the URL and a function that stops it."""
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.RequestHandlerClass = _Handler
    threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"redis://127.0.0.1:{port}/0", stop
