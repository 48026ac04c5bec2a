"""Saxon (saxonche) on one thread of its own: every saxon object is made, used and freed there.

saxonche is a GraalVM native image, and its objects keep the GraalVM thread of the
Python thread that made them. Freed on another thread (as Python's cyclic garbage
collector does, on whichever thread happens to allocate when it runs), they call
GraalVM with the wrong thread; when that thread's stack lies below the first one's,
GraalVM takes it for a stack overflow, prints "Fatal error: StackOverflowError ..." on
file descriptor 2 and ends the whole process with exit status 99. So callers never hold
a saxon object: an owner compiles its stylesheets under names and transforms by name,
and what an owner compiled is freed on the saxon thread once the owner is gone.
"""

from __future__ import annotations

import atexit
import itertools
import queue
import threading
import weakref
from concurrent.futures import Future

_STOP = object()


class SaxonThread:
    """One thread owning the saxon processor and the compiled stylesheets of the process."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        self._keys = itertools.count(1)

    # -- what callers use

    def new_owner(self, owner) -> int:
        """A key for *owner*'s stylesheets, freed (on the saxon thread) once *owner* is."""
        key = next(self._keys)
        weakref.finalize(owner, self._forget, key)
        return key

    def compile(self, owner: int, name: str, stylesheet_text: str) -> None:
        """Compile *stylesheet_text* as *owner*'s *name* (saxonche's PySaxonApiError if it does not)."""
        self._call(_compile, owner, name, stylesheet_text)

    def transform(self, owner: int, name: str, xml_text: str) -> str:
        """*owner*'s stylesheet *name* applied to *xml_text*, as a string (PySaxonApiError if it fails)."""
        return self._call(_transform, owner, name, xml_text)

    def stop(self) -> None:
        """Free every saxon object on the saxon thread and end it (at interpreter exit)."""
        with self._start_lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._jobs.put(_STOP)
            thread.join(30)

    # -- the thread

    def _call(self, fn, *args):
        future: Future = Future()
        with self._start_lock:
            if self._stopped:
                raise RuntimeError("the saxon thread has stopped (interpreter exit)")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="saxon", daemon=True)
                self._thread.start()
            self._jobs.put((fn, args, future))
        return future.result()

    def _forget(self, key: int) -> None:
        # Called by the garbage collector on any thread: only a message to the saxon thread.
        if not self._stopped:
            self._jobs.put((_forget, (key,), None))

    def _run(self) -> None:
        state = _State()
        while (job := self._jobs.get()) is not _STOP:
            fn, args, future = job
            try:
                result = fn(state, *args)
            except BaseException as exc:   # handed to the caller, whatever it is
                # Without its traceback and chain: their frames hold this thread's saxon objects
                # (the parsed document), which the caller would free on its own thread.
                exc.__traceback__ = exc.__context__ = exc.__cause__ = None
                if future is not None:
                    future.set_exception(exc)
            else:
                if future is not None:
                    future.set_result(result)
            del job, fn, args, future
        state.clear()


class _State:
    """The saxon objects, only ever touched on the saxon thread."""

    def __init__(self):
        self.processor = None
        self.xslt = None
        self.executables: dict[int, dict[str, object]] = {}

    def xslt_processor(self):
        if self.processor is None:
            from saxonche import PySaxonProcessor  # slow import: only when used

            self.processor = PySaxonProcessor(license=False)
            self.xslt = self.processor.new_xslt30_processor()
        return self.xslt

    def clear(self) -> None:
        self.executables.clear()
        self.xslt = None
        self.processor = None


def _compile(state: _State, owner: int, name: str, stylesheet_text: str) -> None:
    executable = state.xslt_processor().compile_stylesheet(stylesheet_text=stylesheet_text)
    state.executables.setdefault(owner, {})[name] = executable


def _transform(state: _State, owner: int, name: str, xml_text: str) -> str:
    node = state.processor.parse_xml(xml_text=xml_text)
    return state.executables[owner][name].transform_to_string(xdm_node=node)


def _forget(state: _State, key: int) -> None:
    state.executables.pop(key, None)


SAXON = SaxonThread()
atexit.register(SAXON.stop)
