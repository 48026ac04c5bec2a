"""Issue 6 acceptance: SIGKILL of the server during a run of messages, restarted each time.

A seeded workload of N messages (every type; create, correction, identical resend,
preliminary, cancellation) over several accessions is sent by three senders at once,
each sender owning its accessions and sending them in order, as a LIS does: one
message, wait for its ACK; when the connection breaks, reconnect and send the same
bytes again. The server is killed with SIGKILL at seeded moments (after a seeded
number of answers), once in each journal stage (in a seeded order; the server is
stopped, the journal read, and killed only with an entry in that stage, which the
test checks in the entry's state history at the end) and once at once, and started
again on the same state (journal, simulator registry, certificates).

At the end every message has an ACK, the simulator's registry holds exactly the
document sets and versions the messages call for (nothing published twice, no
version lost), and the journal's registry agrees with it.

FSE_E2E_SEED sets the seed (printed on every run); FSE_E2E_MESSAGES the number of messages.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest

from bridge.mllp.protocol import MllpDecoder, frame

from .e2e_kit import Ack, Bridge, accession_of, chains, document_message, poll
from .test_e2e_chains import doc_id

TYPES = ("LAB", "RAD", "RSA", "RAP", "LDO")
SENDERS = 3
ACCESSIONS = 12
#: Journal states a kill lands in, one kill each (None: kill at once).
STAGES = ("received", "routed", "rendered", "packaged", "submitting", None)
KILLS = len(STAGES)


@dataclass
class Step:
    """One message of the workload and what it should do to its accession."""

    index: int
    doc_type: str
    accession: str
    control_id: str
    status: str
    variant: int
    effect: str
    """create | replace | delete | none (preliminary, identical, nothing to delete)."""
    payload: bytes = b""
    ack: Ack | None = None


@dataclass
class Accession:
    doc_type: str
    name: str
    sender: int
    live: int | None = None
    """The variant currently published, None when nothing is."""
    sets: list[list] = field(default_factory=list)
    """Expected simulator sets: [versions, final status]."""


def plan(rng: random.Random, count: int, tag: str) -> tuple[list[Step], dict[str, Accession]]:
    """The workload and, per accession, the document sets it must leave at the gateway."""
    accessions = {}
    for i in range(ACCESSIONS):
        name = f"{tag}-{i:02d}"
        accessions[name] = Accession(TYPES[i % len(TYPES)], name, sender=i % SENDERS)
    steps, variants = [], 0
    for index in range(count):
        acc = accessions[rng.choice(sorted(accessions))]
        roll = rng.random()
        if acc.live is None:
            status, kind = ("P", "none") if roll < 0.1 else ("X", "none") if roll < 0.2 else \
                ("C", "create") if roll < 0.35 else ("F", "create")
        else:
            status, kind = ("P", "none") if roll < 0.1 else ("X", "delete") if roll < 0.25 else \
                ("F", "none") if roll < 0.4 else ("C", "replace")
        variant = 0
        if kind in ("create", "replace"):
            variants += 1
            variant = variants
        elif status in ("F", "C", "P"):
            variant = acc.live or 0       # an identical resend (or a preliminary of the same)
        if kind == "create":
            acc.sets.append([1, "current"])
        elif kind == "replace":
            acc.sets[-1][0] += 1
        elif kind == "delete":
            acc.sets[-1][1] = "deleted"
        acc.live = None if kind == "delete" else variant if kind in ("create", "replace") else acc.live
        control_id = f"{tag}{index:04d}"
        payload = document_message(acc.doc_type, control_id, acc.name, status=status, variant=variant).encode()
        steps.append(Step(index, acc.doc_type, acc.name, control_id, status, variant, kind, payload))
    return steps, accessions


class Run:
    """Senders and the killer share the server's generation (one per start)."""

    def __init__(self, bridge: Bridge, steps: list[Step], accessions: dict[str, Accession]):
        self.bridge = bridge
        self.generation = 0
        self.port = bridge.port
        self.answered = 0
        self.done = 0
        self.errors: list[str] = []
        self.condition = threading.Condition()
        self.queues = [[s for s in steps if accessions[s.accession].sender == i] for i in range(SENDERS)]

    def restarted(self) -> None:
        with self.condition:
            self.generation += 1
            self.port = self.bridge.port
            self.condition.notify_all()

    def send(self, sender: int) -> None:
        try:
            self._send(self.queues[sender])
        except Exception as exc:  # reported by the test, with the seed
            self.errors.append(f"sender {sender}: {exc!r}")
        finally:
            with self.condition:
                self.done += 1
                self.condition.notify_all()

    def _send(self, queue: list[Step]) -> None:
        sock, generation, decoder = None, -1, None
        for step in queue:
            while step.ack is None:
                if sock is None:
                    with self.condition:
                        generation, port = self.generation, self.port
                    try:
                        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                        decoder = MllpDecoder(1 << 24)
                    except OSError:
                        self._wait_for_restart(generation)
                        continue
                try:
                    sock.sendall(frame(step.payload))
                    frames: list[bytes] = []
                    while not frames:
                        data = sock.recv(65536)
                        if not data:
                            raise ConnectionResetError("closed by the server")
                        frames = list(decoder.feed(data))
                    step.ack = Ack.parse(frames[0])
                    with self.condition:
                        self.answered += 1
                        self.condition.notify_all()
                except OSError:     # reset, refused, closed, timed out: the server went away
                    sock.close()
                    sock = None
                    self._wait_for_restart(generation)
        if sock is not None:
            sock.close()

    def _wait_for_restart(self, generation: int) -> None:
        """The server went away: wait for its next start (a real condition, bounded)."""
        with self.condition:
            if not self.condition.wait_for(lambda: self.generation > generation, timeout=90):
                raise AssertionError("the connection broke and the server was not started again")


def in_stage(bridge: Bridge, stage: str) -> list[int]:
    """The unfinished entries whose newest journaled state is *stage*."""
    return [r["id"] for r in bridge.query(
        "SELECT m.id FROM messages m WHERE m.outcome IS NULL AND (SELECT t.state FROM transitions t"
        " WHERE t.message_id = m.id ORDER BY t.id DESC LIMIT 1) = ?", stage)]


def kill_in_stage(bridge: Bridge, run: "Run", stage: str, context: str) -> list[int]:
    """SIGKILL the server while an entry's newest journaled state is *stage*; those entries.

    Once the journal shows one, the server is stopped (SIGSTOP: nothing moves on) and, if the entry
    is still there, killed; the journal is then read as the restart will find it (a commit being
    written at the stop counts). Without an entry left in *stage*, the server goes on, or is started
    again, for another try."""
    for _ in range(20):
        poll(lambda: in_stage(bridge, stage), 60, f"an entry in state {stage} {context}", interval=0.002)
        bridge.proc.send_signal(signal.SIGSTOP)
        if not in_stage(bridge, stage):
            bridge.proc.send_signal(signal.SIGCONT)
            continue
        bridge.kill()
        caught = in_stage(bridge, stage)
        if caught:
            return caught
        bridge.start()
        run.restarted()
    raise AssertionError(f"no kill landed in state {stage} {context}")


def test_sigkill_at_random_moments_loses_nothing_and_publishes_nothing_twice(tmp_path):
    seed = int(os.environ.get("FSE_E2E_SEED") or random.SystemRandom().randrange(1 << 32))
    count = int(os.environ.get("FSE_E2E_MESSAGES") or 200)
    print(f"crash recovery: FSE_E2E_SEED={seed} FSE_E2E_MESSAGES={count}")
    rng = random.Random(seed)
    tag = f"K{seed % 100000:05d}"
    steps, accessions = plan(rng, count, tag)
    kills = sorted(rng.sample(range(count // 10, count - count // 10), KILLS))
    stages = rng.sample(STAGES, KILLS)
    context = f"(FSE_E2E_SEED={seed}, kills after {kills} answers at {stages})"

    bridge = Bridge(tmp_path / "state").start()
    run = Run(bridge, steps, accessions)
    threads = [threading.Thread(target=run.send, args=(i,), daemon=True) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    caught = {}     # stage: the entries a kill caught in it
    try:
        for after, stage in zip(kills, stages):
            with run.condition:
                assert run.condition.wait_for(lambda: run.answered >= after or run.done == SENDERS, timeout=120), \
                    f"no progress {context}"
            if stage is None:
                bridge.kill()
            else:
                caught[stage] = kill_in_stage(bridge, run, stage, context)
            bridge.start()
            run.restarted()
        for thread in threads:
            thread.join(180)
        assert not any(t.is_alive() for t in threads), f"senders did not finish {context}"
        assert run.errors == [], f"{run.errors} {context}"

        # Every message answered; without gateway faults, every answer is AA.
        refused = [f"{s.control_id}: {s.ack}" for s in steps if s.ack is None or s.ack.code != "AA"]
        assert refused == [], f"{refused} {context}"
        # Every entry ends with an outcome (the last outcomes may still be committing).
        poll(lambda: not bridge.query("SELECT id FROM messages WHERE outcome IS NULL"), 30, "every outcome")
        # A kill landed in every stage: in each caught entry's state history that stage is followed
        # by the restart's routing of it again, and the entry has its outcome.
        assert sorted(caught) == sorted(s for s in STAGES if s), context
        for stage, entries in caught.items():
            for entry in entries:
                history = [r["state"] for r in bridge.query(
                    "SELECT state FROM transitions WHERE message_id = ? ORDER BY id", entry)]
                assert (stage, "routed") in zip(history, history[1:]), f"{entry}: {history} {context}"
                [row] = bridge.query("SELECT outcome FROM messages WHERE id = ?", entry)
                assert row["outcome"] == "AA", f"{entry}: {history} {context}"

        registry = bridge.registry()
        # No two registry documents for the same set and version, no id created twice.
        assert not [k for k, n in Counter((d["set_id"], d["version"]) for d in registry).items() if n > 1], context
        created = Counter(c["document_id"] for c in bridge.query(
            "SELECT document_id FROM gateway_calls WHERE operation = 'create' AND http_status BETWEEN 200 AND 299"))
        assert [d for d, n in created.items() if n > 1] == [], context
        # Per accession: exactly the expected sets, versions 1..n, earlier versions replaced.
        for name, acc in accessions.items():
            actual = [[len(chain), chain[-1]["status"]] for chain in chains(registry, name)]
            assert actual == acc.sets, f"{name}: {actual} != {acc.sets} {context}"
            for chain in chains(registry, name):
                assert [d["version"] for d in chain] == list(range(1, len(chain) + 1)), context
                assert all(d["status"] == "replaced" for d in chain[:-1]), context
        assert {accession_of(d["id"]) for d in registry} <= set(accessions)

        # The journal's registry agrees with the gateway's; pending ids never reached it.
        states = {"current": "published", "replaced": "replaced", "deleted": "deleted"}
        at_gateway = {d["id"]: states[d["status"]] for d in registry}
        journal = {r["document_id"]: r["state"] for r in bridge.query("SELECT document_id, state FROM documents")}
        assert {i: s for i, s in journal.items() if s != "pending"} == at_gateway, context
        assert not {i for i, s in journal.items() if s == "pending"} & set(at_gateway), context
        assert bridge.stop() == 0
    finally:
        if bridge.proc.poll() is None:
            bridge.kill()
    print(f"crash recovery: {count} messages, {KILLS} kills, {len(registry)} documents, entries caught "
          f"by a kill per stage {caught} {context}")


# -- kills at a known moment: the gateway call has left and its answer has not come back ----------


@pytest.fixture(scope="module")
def killed_bridge(tmp_path_factory):
    bridge = Bridge(tmp_path_factory.mktemp("killed")).start()
    yield bridge
    assert bridge.stop() == 0, bridge.log()[-4000:]


def _kill_during_call(bridge: Bridge, message, fault: dict, landed) -> Ack:
    """Send *message* while the simulator holds its call's answer (*fault*), SIGKILL the server once
    the call is journaled as sent and *landed* holds, start it again and send the same bytes again."""
    bridge.faults(fault)
    control_id = message.get("MSH", 10)
    sender = bridge.connect()
    sender.send(message)
    poll(lambda: bridge.query("SELECT 1 FROM messages m JOIN gateway_calls c ON c.message_id = m.id"
                              " WHERE m.msh10 = ? AND c.state = 'sent'", control_id), 20, "the call to leave")
    poll(landed, 20, "the simulator to have the request")
    bridge.kill()
    assert sender.receive() is None     # the connection died with the server: no ACK
    sender.close()
    bridge.start()
    return bridge.exchange(message)


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
def test_kill_while_a_create_is_at_the_gateway(killed_bridge, unique, landed):
    bridge = killed_bridge
    accession = unique("KC-")
    first = doc_id("LAB", accession, 1)
    # "answer" processes the request and holds the answer; "reset" holds the request unprocessed.
    fault = {"operation": "create", "delay_s": 120.0, "action": "answer" if landed else "reset"}
    ack = _kill_during_call(bridge, document_message("LAB", unique("KC"), accession), fault,
                            lambda: (any(d["id"] == first for d in bridge.registry()) if landed else
                                     any(r["operation"] == "create" for r in bridge.requests())))
    assert ack.code == "AA" and ack.x_cart_id and ack.errors[0]["text"] == f"published {first}", ack
    [chain] = chains(bridge.registry(), accession)
    assert [(d["id"], d["status"]) for d in chain] == [(first, "current")]
    calls = bridge.calls(bridge.finished(ack.control_id)["id"])
    # The first call never got its answer; the resend is reconciled (409: it had landed) or created.
    assert [c["http_status"] for c in calls][0] is None and len(calls) == 2
    assert calls[1]["http_status"] == 409 if landed else 200 <= calls[1]["http_status"] < 300
    assert [(d["seq"], d["state"]) for d in bridge.documents(accession)] == [(1, "published")]


def test_kill_while_a_replace_or_delete_is_at_the_gateway(killed_bridge, unique):
    bridge = killed_bridge
    accession = unique("KR-")
    first, second = doc_id("RSA", accession, 1), doc_id("RSA", accession, 2)
    assert bridge.exchange(document_message("RSA", unique("KR"), accession)).code == "AA"

    def status_of(document_id):
        return lambda: next((d["status"] for d in bridge.registry() if d["id"] == document_id), None)

    ack = _kill_during_call(bridge, document_message("RSA", unique("KR"), accession, status="C", variant=1),
                            {"operation": "replace", "delay_s": 120.0}, lambda: status_of(first)() == "replaced")
    assert ack.code == "AA" and ack.errors[0]["text"] == f"replaced {second}", ack
    assert [c["http_status"] for c in bridge.calls(bridge.finished(ack.control_id)["id"])] == [None, 404]

    ack = _kill_during_call(bridge, document_message("RSA", unique("KR"), accession, status="X"),
                            {"operation": "delete", "delay_s": 120.0}, lambda: status_of(second)() == "deleted")
    assert ack.code == "AA" and ack.errors[0]["text"] == f"deleted {second}", ack
    [chain] = chains(bridge.registry(), accession)
    assert [(d["id"], d["status"]) for d in chain] == [(first, "replaced"), (second, "deleted")]
    assert [(d["seq"], d["state"]) for d in bridge.documents(accession)] == [(1, "replaced"), (2, "deleted")]
    # After the recovered delete, a new publication starts a new set.
    ack = bridge.exchange(document_message("RSA", unique("KR"), accession, variant=2))
    assert ack.code == "AA" and ack.errors[0]["text"] == f"published {doc_id('RSA', accession, 3)}", ack


# -- the windows a kill can hit after the gateway's answer, made on purpose in the journal -----------


def _while_stopped(bridge: Bridge, *statements) -> None:
    """Stop the server, change its journal as a kill at a precise moment would have left it, start it."""
    assert bridge.stop() == 0
    db = sqlite3.connect(bridge.state_dir / "journal.sqlite")
    with db:
        for sql, params in statements:
            db.execute(sql, params)
    db.close()
    bridge.start()


def test_answered_message_whose_outcome_was_lost_does_not_undo_later_ones(killed_bridge, unique):
    """The ACK goes out before the outcome's commit: a kill in between makes the restart process the
    message again, after later messages of its accession were published."""
    bridge = killed_bridge
    accession = unique("LOSTOUT-")
    assert bridge.exchange(document_message("RAP", unique("LO"), accession, variant=1)).x_cart_id
    same = bridge.exchange(document_message("RAP", unique("LO"), accession, variant=1))
    assert same.text.startswith("already published"), same
    assert bridge.exchange(document_message("RAP", unique("LO"), accession, status="C", variant=2)).x_cart_id
    _while_stopped(bridge, ("UPDATE messages SET outcome = NULL WHERE msh10 = ?", (same.control_id,)))
    entry = bridge.finished(same.control_id)
    assert entry["operation"] == "ignore" and bridge.calls(entry["id"]) == []
    assert bridge.requests() == []
    [chain] = chains(bridge.registry(), accession)
    assert [(d["version"], d["status"]) for d in chain] == [(1, "replaced"), (2, "current")]


def test_gateway_success_recorded_but_not_the_registry_update(killed_bridge, unique):
    """A kill after the gateway's answer is journaled and before the registry rows change: the
    restart settles the rows from the journaled answer, without another call."""
    bridge = killed_bridge
    accession = unique("SETTLE-")
    first, second = doc_id("LDO", accession, 1), doc_id("LDO", accession, 2)
    assert bridge.exchange(document_message("LDO", unique("ST"), accession)).x_cart_id
    ack = bridge.exchange(document_message("LDO", unique("ST"), accession, status="C", variant=3))
    assert ack.errors[0]["text"] == f"replaced {second}", ack
    _while_stopped(bridge,
                   ("UPDATE messages SET outcome = NULL WHERE msh10 = ?", (ack.control_id,)),
                   ("UPDATE documents SET state = 'pending' WHERE document_id = ?", (second,)),
                   ("UPDATE documents SET state = 'published' WHERE document_id = ?", (first,)))
    entry = bridge.finished(ack.control_id)
    assert (entry["outcome"], entry["operation"], entry["x_cart_id"]) == ("AA", "replace", ack.x_cart_id)
    assert bridge.requests() == []
    assert [(d["seq"], d["state"]) for d in bridge.documents(accession)] == [(1, "replaced"), (2, "published")]
    # The next correction replaces version 2.
    ack = bridge.exchange(document_message("LDO", unique("ST"), accession, status="C", variant=4))
    assert ack.errors[0]["text"] == f"replaced {doc_id('LDO', accession, 3)}", ack
