"""Helpers of the status page's tests: the service started in process, and blocking clients
run in threads (the reactor must go on)."""

import json
import socket
import urllib.error
import urllib.request

from twisted.internet import defer
from twisted.internet.threads import deferToThread

from bridge import config as config_module
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.mllp.protocol import MllpDecoder, frame
from bridge.service.tap import makeService
from bridge.web.site import WebService
from fse_helpers import config_table


def answer_at_once(ctx, entry, analysis):
    return defer.succeed(Outcome(code=AckCode.AA, text="received"))


@defer.inlineCallbacks
def start(tmp_path, *, handler=None, **sections):
    """makeService plus the status page, started; ``(top, web)``."""
    from twisted.internet import reactor

    cfg = config_module.from_dict(config_table(tmp_path, **sections), base_dir=tmp_path)
    top = makeService(cfg, reactor, **({"handler": handler} if handler else {}))
    web = next((child for child in top if isinstance(child, WebService)), None)
    if web is None:   # makeService does not add the status page yet
        web = WebService(top.context, top.listener)
        web.setServiceParent(top)
    top.startService()
    yield top.resumed
    return top, web


def get(url: str) -> defer.Deferred:
    """``(status, content type, body)`` of a GET, in a thread."""
    def blocking():
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()
    return deferToThread(blocking)


def open_exchange(port: int, payload: bytes):
    """One blocking MLLP exchange on a connection left open: ``(socket, the ACK's MSA fields)``;
    the socket is closed if the exchange fails (the caller closes it otherwise)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        s.sendall(frame(payload))
        decoder, frames = MllpDecoder(), []
        while not frames:
            data = s.recv(65536)
            assert data, "connection closed"
            frames += list(decoder.feed(data))
    except BaseException:
        s.close()
        raise
    msa = next(seg for seg in frames[0].split(b"\r") if seg.startswith(b"MSA"))
    return s, msa.decode("utf-8").split("|")[1:4]


def exchange(port: int, payload: bytes) -> defer.Deferred:
    """One MLLP exchange, in a thread; the ACK's MSA fields."""
    def blocking():
        s, msa = open_exchange(port, payload)
        s.close()
        return msa
    return deferToThread(blocking)


def operator_post(url: str, path: str, body, *, token: str | None, content_type: str = "application/json",
                  method: str = "POST") -> defer.Deferred:
    """``(status, JSON answer)`` of a request to an operator endpoint (*path*), in a thread."""
    def blocking():
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
    return deferToThread(blocking)
