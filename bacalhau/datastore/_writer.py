"""What both datastores share: queued writes run by one thread, in groups (group commit)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.datastore.base import DatastoreError, Tx

T = TypeVar("T")
log = logging.getLogger("bacalhau.datastore")

MAX_GROUP = 256  # functions per group
_STOP = object()

Group = list[tuple[Callable[[Tx], Any], Future[Any]]]
Outcomes = list[tuple[Future[Any], bool, Any]]  # (future, succeeded, value or exception)


class GroupWriter:
    """Runs submitted write functions in one thread, everything queued at once as a group.

    A subclass implements `_run_group`: run each function in isolation, make the group durable,
    and return each function's outcome plus the events of those that succeeded; or raise
    DatastoreError if nothing of the group could be written.
    """

    def _start_writer(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()  # so that nothing is queued behind the stop
        self._listeners: list[Callable[[Iterable[types_pb2.Event]], None]] = []
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name=name, daemon=True)
        self._writer.start()

    def _run_group(self, group: Group) -> tuple[Outcomes, list[types_pb2.Event]]:
        raise NotImplementedError

    def submit(self, fn: Callable[[Tx], T]) -> Future[T]:
        """Run `fn` in a write transaction (see `Datastore.submit`)."""
        fut: Future[T] = Future()
        with self._submit_lock:
            if self._closed:
                fut.set_exception(DatastoreError("the datastore is closed"))
            else:
                self._queue.put((fn, fut))
        return fut

    def add_listener(self, fn: Callable[[Iterable[types_pb2.Event]], None]) -> None:
        self._listeners.append(fn)

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP and group[-1] is not _STOP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if group[-1] is _STOP:
                stop = True
                group.pop()
            self._commit([(fn, fut) for fn, fut in group if fut.set_running_or_notify_cancel()])

    def _commit(self, group: Group) -> None:
        if not group:
            return
        try:
            outcomes, events = self._run_group(group)
        except DatastoreError as err:
            for _, fut in group:
                fut.set_exception(err)
            return
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if events:
            for listener in self._listeners:
                try:
                    listener(events)
                except Exception:  # a listener's failure must not stop the writer
                    log.exception("datastore listener failed")

    def _stop_writer(self) -> bool:
        """Finish what is queued and stop the thread; False if it was stopped already."""
        with self._submit_lock:
            if self._closed:
                return False
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        return True
