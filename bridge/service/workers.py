"""Worker processes for the CPU-heavy stages (bridge.mapping.analysis, bridge.service.stages).

Python runs one thread at a time: a parse or a signature in a thread still
takes the reactor's CPU. A worker process runs beside the reactor, on
another CPU, so the listener and the journal never wait for a parse tree or
a PDF to be built (bench/RESULTS.md, "MLLP throughput"), and a message that
sends a stage into a loop stalls one worker, which is then replaced, not
the service.

Each worker is ``python -m bridge.service.workers``, started with Twisted's
spawnProcess and spoken to over its stdin and stdout: length-prefixed
pickles, answered one at a time and in order. The first frame is the
configuration; each request names a module-level function
``fn(stages, *args)``, called with the worker's own
:class:`bridge.service.stages.Stages`. Pickles only ever travel between the
service and the children it started.

A call whose worker dies (or is killed after ``workers.timeout_s``) is tried
once more on a fresh worker, then fails with :class:`WorkerLost` (AR 207:
the sender may resend). Calls wait in the pool while no worker is up.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import signal
import struct
import sys
import time
from pathlib import Path

from twisted.application import service
from twisted.internet import defer, protocol

from bridge.errors import BridgeError, NotProcessable
from bridge.service.stages import Stages

log = logging.getLogger("bridge.service.workers")

_LENGTH = struct.Struct("!I")
#: A worker that dies sooner than this after its start is restarted with a growing delay.
_STEADY_S = 10.0
_MAX_RESTART_DELAY_S = 30.0
#: How long a stopping pool waits for its workers to exit before killing them.
_STOP_GRACE_S = 5.0


class WorkerLost(NotProcessable):
    """The worker process running a call ended before answering (twice)."""

    temporary = True


class WorkerFailed(Exception):
    """An unexpected error inside a worker (its traceback is in the worker's log)."""


class _Call:
    __slots__ = ("payload", "deferred", "attempts", "expiry")

    def __init__(self, payload: bytes, deferred: defer.Deferred):
        self.payload = payload
        self.deferred = deferred
        self.attempts = 0
        self.expiry = None
        """While it waits for a worker: the DelayedCall that gives up on it."""


class _Worker(protocol.ProcessProtocol):
    """One child process; its calls are answered in the order they were sent."""

    def __init__(self, pool: WorkerPool, number: int):
        self.pool = pool
        self.number = number
        self.started = time.monotonic()
        self.calls: collections.deque[_Call] = collections.deque()
        self.up = False
        self._buffer = bytearray()
        self._watchdog = None
        self._head_since = 0.0
        """When the oldest unanswered call (the one running) became so."""
        self.gone = defer.Deferred()
        """Fires when the worker's stdout closes (it exited, or is about to)."""

    def connectionMade(self):
        self.up = True
        self.transport.writeSequence((_LENGTH.pack(len(self.pool.config_payload)), self.pool.config_payload))
        self.pool.worker_up(self)

    def send(self, call: _Call) -> None:
        call.attempts += 1
        self.calls.append(call)
        self.transport.writeSequence((_LENGTH.pack(len(call.payload)), call.payload))
        if len(self.calls) == 1:
            self._watch()

    def outReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < _LENGTH.size + size:
                return
            ok, value = pickle.loads(bytes(buffer[_LENGTH.size:_LENGTH.size + size]))
            del buffer[:_LENGTH.size + size]
            call = self.calls.popleft()
            if self.calls:
                self._watch()
            if ok:
                call.deferred.callback(value)
            else:
                call.deferred.errback(value)

    def _watch(self) -> None:
        """A call starts running (it became the oldest unanswered): time it."""
        self._head_since = self.pool.reactor.seconds()
        if self._watchdog is None and self.pool.timeout_s:
            self._watchdog = self.pool.reactor.callLater(self.pool.timeout_s, self._check)

    def _check(self) -> None:
        # One timer per worker, looking at the running call when it fires, rather than a
        # DelayedCall moved for every call.
        self._watchdog = None
        if not self.calls or not self.up:
            return
        running = self.pool.reactor.seconds() - self._head_since
        if running < self.pool.timeout_s:
            self._watchdog = self.pool.reactor.callLater(self.pool.timeout_s - running, self._check)
            return
        log.error("worker %d: no answer in %ss, killing it", self.number, self.pool.timeout_s)
        self.kill()

    def alive(self) -> bool:
        """Is the process still running? (Without reaping it: Twisted does that.)"""
        pid = getattr(self.transport, "pid", None)
        if not self.up or pid is None:
            return False
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")
        except Exception:  # already gone (ProcessExitedAlready, or no process)
            pass

    def outConnectionLost(self) -> None:
        # Not processEnded: that needs the reactor's SIGCHLD handling, which an embedding
        # application may not have; a closed stdout is enough to know the worker is gone.
        self.up = False
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        calls, self.calls = self.calls, collections.deque()
        self.pool.worker_gone(self, calls)
        self.gone.callback(None)

    def processEnded(self, reason) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        if not self.pool.stopping and (code or sig):
            log.error("worker %d ended (exit code %s, signal %s)", self.number, code, sig)


class WorkerPool(service.Service):
    """*count* worker processes behind :meth:`call`; started and stopped with the service."""

    def __init__(self, reactor, config, *, count: int, timeout_s: float, wait_s: float | None = None,
                 executable: str = sys.executable):
        self.reactor = reactor
        self.count = count
        self.timeout_s = timeout_s
        self.wait_s = timeout_s + _MAX_RESTART_DELAY_S if wait_s is None else wait_s
        """How long a call waits for a worker to be up (restarts included) before it fails."""
        self.executable = executable
        self.config_payload = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        self.workers: list[_Worker] = []
        self.waiting: collections.deque[_Call] = collections.deque()
        self.stopping = False
        self._spawned = 0
        self._quick_deaths = 0
        self._restarts = []

    def status(self) -> dict:
        """For /healthz: workers configured and running, replacements started, calls waiting."""
        return {"processes": self.count, "up": sum(1 for w in self.workers if w.up),
                "replaced": max(0, self._spawned - self.count), "waiting": len(self.waiting)}

    def call(self, fn, *args) -> defer.Deferred:
        """A Deferred of ``fn(stages, *args)`` run in a worker; *fn* must be module-level."""
        if self.stopping:
            return defer.fail(WorkerLost("the service is stopping"))
        d = defer.Deferred()
        self._dispatch(_Call(pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL), d))
        return d

    def _dispatch(self, call: _Call, *, checked: bool = False) -> None:
        ready = [w for w in self.workers if w.up]
        if checked:
            # A retried call goes only to a worker known to be running: one that died with
            # the first (killed together, say) may not have closed its pipe yet.
            for worker in ready:
                if not worker.alive():
                    worker.up = False
            ready = [w for w in ready if w.up]
        if not ready:
            self._wait(call)
            return
        min(ready, key=lambda w: len(w.calls)).send(call)

    def _wait(self, call: _Call, *, first: bool = False) -> None:
        # Not forever: workers that cannot start (a broken installation) must not leave
        # senders without an answer. AR 207 tells them to send again later.
        if call.expiry is None and self.wait_s:
            call.expiry = self.reactor.callLater(self.wait_s, self._expire, call)
        if first:
            self.waiting.appendleft(call)
        else:
            self.waiting.append(call)

    def _take(self) -> _Call:
        call = self.waiting.popleft()
        if call.expiry is not None and call.expiry.active():
            call.expiry.cancel()
        call.expiry = None
        return call

    def _expire(self, call: _Call) -> None:
        call.expiry = None
        if call in self.waiting:
            self.waiting.remove(call)
            log.error("no worker process took a call in %ss", self.wait_s)
            call.deferred.errback(WorkerLost(f"no worker process available for {self.wait_s:g}s"))

    def startService(self):
        super().startService()
        self.stopping = False
        for _ in range(self.count):
            self._spawn()
        log.info("%d worker process(es) for the document stages", self.count)

    def _spawn(self) -> None:
        self._spawned += 1
        worker = _Worker(self, self._spawned)
        env = dict(os.environ)
        # The child imports this very package, wherever the service imported it from.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.reactor.spawnProcess(worker, self.executable, [self.executable, "-m", "bridge.service.workers"],
                                  env=env, childFDs={0: "w", 1: "r", 2: 2})
        self.workers.append(worker)

    def worker_up(self, worker: _Worker) -> None:
        while self.waiting and worker.up:
            worker.send(self._take())

    def worker_gone(self, worker: _Worker, calls) -> None:
        self.workers.remove(worker)
        if self.stopping:
            for call in calls:
                call.deferred.errback(WorkerLost("the service stopped before the worker answered"))
            return
        # The oldest call was running when the worker died: it may be what killed it.
        retry = []
        for n, call in enumerate(calls):
            if n == 0 and call.attempts >= 2:
                call.deferred.errback(WorkerLost("the worker process ended while handling this message"))
                continue
            if n > 0:
                call.attempts -= 1  # sent, never started
            retry.append(call)
        for call in reversed(retry):
            self._wait(call, first=True)
        lived = time.monotonic() - worker.started
        self._quick_deaths = self._quick_deaths + 1 if lived < _STEADY_S else 0
        # At once, unless workers keep dying young: then 1, 2, 4... seconds apart.
        delay = min(2 ** (self._quick_deaths - 2), _MAX_RESTART_DELAY_S) if self._quick_deaths > 1 else 0
        self._restarts = [c for c in self._restarts if c.active()]
        self._restarts.append(self.reactor.callLater(delay, self._restart))
        if any(w.up for w in self.workers):
            for _ in range(len(self.waiting)):
                self._dispatch(self._take(), checked=True)

    def _restart(self) -> None:
        if not self.stopping:
            self._spawn()

    def stopService(self):
        super().stopService()
        self.stopping = True
        for call in self._restarts:
            if call.active():
                call.cancel()
        while self.waiting:
            self._take().deferred.errback(WorkerLost("the service stopped"))
        workers = list(self.workers)
        for worker in workers:
            try:
                worker.transport.closeStdin()
            except Exception:  # its pipes are already closed
                pass
        gone = defer.DeferredList([w.gone for w in workers])
        timer = self.reactor.callLater(_STOP_GRACE_S, lambda: [w.kill() for w in workers if w.up])
        gone.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return gone


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


# -- the worker's side ---------------------------------------------------------------


def _read_frame(stream) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def serve(stdin, stdout) -> None:
    """Answer calls from *stdin* on *stdout* until the service closes *stdin*."""
    payload = _read_frame(stdin)
    if payload is None:
        return
    config = pickle.loads(payload)
    logging.basicConfig(level=config.logging.level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker {os.getpid()} %(name)s: %(message)s")
    stages = Stages(config)
    while (payload := _read_frame(stdin)) is not None:
        fn, args = pickle.loads(payload)
        try:
            answer = (True, fn(stages, *args))
        except BridgeError as exc:
            answer = (False, exc)
        except Exception:
            log.exception("%s failed", getattr(fn, "__qualname__", fn))
            answer = (False, WorkerFailed(f"{getattr(fn, '__qualname__', fn)} failed in a worker process"))
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            log.error("the result of %s cannot be sent: %s", getattr(fn, "__qualname__", fn), exc)
            data = pickle.dumps((False, WorkerFailed("a worker's result could not be sent")))
        stdout.write(_frame(data))
        stdout.flush()


def main() -> None:
    # The service decides when a worker ends (it closes stdin): a SIGTERM or a Ctrl-C sent to
    # the whole process group must not kill work the service is still waiting for.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # stdout is the channel to the service: a stray print must not corrupt it.
    sys.stdout = sys.stderr
    serve(stdin, stdout)


if __name__ == "__main__":
    # Through the package's module, not __main__: the classes pickled back must be
    # the ones the service knows (bridge.service.workers.WorkerFailed, not __main__.WorkerFailed).
    from bridge.service.workers import main as _main
    _main()
