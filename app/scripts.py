"""Lua scripts shipped with the package, with their SHA1 for EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LuaScript:
    """A script's source and SHA1."""

    name: str
    source: str
    sha: str


@cache
def lua(relative: str) -> LuaScript:
    """Load `app/lua/x.lua` or `workers/x.lua` by path relative to the project root."""
    source = (ROOT / relative).read_text()
    return LuaScript(relative, source, hashlib.sha1(source.encode()).hexdigest())
