"""Answering a request of the status page: a Deferred's result written once, if the client
is still there; a failure logged and answered 500 (never a traceback to the client)."""

from __future__ import annotations

import json
import logging

from twisted.internet import defer
from twisted.web import server

log = logging.getLogger(__name__)

JSON = b"application/json; charset=utf-8"


def answer(request, d: defer.Deferred, *, what: str):
    """Finish *request* with the ``(status, content_type, bytes)`` *d* fires with."""
    gone: list = []
    # Fires with an error if the client goes away first: then there is nobody to answer.
    request.notifyFinish().addErrback(gone.append)

    def write(result):
        status, content_type, data = result
        if gone or request.finished:
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(data)
        request.finish()

    def failed(failure):
        log.error("status page: %s failed: %s", what, failure.getErrorMessage())
        return 500, b"application/json", to_json({"error": "internal error, see the service log"})

    d.addErrback(failed).addCallback(write)
    d.addErrback(lambda f: log.error("status page: answering failed: %s", f.getErrorMessage()))
    return server.NOT_DONE_YET


def to_json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")
