"""``GET /metrics`` (bridge.web.metrics) and the journal's counts (bridge.journal.metrics).

Over real sockets on the service built by makeService; the counts are read
from the real SQLite journal file on a connection of their own. The
exposition text is parsed strictly (format 0.0.4) before its values are checked.
"""

import os
import re
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

import bridge
from bridge.journal import Document, Received
from bridge.journal import metrics
from bridge.journal.sqlite import SqliteStore
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.web.metrics import MetricsResource, render_exposition
from fse_helpers import CHECKOUT, make_oru
from .test_status_page import PATIENT, _post_fault
from .web_kit import answer_at_once, exchange, get, open_exchange, start

EXAMPLES = CHECKOUT / "examples"


# -- a strict reader of the text exposition format (version 0.0.4) -------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?|NaN|[+-]Inf)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse(text: str) -> dict:
    """``{(name, ((label, value), ...)): value}``; fails on anything the format does not allow:
    a sample before its family's HELP and TYPE, a family split or declared twice, a bad line."""
    assert text.endswith("\n")
    samples, declared, current = {}, set(), None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line.split(" ")[2]
            if line.startswith("# TYPE "):
                assert line.split(" ")[3] in ("counter", "gauge"), line
                assert name not in declared, f"{name} declared twice"
                declared.add(name)
            current = name
            continue
        if line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels_text, value = match.groups()
        assert name == current and name in declared, f"{name}: sample outside its family"
        labels, at = [], 0
        while labels_text and at < len(labels_text):
            label = _LABEL.match(labels_text, at)
            assert label, f"bad label in {line!r}"
            labels.append((label.group(1), _unescape(label.group(2))))
            at = label.end()
            if at < len(labels_text):
                assert labels_text[at] == ",", f"bad label separator in {line!r}"
                at += 1
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"{key} twice"
        samples[key] = float(value)
    return samples


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def family(samples: dict, name: str) -> dict:
    """``{labels tuple: value}`` of one family."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


# -- the service, the real pipeline and the embedded simulator ------------------------------------


@pytest_twisted.inlineCallbacks
def test_metrics_after_publications_a_gateway_refusal_and_an_unsupported_message(tmp_path):
    top, web = yield start(tmp_path)
    held = None
    try:
        status, content_type, body = yield get(web.url + "metrics")
        assert status == 200 and content_type == "text/plain; version=0.0.4; charset=utf-8"
        before = parse(body.decode())
        assert value(before, "fse_bridge_messages_total", outcome="AA") == 0
        assert value(before, "fse_bridge_unfinished_messages", state="received") == 0
        assert family(before, "fse_bridge_gateway_calls_total") == {}

        # RAD refused by the gateway (400), then LAB published and corrected.
        simulator = top.context.publisher.client.base_url.split("/gateway/")[0]
        yield deferToThread(_post_fault, simulator, tmp_path / "certs",
                            {"operation": "create", "status": 400, "problem": "syntax"})
        assert (yield exchange(top.mllp_port, (EXAMPLES / "rad.hl7").read_bytes()))[0] == "AE"
        assert (yield exchange(top.mllp_port, (EXAMPLES / "lab.hl7").read_bytes()))[0] == "AA"
        assert (yield exchange(top.mllp_port, (EXAMPLES / "lab-correction.hl7").read_bytes()))[0] == "AA"
        # An unsupported message type, on a connection that stays open during the scrape.
        held, msa = yield deferToThread(open_exchange, top.mllp_port,
                                        make_oru("ADT1", message_type="ADT", event="A01").encode())
        assert msa[0] == "AR"
        yield committed(top.context.journal)

        status, _, body = yield get(web.url + "metrics")
        assert status == 200
        text = body.decode()
        samples = parse(text)
        assert {labels: v for labels, v in family(samples, "fse_bridge_messages_total").items()} == {
            (("outcome", "AA"),): 2, (("outcome", "AE"),): 1, (("outcome", "AR"),): 1,
            (("outcome", "unfinished"),): 0}
        assert family(samples, "fse_bridge_messages_by_type_total") == {
            (("message_type", "ORU^R01"),): 3, (("message_type", "ADT^A01"),): 1}
        assert family(samples, "fse_bridge_unfinished_messages") == {(("state", "received"),): 0}
        assert family(samples, "fse_bridge_gateway_calls_total") == {
            (("operation", "create"), ("status_class", "2xx")): 1,
            (("operation", "create"), ("status_class", "4xx")): 1,
            (("operation", "replace"), ("status_class", "2xx")): 1}
        documents = family(samples, "fse_bridge_documents")
        assert len(documents) == 20   # every state and type, 0 when none: no gaps in a graph
        assert {labels: v for labels, v in documents.items() if v} == {
            (("state", "published"), ("type", "LAB")): 1, (("state", "replaced"), ("type", "LAB")): 1,
            (("state", "pending"), ("type", "RAD")): 1}
        assert value(samples, "fse_bridge_worker_processes", state="configured") == 1
        assert value(samples, "fse_bridge_worker_processes", state="up") == 1
        assert value(samples, "fse_bridge_worker_replaced_total") == 0
        assert value(samples, "fse_bridge_worker_calls_waiting") == 0
        assert value(samples, "fse_bridge_journal_open") == 1
        assert value(samples, "fse_bridge_mllp_listening") == 1
        assert value(samples, "fse_bridge_mllp_connections") == 1
        assert value(samples, "fse_bridge_validation_local") == 0
        assert value(samples, "fse_bridge_build_info", version=bridge.__version__) == 1
        # Counts only: nothing of the patients, the messages or the documents.
        for secret in PATIENT + (b"A26-00412", b"LAB0001", b"01386030488", b"MSH|"):
            assert secret not in body, secret
    finally:
        if held is not None:
            held.close()
        yield top.stopService()


def committed(journal) -> defer.Deferred:
    """Fires once the outcomes recorded so far are committed (an ACK does not wait for its
    outcome's commit; the journal applies operations in order, so the next one's commit
    holds it). /metrics reads the last commit."""
    return journal.documents_for("", "", "")


# -- the journal closed, then gone (a handler answering at once) ---------------------------------


@pytest_twisted.inlineCallbacks
def test_metrics_say_journal_closed_then_answer_503_when_it_cannot_be_read(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        assert (yield exchange(top.mllp_port, make_oru("M1").encode()))[0] == "AA"
        journal = top.context.journal
        path = Path(journal.path)
        yield journal.close()
        # The file is still there: the counts are read, the service's journal does not answer.
        status, _, body = yield get(web.url + "metrics")
        samples = parse(body.decode())
        assert status == 200 and value(samples, "fse_bridge_journal_open") == 0
        assert value(samples, "fse_bridge_messages_total", outcome="AA") == 1

        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if leftover.exists():
                leftover.unlink()
        status, content_type, body = yield get(web.url + "metrics")
        text = body.decode()
        assert status == 503 and content_type.startswith("text/plain; version=0.0.4")
        first = text.split("\n")[0]
        assert first.startswith("# journal unreadable: journal ") and str(path) in first
        assert "unable to open database file" in first
        samples = parse(text)
        assert value(samples, "fse_bridge_journal_open") == 0
        assert family(samples, "fse_bridge_messages_total") == {}
        assert not path.exists()   # read-only: a missing journal is not created
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_scrapes_during_a_read_share_it(tmp_path):
    """A slow journal never has more than one snapshot in the thread pool."""
    top, _ = yield start(tmp_path, handler=answer_at_once)
    ctx = top.context
    run_blocking = ctx.run_blocking
    started, gate = [], defer.Deferred()

    def held(fn):
        started.append(fn)
        return gate

    try:
        yield exchange(top.mllp_port, make_oru("S1").encode())
        yield committed(ctx.journal)
        resource = MetricsResource(ctx, top.listener)
        ctx.run_blocking = held
        first, second = resource._read(), resource._read()
        assert len(started) == 1
        gate.callback(started[0]())   # the real snapshot, of the real file
        (counts_1, _), open_1 = yield first
        (counts_2, _), _ = yield second
        assert counts_1 is counts_2 and counts_1["messages"]["AA"] == 1 and open_1 is True
        ctx.run_blocking = run_blocking
        (counts_3, _), _ = yield resource._read()   # the next scrape reads again
        assert counts_3 == counts_1 and counts_3 is not counts_1
    finally:
        ctx.run_blocking = run_blocking
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_a_read_past_its_budget_answers_503_and_no_second_one_starts_beside_it(tmp_path):
    """A thread pool too busy to start the snapshot in time: 503 at the budget's end, and
    until that snapshot has left the pool the next scrapes do not queue another."""
    top, _ = yield start(tmp_path, handler=answer_at_once)
    ctx = top.context
    run_blocking = ctx.run_blocking
    queued, gate = [], defer.Deferred()

    def busy(fn):   # the pool starts nothing until the gate opens
        queued.append(fn)
        return gate

    try:
        resource = MetricsResource(ctx, top.listener, timeout_s=0.2)
        ctx.run_blocking = busy
        (counts, why), journal_open = yield resource._read()
        assert counts is None and why == "the journal's counts took too long" and journal_open is True
        status, _, body = resource._exposition(((counts, why), journal_open))
        assert status == 503 and body.startswith(b"# journal unreadable: the journal's counts took too long\n")
        (counts, why), _ = yield resource._read()
        assert counts is None and "has not finished" in why and len(queued) == 1
        # The pool gets to it at last: past its budget, it gives up at once, and frees the way.
        ran = deferToThread(queued[0])
        gate.callback(None)
        with pytest.raises(metrics.MetricsUnavailable, match="over the time budget"):
            yield ran
        # Its "finished" call reached the reactor before its result did (one queue, in order).
        assert not resource._in_pool
        ctx.run_blocking = run_blocking
        (counts, why), _ = yield resource._read()
        assert why is None and counts["messages"]["unfinished"] == 0
    finally:
        ctx.run_blocking = run_blocking
        yield top.stopService()


# -- bridge.journal.metrics.snapshot on a journal file --------------------------------------------


def _journal(tmp_path, rows) -> SqliteStore:
    """A journal file with *rows* of ``(message_type, outcome or None)``."""
    store = SqliteStore(tmp_path / "journal.db")
    store.begin()
    for n, (message_type, outcome) in enumerate(rows):
        entry = store.admit(Received(raw=b"MSH|%d" % n, msh4="F", msh10=str(n), message_type=message_type)).entry
        if outcome is not None:
            store.finish(entry.id, Outcome(code=AckCode(outcome), text=""))
    store.commit()
    return store


def test_snapshot_counts_and_bounded_labels(tmp_path):
    rows = ([("ORU^R01", "AA")] * 3 + [("ORU^R01", "CA"), ("ORU^R01", "AE"), ("ADT^A01", "AR"), ("ORU^R01", None)]
            + [(f"Z{n:02d}^X", "AR") for n in range(25)] + [('ORU^R01"\n{x="1"}', "AR"), ("", "AR")])
    store = _journal(tmp_path, rows)
    store.begin()
    store.set_state(7, "rendered")
    for operation, status in (("create", 202), ("create", 400), ("create", 503), ("replace", None),
                              ('bad"op', 201)):
        call = store.gateway_call_sent(1, operation, None)
        if status is not None or operation == "replace":
            store.gateway_call_answered(call, http_status=status)
    store.put_document(Document(structure="S", doc_type="LAB", accession="A1", document_id="D1", set_id="X",
                                state="published", message_id=1))
    store.put_document(Document(structure="S", doc_type="LAB", accession="A2", document_id="D2", set_id="Y",
                                state="deleted", message_id=1))
    store.commit()

    counts = metrics.snapshot(store.path, timeout_s=10)
    assert counts["messages"] == {"AA": 4, "AE": 1, "AR": 28, "unfinished": 1}
    by_type = counts["messages_by_type"]
    # The 20 most frequent types keep their label; a sender writing many others cannot grow the series.
    assert len(by_type) == metrics.MAX_MESSAGE_TYPES + 2 and by_type["ORU^R01"] == 6
    assert by_type["ADT^A01"] == 1 and by_type["unknown"] == 1
    # 27 well-formed types (7 past the 20 kept) and one that is not a message type at all.
    assert by_type["other"] == 7 + 1 and 'ORU^R01"\n{x="1"}' not in by_type
    assert sum(by_type.values()) == len(rows)
    assert counts["unfinished"] == {"rendered": 1}
    assert counts["gateway_calls"] == {("create", "2xx"): 1, ("create", "4xx"): 1, ("create", "5xx"): 1,
                                       ("other", "2xx"): 1, ("replace", "none"): 1}
    assert counts["documents"][("published", "LAB")] == 1 and counts["documents"][("deleted", "LAB")] == 1
    assert sum(counts["documents"].values()) == 2 and len(counts["documents"]) == 20
    store.close()


def test_snapshot_reads_the_last_commit_beside_a_writer(tmp_path):
    store = _journal(tmp_path, [("ORU^R01", "AA")] * 2)
    store.begin()   # the writer holds its write transaction, uncommitted
    store.admit(Received(raw=b"MSH|x", msh4="F", msh10="x", message_type="ORU^R01"))
    counts = metrics.snapshot(store.path, timeout_s=10)
    assert counts["messages"] == {"AA": 2, "AE": 0, "AR": 0, "unfinished": 0}
    store.commit()
    assert metrics.snapshot(store.path, timeout_s=10)["messages"]["unfinished"] == 1
    store.close()


def test_snapshot_gives_up_past_its_time_budget(tmp_path):
    # Enough rows for the clock to be looked at during the first query, well past a 1 ns budget.
    store = _journal(tmp_path, [("ORU^R01", None)] * 5000)
    with pytest.raises(metrics.MetricsUnavailable, match=r"journal .*journal\.db: over the time budget"):
        metrics.snapshot(store.path, timeout_s=1e-9)
    with pytest.raises(metrics.MetricsUnavailable, match="over the time budget"):
        metrics.snapshot(store.path, timeout_s=0)   # spent waiting for a thread: not even opened
    assert metrics.snapshot(store.path, timeout_s=10)["messages"]["unfinished"] == 5000
    store.close()


def test_snapshot_names_a_missing_or_foreign_file_and_creates_nothing(tmp_path):
    missing = tmp_path / "none" / "journal.db"
    with pytest.raises(metrics.MetricsUnavailable, match=f"journal {re.escape(str(missing))}: unable to open"):
        metrics.snapshot(missing)
    assert not missing.parent.exists()
    foreign = tmp_path / "notes.db"
    foreign.write_bytes(b"not a database" * 100)
    with pytest.raises(metrics.MetricsUnavailable, match=f"journal {re.escape(str(foreign))}: "):
        metrics.snapshot(foreign)
    import sqlite3
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(metrics.MetricsUnavailable, match="no such table: messages"):
        metrics.snapshot(other)


def test_exposition_escapes_label_values_and_comments():
    text = render_exposition(
        [("x_total", "counter", "help with \\ and\nnewline", [({"a": 'q"b\\s\nn'}, 3)]),
         ("y", "gauge", "plain", [({}, 0)])], comment="why:\nthis").decode()
    assert text.split("\n")[:2] == ["# why: this", "# HELP x_total help with \\\\ and newline"]
    samples = parse(text)
    assert samples == {("x_total", (("a", 'q"b\\s\nn'),)): 3, ("y", ()): 0}


# -- the cost with 100k messages (run by hand: FSE_METRICS_BENCH=1) --------------------------------

#: Indexes that let every family be counted from an index alone (not in schema v1/v2: the
#: report proposes them); the bench times the snapshot without and with them.
PROPOSED_INDEXES = (
    "CREATE INDEX messages_outcome_type ON messages (outcome, message_type)",
    "CREATE INDEX gateway_calls_operation_status ON gateway_calls (operation, http_status)",
    "CREATE INDEX documents_state_type ON documents (state, doc_type)",
)


@pytest.mark.skipif(not os.environ.get("FSE_METRICS_BENCH"), reason="slow: set FSE_METRICS_BENCH=1")
def test_snapshot_cost_with_100k_messages(tmp_path):
    """Builds a 100k-message journal (raw messages of about 5 KB, over a page of their own as
    most lab reports are, with a transition, an artifact, a gateway call and a document each;
    1 in 200 unfinished) and times the snapshot (warm file cache), without and with the
    proposed indexes. ``pytest -s`` prints the figures."""
    raw = (EXAMPLES / "lab.hl7").read_bytes() * 4
    store = SqliteStore(tmp_path / "journal.db")
    store.db.execute("PRAGMA synchronous=OFF")
    total = 100_000
    for start_at in range(0, total, 5000):
        store.begin()
        for n in range(start_at, start_at + 5000):
            entry = store.admit(Received(raw=raw + b"%d" % n, msh4="F", msh10=str(n),
                                         message_type=("ORU^R01", "ORU^R01", "ORM^O01", "ADT^A08")[n % 4])).entry
            store.set_state(entry.id, "rendered")
            store.add_artifact(entry.id, "render", "cda.xml", raw)
            call = store.gateway_call_sent(entry.id, ("create", "replace")[n % 2], f"D{n}")
            store.gateway_call_answered(call, http_status=202 if n % 50 else 400, problem="{}")
            if n % 200:
                store.finish(entry.id, Outcome(code=AckCode.AA if n % 50 else AckCode.AE, text="done"))
            store.put_document(Document(structure="S", doc_type=("LAB", "RAD")[n % 2], accession=f"A{n}",
                                        document_id=f"D{n}", set_id="X", state="published",
                                        message_id=entry.id))
        store.commit()

    def timed() -> list[float]:
        timings = []
        for _ in range(4):
            began = time.perf_counter()
            counts = metrics.snapshot(store.path, timeout_s=60)
            timings.append((time.perf_counter() - began) * 1000)
            assert sum(counts["messages"].values()) == total and counts["unfinished"] == {"rendered": 500}
        return timings[1:]   # the first warms the file cache

    plain = timed()
    for statement in PROPOSED_INDEXES:
        store.db.execute(statement)
    indexed = timed()
    size = os.path.getsize(store.path) / 1e6
    print(f"\n100k messages, journal {size:.0f} MB: snapshot {min(plain):.0f}-{max(plain):.0f} ms "
          f"(schema as is), {min(indexed):.0f}-{max(indexed):.0f} ms (with the proposed indexes)")
    for sql in (metrics._MESSAGES, metrics._UNFINISHED, metrics._GATEWAY_CALLS, metrics._DOCUMENTS):
        plan = store.db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
        print("  ", sql[:60], "->", "; ".join(row[-1] for row in plan))
    store.close()
