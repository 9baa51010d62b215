"""What a worker process hands its RQ jobs: RQ calls module-level functions by dotted path,
so each job module keeps its object (a Drainer, a Backfiller) here for the work loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

T = TypeVar("T")


class Served(Generic[T]):
    """One kind of object served to the jobs run inside `serving(...)`."""

    def __init__(self, name: str, outside: str) -> None:
        self._var: ContextVar[T] = ContextVar(name)
        self._outside = outside  # the error when a job runs where nobody serves one

    @contextmanager
    def serving(self, obj: T) -> Iterator[T]:
        """Run RQ jobs in this block with `obj` (the worker runner wraps its work loop)."""
        token = self._var.set(obj)
        try:
            yield obj
        finally:
            self._var.reset(token)

    def get(self) -> T:
        """The served object; RuntimeError outside `serving`."""
        try:
            return self._var.get()
        except LookupError:
            raise RuntimeError(self._outside) from None
