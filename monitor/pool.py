"""A process pool whose tasks have a deadline, for decoding hostile bytes.

The scan decodes images and videos found on the web in a process pool. A decoder that hangs on
crafted bytes must not hold a worker (and the scan) for ever, and a decoder that crashes must
not break the pool for every image after it. A :class:`concurrent.futures.ProcessPoolExecutor`
can do neither: it cannot stop one task, and once a worker dies every later task fails.

:class:`DeadlinePool` wraps one. It hands the inner pool at most one task per worker, so a task
starts running as it is handed over and its deadline counts from then; further tasks wait in
its own queue (stills stay as fast as in a plain pool: no process is started per task). The
workers of a new pool are started before any task is handed over, so a deadline does not count
a worker's start.

* A task still running ``timeout`` seconds after it was handed over fails with
  :class:`TaskTimedOut`; every process of the pool is killed (one worker cannot be stopped on
  its own) and a new pool takes over. The other tasks that were running are run again there;
  they are not charged for it.
* When a worker dies (a decoder crash), the tasks that were running are run again in a new
  pool, each on its own; one that was running at :data:`MAX_CRASHES` such deaths fails with
  :class:`WorkerCrashed`.

One coordinator thread does all the handing over, timing and replacing; futures and the
inner pool's callbacks only wake it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["MAX_CRASHES", "DeadlinePool", "PoolTaskError", "TaskTimedOut", "WorkerCrashed"]

MAX_CRASHES = 2
"""A task running when a worker died this many times fails (it may be what kills them)."""


class PoolTaskError(Exception):
    """A task the pool gave up on; the message is readable as it stands."""


class TaskTimedOut(PoolTaskError):
    """The task ran past the pool's deadline; its worker was killed."""


class WorkerCrashed(PoolTaskError):
    """A worker died while running the task, :data:`MAX_CRASHES` times."""


class _Task:
    __slots__ = ("args", "crashes", "deadline", "fn", "future", "inner", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future: Future = Future()
        self.inner: Future | None = None  # its future in the inner pool while it runs there
        self.deadline = 0.0
        self.crashes = 0


class DeadlinePool(Executor):
    """An executor running each task in a worker process of a pool made by ``make_pool``
    (``workers`` processes), for at most ``timeout`` seconds (see the module docstring)."""

    def __init__(
        self, make_pool: Callable[[int], ProcessPoolExecutor], workers: int, timeout: float
    ) -> None:
        if workers < 1 or timeout <= 0:
            raise ValueError("a DeadlinePool needs at least one worker and a positive timeout")
        self._make_pool, self._workers, self.timeout = make_pool, workers, timeout
        self._cond = threading.Condition()
        self._warming: list[Future] = []
        self._warm_until = 0.0
        self._pool = self._new_pool()
        self._waiting: deque[_Task] = deque()
        self._running: list[_Task] = []
        self._done: list[_Task] = []  # finished in the inner pool, not yet looked at
        self._closing = False
        self.replaced = 0  # how many times the pool's processes were killed or died
        self._thread = threading.Thread(target=self._coordinate, name="deadline-pool", daemon=True)
        self._thread.start()

    @property
    def processes(self) -> dict[int, Any]:
        """The worker processes of the current inner pool, by pid (as
        ``ProcessPoolExecutor._processes``; they change when the pool is replaced)."""
        return dict(getattr(self._pool, "_processes", None) or {})

    _processes = processes  # the name benchmarks/scan_throughput.py reads on a process pool

    # -- Executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        task = _Task(fn, args, kwargs)
        with self._cond:
            if self._closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._waiting.append(task)
            self._cond.notify()
        return task.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closing = True
            if cancel_futures:  # (a task run again after a crash has started: it stays)
                self._waiting = deque(t for t in self._waiting if not t.future.cancel())
            self._cond.notify()
        if wait:
            self._thread.join()

    # -- the coordinator thread

    def _coordinate(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._due():
                        self._cond.wait(self._wait_seconds())
                    if self._closing and not self._waiting and not self._running:
                        break
                    done, self._done = self._done, []
                # Results first: a crash among them replaces the pool, and a task that
                # finished meanwhile need not run again.
                done.sort(key=lambda t: _broken(t.inner))
                for task in done:
                    self._finished(task)
                self._time_out()
                self._hand_over()
        except BaseException as exc:  # a bug here must not leave futures waiting for ever
            with self._cond:
                self._closing = True
                left = [*self._running, *self._waiting]
                self._running, self._waiting = [], deque()
            for task in left:
                if not task.future.done():
                    task.future.set_exception(PoolTaskError(f"the hashing pool failed: {exc!r}"))
            raise
        finally:
            self._pool.shutdown(wait=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        """A new inner pool, its workers being started: a worker's start (a fork and the
        caller's ``__main__`` imported again: seconds on a busy machine) is not counted
        against the first tasks' deadlines. Tasks are handed over once every worker has run
        a no-op, or ``timeout`` seconds from now, whichever comes first."""
        pool = self._make_pool(self._workers)
        warming = [pool.submit(abs, 0) for _ in range(self._workers)]  # each starts a worker
        with self._cond:
            self._warming, self._warm_until = warming, time.monotonic() + self.timeout
        for future in warming:
            future.add_done_callback(self._on_warm)
        return pool

    def _on_warm(self, _future: Future) -> None:
        with self._cond:
            self._cond.notify()

    def _warm(self) -> bool:
        """Whether tasks may be handed over (called holding the lock)."""
        if self._warming and (
            all(f.done() for f in self._warming) or time.monotonic() >= self._warm_until
        ):
            self._warming = []
        return not self._warming

    def _due(self) -> bool:
        """Whether the coordinator has something to do (called holding the lock)."""
        if self._done or (self._closing and not self._waiting and not self._running):
            return True
        if self._may_hand_over():
            return True
        return any(t.deadline <= time.monotonic() for t in self._running)

    def _may_hand_over(self) -> bool:
        """Whether the next waiting task may be handed over now (called holding the lock)."""
        if not self._waiting or len(self._running) >= self._workers or not self._warm():
            return False
        # A task that was running when a worker died runs alone, so a second death is its
        # own doing and no other task is charged for it.
        return not self._running or not (self._waiting[0].crashes or self._running[0].crashes)

    def _wait_seconds(self) -> float | None:
        times = [t.deadline for t in self._running]
        if self._warming:
            times.append(self._warm_until)
        if not times:
            return None
        return max(min(times) - time.monotonic(), 0.0) + 0.01

    def _on_inner_done(self, task: _Task, inner: Future) -> None:
        with self._cond:
            if task.inner is inner:  # not a run given up on already
                self._done.append(task)
                self._cond.notify()

    def _finished(self, task: _Task) -> None:
        inner = task.inner
        if inner is None:  # run again in a new pool meanwhile
            return
        if _broken(inner):  # a worker died: run the tasks that were running again
            self._replace(crashed=True)
            return
        with self._cond:
            self._running.remove(task)
            task.inner = None
        exc = inner.exception()
        if exc is not None:
            task.future.set_exception(exc)
        else:
            task.future.set_result(inner.result())

    def _time_out(self) -> None:
        now = time.monotonic()
        late = [t for t in self._running if t.deadline <= now]
        if not late:
            return
        with self._cond:
            for task in late:
                self._running.remove(task)
                task.inner = None
        for task in late:
            task.future.set_exception(
                TaskTimedOut(
                    f"gave up after {self.timeout:g} s: decoding took too long "
                    "(its worker process was stopped)"
                )
            )
        self._replace(crashed=False)

    def _replace(self, *, crashed: bool) -> None:
        """Kill the inner pool's processes, start a new pool, and put the tasks that were
        running at the front of the queue (charged a crash if ``crashed``)."""
        with self._cond:
            running, self._running = self._running, []
            for task in running:
                task.inner = None  # their old runs' results, if any come, are ignored
            self._done = [t for t in self._done if t.inner is not None]
        old = self._pool
        # One worker cannot be stopped on its own: ProcessPoolExecutor breaks when any dies.
        for process in list((getattr(old, "_processes", None) or {}).values()):
            process.kill()
        old.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        self.replaced += 1
        again = []
        for task in running:
            task.crashes += crashed
            if task.crashes >= MAX_CRASHES:
                task.future.set_exception(
                    WorkerCrashed(
                        f"the decoder crashed on it {task.crashes} times (its worker process died)"
                    )
                )
            else:
                again.append(task)
        with self._cond:
            self._waiting.extendleft(reversed(again))

    def _hand_over(self) -> None:
        while True:
            with self._cond:
                if not self._may_hand_over():
                    return
                task = self._waiting.popleft()
            if not task.future.running() and not task.future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                inner = self._pool.submit(task.fn, *task.args, **task.kwargs)
            except BrokenProcessPool:  # broke since the last look: a new pool, then again
                task.crashes += 1  # (bounded: a pool that cannot start workers fails tasks)
                if task.crashes >= MAX_CRASHES:
                    task.future.set_exception(WorkerCrashed("the hashing pool cannot start"))
                else:
                    with self._cond:
                        self._waiting.appendleft(task)
                self._replace(crashed=False)
                continue
            except Exception as exc:  # e.g. arguments that cannot be pickled
                task.future.set_exception(exc)
                continue
            task.deadline = time.monotonic() + self.timeout
            with self._cond:
                task.inner = inner
                self._running.append(task)
            inner.add_done_callback(lambda f, task=task: self._on_inner_done(task, f))


def _broken(inner: Future | None) -> bool:
    """Whether a finished run failed because its pool broke (a worker died or was killed)."""
    if inner is None or inner.cancelled():
        return inner is not None
    return isinstance(inner.exception(), BrokenProcessPool)
