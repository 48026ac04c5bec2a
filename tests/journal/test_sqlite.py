"""SqliteStore / SqliteJournal: tables, resend rules (interface.md ACK contract), durability."""

import sqlite3

import pytest
import pytest_twisted

from bridge.journal import Admit, Document, Journal, Received, State
from bridge.journal.sqlite import SqliteJournal, SqliteStore
from bridge.model import AckCode
from bridge.outcome import ErrItem, Outcome

RAW = b"MSH|^~\\&|LIS|OSP|FSE|REG|2024||ORU^R01|C1|P|2.5\rPID|1\r"
ACK = b"MSH|^~\\&|FSE|REG|LIS|OSP|2024||ACK^R01^ACK|N1|P|2.5\rMSA|AA|C1|ok\r"


def received(raw=RAW, msh10="C1", msh4="OSP"):
    return Received(raw=raw, peer="127.0.0.1:1", msh4=msh4, msh10=msh10, message_type="ORU^R01",
                    charset="iso-8859-1")


@pytest.fixture
def store():
    s = SqliteStore(":memory:")
    yield s
    s.close()


def admit(store, r):
    store.begin()
    try:
        return store.admit(r)
    finally:
        store.commit()


def finish(store, entry_id, code, ack=ACK):
    store.begin()
    try:
        return store.finish(entry_id, Outcome(code=code, text="t"), ack)
    finally:
        store.commit()


def test_pragmas_wal_and_full_sync(tmp_path):
    s = SqliteStore(tmp_path / "j.sqlite")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()


def test_new_message_is_journaled_with_its_header_fields(store):
    a = admit(store, received())
    assert a.kind is Admit.NEW
    e = a.entry
    assert (e.raw, e.msh4, e.msh10, e.message_type, e.charset, e.state, e.peer) == \
        (RAW, "OSP", "C1", "ORU^R01", "iso-8859-1", State.RECEIVED, "127.0.0.1:1")
    assert e.received_at and not e.finished
    assert [t.state for t in store.transitions(e.id)] == ["received"]


@pytest.mark.parametrize("code", [AckCode.AA, AckCode.AE])
def test_resend_after_final_outcome_gets_stored_ack(store, code):
    first = admit(store, received()).entry
    finish(store, first.id, code)
    again = admit(store, received())
    assert again.kind is Admit.REPLAY and again.entry.id == first.id and again.entry.ack == ACK
    assert len(store.entries()) == 1


def test_resend_while_in_flight(store):
    first = admit(store, received()).entry
    again = admit(store, received())
    assert again.kind is Admit.IN_FLIGHT and again.entry.id == first.id


def test_resend_after_ar_is_processed_again(store):
    first = admit(store, received()).entry
    finish(store, first.id, AckCode.AR)
    again = admit(store, received())
    assert again.kind is Admit.NEW and again.entry.id != first.id and again.entry.resend_of == first.id


def test_same_control_id_different_bytes_is_a_conflict(store):
    first = admit(store, received()).entry
    finish(store, first.id, AckCode.AA)
    other = admit(store, received(raw=RAW + b"OBX|1\r"))
    assert other.kind is Admit.CONFLICT and other.entry.id != first.id
    # the original bytes are still a plain resend afterwards
    assert admit(store, received()).kind is Admit.REPLAY


def test_same_control_id_other_facility_is_new(store):
    admit(store, received())
    assert admit(store, received(raw=RAW.replace(b"OSP", b"ALT"), msh4="ALT")).kind is Admit.NEW


def test_no_control_id_is_never_a_resend(store):
    raw = RAW.replace(b"|C1|", b"||")
    first = admit(store, received(raw=raw, msh10=""))
    finish(store, first.entry.id, AckCode.AA)
    assert admit(store, received(raw=raw, msh10="")).kind is Admit.NEW


def test_commit_mode_ack_is_kept_and_replayed_while_unfinished(store):
    e = admit(store, received()).entry
    store.begin(); store.record_ack(e.id, ACK, "AA"); store.commit()
    assert admit(store, received()).kind is Admit.REPLAY
    assert finish(store, e.id, AckCode.AE, ack=b"other ack") == ACK
    done = store.get(e.id)
    assert done.ack == ACK and done.outcome == "AE" and done.state == State.FAILED


def test_finish_records_outcome_fields_and_transitions(store):
    e = admit(store, received()).entry
    store.begin()
    store.set_state(e.id, State.PROCESSING, "routing")
    stored = store.finish(e.id, Outcome(code=AckCode.AE, text="bad", document_id="DOC1", operation="create",
                                        x_cart_id="X1", trace_id="T1", workflow_instance_id="W1",
                                        errors=(ErrItem(code="102", text="invalid CF", location="PID^1^3"),)),
                          ACK)
    store.commit()
    done = store.get(e.id)
    assert stored == ACK
    assert (done.document_id, done.operation, done.x_cart_id, done.trace_id, done.workflow_instance_id) == \
        ("DOC1", "create", "X1", "T1", "W1")
    assert done.error == "102 PID^1^3 invalid CF" and done.ack_code == "AA" and done.outcome == "AE"
    assert [t.state for t in store.transitions(e.id)] == ["received", "processing", "failed"]
    assert store.transitions(e.id)[1].detail == "routing"


def test_find_by_id_control_id_document_and_x_cart(store):
    e = admit(store, received()).entry
    store.begin()
    store.finish(e.id, Outcome(code=AckCode.AA, document_id="2.16.840^DOC9", x_cart_id="cart-1"), ACK)
    store.commit()
    for key in (str(e.id), "C1", "2.16.840^DOC9", "cart-1"):
        assert [x.id for x in store.find(key)] == [e.id], key
    assert store.find("nothing") == []


def test_unfinished_oldest_first(store):
    a = admit(store, received(msh10="A", raw=RAW + b"A")).entry
    b = admit(store, received(msh10="B", raw=RAW + b"B")).entry
    c = admit(store, received(msh10="C", raw=RAW + b"C")).entry
    finish(store, b.id, AckCode.AA)
    assert [e.id for e in store.unfinished()] == [a.id, c.id]


def test_artifacts_gateway_calls_documents_counters(store):
    e = admit(store, received()).entry
    store.begin()
    store.add_artifact(e.id, "render", "cda.xml", b"<ClinicalDocument/>")
    call = store.gateway_call_sent(e.id, "create", "DOC1")
    assert store.gateway_calls(e.id)[0].state == "sent"
    store.gateway_call_answered(call, http_status=201, x_cart_id="X", trace_id="T", span_id="S",
                                workflow_instance_id="W", warning=None, problem='{"type": "t"}')
    doc = Document(structure="999", doc_type="LAB", accession="ACC1", document_id="DOC1", set_id="SET1",
                   message_id=e.id)
    store.put_document(doc)
    store.put_document(Document(structure="999", doc_type="LAB", accession="ACC1", document_id="DOC2",
                                set_id="SET1", version=2, state="published", message_id=e.id))
    store.commit()
    assert store.artifacts(e.id)[0].content == b"<ClinicalDocument/>"
    answered = store.gateway_calls(e.id)[0]
    assert (answered.state, answered.http_status, answered.x_cart_id, answered.problem) == \
        ("answered", 201, "X", '{"type": "t"}')
    got = store.get_document("999", "LAB", "ACC1")
    assert (got.document_id, got.version, got.state) == ("DOC2", 2, "published")
    assert store.get_document("999", "LAB", "ACC2") is None
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("INSERT INTO documents (structure, doc_type, accession, seq, document_id, set_id,"
                         " state, updated_at) VALUES ('999', 'LAB', 'ACC1', 0, 'x', 'y', 'pending', 'now')")


def test_sqlite_journal_implements_the_protocol():
    members = [m for m in vars(Journal) if not m.startswith("_")]
    assert members and all(callable(getattr(SqliteJournal, m)) for m in members)


@pytest_twisted.inlineCallbacks
def test_async_journal_is_durable_before_the_deferred_fires(tmp_path):
    from twisted.internet import reactor
    path = tmp_path / "j.sqlite"
    journal = SqliteJournal(path, reactor=reactor)
    admissions = yield _admit_many(journal)
    # Seen by a second connection: committed, not just written.
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM messages").fetchone()[0] == len(admissions) == 50
    other.close()
    assert (yield journal.finish(admissions[0].entry.id, Outcome(code=AckCode.AA), ACK)) == ACK
    assert (yield journal.get(admissions[0].entry.id)).outcome == "AA"
    yield journal.close()


@pytest_twisted.inlineCallbacks
def test_lazy_writes_keep_their_order_and_are_committed(tmp_path):
    from twisted.internet import reactor
    path = tmp_path / "j.sqlite"
    journal = SqliteJournal(path, reactor=reactor)
    admission = yield journal.admit(received())
    lazy = journal.finish(admission.entry.id, Outcome(code=AckCode.AA), ACK, urgent=False)
    # An operation submitted later sees the lazy write (a resend is a replay).
    again = yield journal.admit(received())
    assert again.kind is Admit.REPLAY and lazy.called
    lone = journal.finish((yield journal.admit(received(msh10="C2", raw=RAW + b"2"))).entry.id,
                          Outcome(code=AckCode.AE), ACK, urgent=False)
    assert (yield lone) == ACK          # committed alone after a short delay
    other = sqlite3.connect(path)
    assert other.execute("SELECT msh10, outcome FROM messages ORDER BY id").fetchall() == [("C1", "AA"),
                                                                                     ("C2", "AE")]
    other.close()
    yield journal.close()


@pytest_twisted.inlineCallbacks
def test_close_commits_pending_lazy_writes(tmp_path):
    from twisted.internet import reactor
    path = tmp_path / "j.sqlite"
    journal = SqliteJournal(path, reactor=reactor)
    admission = yield journal.admit(received())
    journal.finish(admission.entry.id, Outcome(code=AckCode.AA), ACK, urgent=False)
    yield journal.close()
    store = SqliteStore(path)
    assert store.get(admission.entry.id).outcome == "AA"
    store.close()


def test_documents_for_lists_every_seq_including_replaced(store):
    store.begin()
    for seq, state in ((1, "replaced"), (2, "published"), (3, "pending")):
        store.put_document(Document(structure="999", doc_type="LAB", accession="A1", seq=seq,
                                    document_id=f"D{seq}", set_id="S", version=seq, state=state))
    store.put_document(Document(structure="999", doc_type="LAB", accession="A2", document_id="X", set_id="X"))
    store.commit()
    assert [(d.seq, d.state) for d in store.documents_for("999", "LAB", "A1")] == \
        [(1, "replaced"), (2, "published"), (3, "pending")]


def _admit_many(journal):
    from twisted.internet import defer
    ds = [journal.admit(received(msh10=f"M{i}", raw=RAW + str(i).encode())) for i in range(50)]
    return defer.gatherResults(ds)


@pytest_twisted.inlineCallbacks
def test_async_failure_fails_only_its_operation():
    from twisted.internet import reactor
    journal = SqliteJournal(":memory:", reactor=reactor)
    good = journal.admit(received())
    bad = journal.put_document(Document(structure="999", doc_type="LAB", accession="A", document_id="D",
                                        set_id="S", state="bogus"))
    also_good = journal.get_document("999", "LAB", "A")
    entry = yield good
    with pytest.raises(sqlite3.IntegrityError):
        yield bad
    assert (yield also_good) is None
    assert (yield journal.get(entry.entry.id)).msh10 == "C1"
    yield journal.close()
