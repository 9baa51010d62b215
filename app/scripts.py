"""Lua scripts shipped with the package, with their SHA1 for EVALSHA."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_ENV = "INJIXO_EMBEDDED_REDIS"


@dataclass(frozen=True)
class LuaScript:
    """A script's source and SHA1."""

    name: str
    source: str
    sha: str
    embedded: bool = False


@cache
def lua(relative: str) -> LuaScript:
    """Load `app/lua/x.lua` or `workers/x.lua` by path relative to the project root."""
    source = (ROOT / relative).read_text()
    embedded = os.environ.get(EMBEDDED_ENV) == "1"
    if embedded and source.startswith("#!"):
        # The embedded dev server (fakeredis) has no script flags; on a real Redis the
        # shebang makes Redis refuse a writing script up front when out of memory.
        source = "--" + source
    return LuaScript(relative, source, hashlib.sha1(source.encode()).hexdigest(), embedded)
