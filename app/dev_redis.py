"""The embedded Redis of `injixo-freshchat dev` when no redis-server is on PATH.

fakeredis's TCP server (pure Python from PyPI, with lupa for Lua) made to answer what our
processes send the way Redis 7 does, so that no production module needs to know it is
talking to it: scripts that start with a `#!lua` shebang, RQ's `INFO` probe, and a
`CLIENT INFO` reply redis-py can parse. Given a snapshot file it keeps its data there
(loaded at start, saved every second and on stop), so `dev` can be restarted; for trying the
product, never for production. Only this module imports fakeredis.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakeredis import FakeServer, TcpFakeServer
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


SAVE_SECONDS = 1.0  # what a crash of `dev` (SIGKILL, power loss) can lose at most
FORMAT = 1  # of the snapshot; another format (or fakeredis's own classes changing) is refused


def _save(store: FakeServer, path: Path, last: bytes = b"") -> bytes:
    """Write the data to `path` (atomically, mode 0600) unless it equals `last`; the data."""
    with store.lock:  # every command runs under this lock: one consistent moment
        data = pickle.dumps(
            {"format": FORMAT, "dbs": {i: dict(db._dict) for i, db in store.dbs.items()}},
            protocol=pickle.HIGHEST_PROTOCOL,
        )
    if data != last:
        part = path.with_name(path.name + ".part")
        with os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    return data


def _load(store: FakeServer, path: Path) -> None:
    """The data of an earlier run. Unpickling can run code: only this user's own file."""
    from app.dev import DevError  # dev imports this module only when it needs it

    if path.stat().st_uid != os.getuid():
        raise DevError(f"dev: {path} belongs to another user; not loading it")
    try:
        saved = pickle.loads(path.read_bytes())
        if saved["format"] != FORMAT:
            raise ValueError(f"format {saved['format']}")
        dbs: dict[int, dict[bytes, Any]] = saved["dbs"]
    except Exception as exc:  # whatever a stale or foreign file raises
        raise DevError(
            f"dev: cannot load the embedded Redis's data from {path} ({type(exc).__name__}: "
            f"{exc}); move it away to start empty, or use --ephemeral"
        ) from None
    with store.lock:
        for index, items in dbs.items():
            for key, item in items.items():
                store.dbs[index][key] = item  # also schedules the key's expiry


def _keep_saving(store: FakeServer, path: Path, done: threading.Event) -> None:
    last = b""
    while not done.wait(SAVE_SECONDS):
        last = _save(store, path, last)


def start(port: int, snapshot: Path | None = None) -> tuple[str, Callable[[], None]]:
    """Serve on 127.0.0.1:`port` in a thread, with the data of `snapshot` if given (and kept
    there); returns the URL and a function that stops it (and saves)."""
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.RequestHandlerClass = _Handler
    store = server.fake_server
    if snapshot is not None and snapshot.exists():
        try:
            _load(store, snapshot)
        except BaseException:
            server.server_close()
            raise
    threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True).start()
    done = threading.Event()
    saver = None
    if snapshot is not None:
        saver = threading.Thread(
            target=_keep_saving,
            args=(store, snapshot, done),
            name="embedded-redis-save",
            daemon=True,  # killed mid-write it leaves a .part file; the snapshot stays whole
        )
        saver.start()

    def stop() -> None:
        done.set()
        server.shutdown()
        server.server_close()
        if saver is not None and snapshot is not None:
            saver.join()
            _save(store, snapshot)

    return f"redis://127.0.0.1:{port}/0", stop
