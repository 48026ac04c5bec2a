"""`fse-bridge journal list / show ID / export / resubmit ID / update-metadata ID --set K=V / purge / check`.

interface.md, "Commands".

Reads the journal the configuration names (``journal.path`` under ``state_dir``).
``show`` finds an entry by its id, control id (MSH-10), document id or X-Cart-id.
``export`` writes CSV with the header
``time,control_id,message_type,state,document_id,operation,outcome,x_cart_id``.

``purge`` applies the retention (``journal.keep_artifacts_days``,
``keep_messages_days``, or ``--before DATE``) now, in short transactions: safe
beside a running service (WAL, busy timeout). Purged content shows as
"purged on DATE".

``update-metadata`` asks the running service to make the call (the status page's
operator endpoint, bridge.web.operator), so it waits for any correction or cancellation of
the same accession the service is processing; with no service running (no
``web.url`` in ``state_dir``, or nobody listening there) it calls the gateway itself.

``resubmit`` journals an entry's bytes again as a new entry (``resend_of`` it). With the
service running, the service does it and processes the new entry at once; the command
prints the outcome and exits 0 when it is AA, else 1. With no service running, the entry
is journaled from here and processed at the service's next start.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import json
import socket
import sqlite3
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bridge.commands._common import load_config
from bridge.errors import BridgeError, ExitCode
from bridge.gateway.client import GatewayClient, OutcomeClass
from bridge.gateway.identifiers import new_submission_id
from bridge.journal import ArtifactName, ArtifactStage, DocumentState
from bridge.journal.retention import cutoffs
from bridge.journal.sqlite import SqliteStore
from bridge.publish import metadata
from bridge.publish.context import gateway_url
from bridge.publish.pipeline import MetadataCall, submission_record
from bridge.publish.record import alert_for, answer_fields
from bridge.web.operator import TOKEN_FILE, URL_FILE, metadata_answer

#: How long update-metadata waits for the running service (which may first wait for the accession's lock).
SERVICE_TIMEOUT_S = 300.0

EXPORT_HEADER = ["time", "control_id", "message_type", "state", "document_id", "operation", "outcome",
                 "x_cart_id"]


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name, help_text):
        sub = actions.add_parser(name, help=help_text, description=help_text)
        # --config after the action too (the top-level one stays the default).
        sub.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file")
        return sub

    listing = action("list", "newest entries first: id, time, control id, type, state, outcome, document id")
    listing.add_argument("--limit", type=int, default=50)
    show = action("show", "one entry (by id, control id, document id or X-Cart-id) with its history")
    show.add_argument("key")
    show.add_argument("--raw", action="store_true", help="also print the message itself (patient data!)")
    export = action("export", "all entries as CSV")
    export.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    resubmit = action("resubmit", "journal the entry's bytes again as a new entry and have the running service "
                      "process it now (no service running: it processes it at its next start)")
    resubmit.add_argument("key", help="journal entry id, control id, document id or X-Cart-id")
    resubmit.add_argument("--timeout", type=float, default=SERVICE_TIMEOUT_S, metavar="SECONDS",
                          help="how long to wait for the running service to process it "
                               f"(default {SERVICE_TIMEOUT_S:.0f})")
    update = action("update-metadata", "update a published document's metadata at the gateway "
                    "(PUT documents/{id}/metadata)")
    update.add_argument("key", help="journal entry id, control id, document id or X-Cart-id")
    update.add_argument("--set", dest="settings", metavar="KEY=VALUE", action="append", required=True,
                        help="a gateway field: tipologiaStruttura, assettoOrganizzativo, tipoAttivitaClinica, "
                             "tipoDocumentoLivAlto, administrativeRequest, dataInizioPrestazione, "
                             "dataFinePrestazione, attiCliniciRegoleAccesso (e.g. P99), descriptions, "
                             "conservazioneANorma; lists comma-separated")
    update.add_argument("--timeout", type=float, default=SERVICE_TIMEOUT_S, metavar="SECONDS",
                        help="how long to wait for the running service's answer (it waits for any "
                             f"publication of the same accession in progress; default {SERVICE_TIMEOUT_S:.0f})")
    purge = action("purge", "empty the artifact contents and raw messages older than the retention "
                   "(journal.keep_artifacts_days, keep_messages_days) and print what went")
    purge.add_argument("--dry-run", action="store_true", help="only count what would go")
    purge.add_argument("--before", metavar="DATE", type=_date,
                       help="purge what is older than DATE (YYYY-MM-DD, or an ISO 8601 time; UTC unless "
                            "it says otherwise) instead of the configured retention")
    purge.add_argument("--vacuum", action="store_true",
                       help="then give the free space back to the disk (VACUUM): only with the service "
                            "stopped, and free disk as large as the journal")


    action("check", "SQLite's full integrity check of the journal (the service runs a quick one at start); "
           "exit 4 when it is damaged")


def open_store(args):
    path = load_config(args).journal.path
    if not Path(path).is_file():
        raise BridgeError(f"no journal at {path}")
    return SqliteStore(path)


def run(args) -> int:
    if args.action == "update-metadata":
        return _update_metadata(args)
    if args.action == "resubmit":
        return _resubmit(args)
    store = open_store(args)
    try:
        actions = {"list": _list, "show": _show, "export": _export, "purge": _purge, "check": _check}
        return actions[args.action](store, args)
    finally:
        store.close()


def _check(store, args) -> int:
    """The full check reads every page: slow on a large journal, harmless beside the service."""
    problems = store.integrity()
    if not problems:
        count = store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        print(f"journal {store.path}: ok ({count} messages)")
        return ExitCode.DONE
    print(f"journal {store.path}: damaged ({len(problems)} problems), the first ones:")
    for problem in problems[:20]:
        print(f"  {problem}")
    print("Stop the service, keep a copy of the file (with its -wal and -shm files), and restore the "
          "journal from the last backup; with no backup, move it aside and the service starts a new one.")
    return ExitCode.JOURNAL_DAMAGED


def _list(store, args) -> int:
    print(f"{'id':>6}  {'received':<26}  {'control id':<22} {'type':<9} {'state':<10} {'outcome':<7} document id")
    for e in store.entries(limit=args.limit):
        print(f"{e.id:>6}  {e.received_at[:26]:<26}  {e.msh10[:22]:<22} {e.message_type[:9]:<9} "
              f"{e.state[:10]:<10} {e.outcome or '':<7} {e.document_id or ''}")
    return 0


def _find_one(store, key):
    found = store.find(key)
    if not found:
        raise BridgeError(f"no journal entry matches {key!r}")
    return found


def _show(store, args) -> int:
    for e in _find_one(store, args.key):
        print(f"entry {e.id}")
        for name in ("received_at", "peer", "msh4", "msh10", "message_type", "charset", "state", "outcome",
                     "ack_code", "document_id", "operation", "x_cart_id", "trace_id", "workflow_instance_id",
                     "error", "resend_of", "updated_at"):
            value = getattr(e, name)
            if value not in (None, ""):
                print(f"  {name}: {value}")
        print("  transitions:")
        for t in store.transitions(e.id):
            print(f"    {t.at}  {t.state}  {t.detail}".rstrip())
        for a in store.artifacts(e.id):
            if a.purged_at:
                print(f"  artifact: {a.stage}/{a.name} (purged on {a.purged_at[:10]}, made {a.at})")
            else:
                print(f"  artifact: {a.stage}/{a.name} ({len(a.content)} bytes, {a.at})")
        for c in store.gateway_calls(e.id):
            print(f"  gateway call {c.id}: {c.operation} {c.document_id or ''} {c.state} "
                  f"HTTP {c.http_status or '-'} X-Cart-id {c.x_cart_id or '-'} at {c.at}")
        if e.ack:
            print("  ack: " + e.ack.decode(e.charset or "iso-8859-1", "replace").replace("\r", "\n       ").rstrip())
        if e.purged_at:
            print(f"  message: purged on {e.purged_at[:10]}")
        elif args.raw:
            print("  message: " + e.raw.decode(e.charset or "iso-8859-1", "replace")
                  .replace("\r", "\n           ").rstrip())
    return 0


def _export(store, args) -> int:
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(EXPORT_HEADER)
        for e in store.all_entries():
            writer.writerow([e.received_at, e.msh10, e.message_type, e.state, e.document_id or "",
                             e.operation or "", e.outcome or "", e.x_cart_id or ""])
    finally:
        if args.out:
            out.close()
    return 0


def _resubmit(args) -> int:
    """Processed now by the running service if there is one, else journaled for its next start."""
    config = load_config(args)
    answer = _ask_service(config, "resubmit", {"target": args.key}, timeout=args.timeout, what="resubmit",
                          meanwhile="the new entry may still be processed")
    if answer is not None:
        print(answer["summary"])
        return ExitCode.DONE if answer["outcome"] == "AA" else ExitCode.FAILED
    store = open_store(args)
    try:
        return _resubmit_for_next_start(store, args.key)
    finally:
        store.close()


def _resubmit_for_next_start(store, key: str) -> int:
    found = _find_one(store, key)
    if len(found) > 1:
        raise BridgeError(f"{key!r} matches entries {', '.join(str(e.id) for e in found)}: give the id")
    if found[0].purged_at:
        raise BridgeError(f"entry {found[0].id}: the message was purged on {found[0].purged_at[:10]}; "
                          "ask the sender to send it again")
    store.begin()
    entry = store.resubmit(found[0].id)
    store.commit()
    print(f"entry {entry.id} journaled from entry {found[0].id}; no service is running: it processes "
          "the entry at its next start")
    return 0


def _date(text: str):
    """``--before``: a date (midnight UTC) or an ISO 8601 time (UTC when it names no offset)."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD) or ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _purge(store, args) -> int:
    """Now, in batches; the same rules as the service's daily purge (bridge.journal.retention)."""
    if args.vacuum and not args.dry_run:
        _refuse_if_service_runs(load_config(args))
    if args.before is not None:
        if args.before > store.clock():
            raise BridgeError(f"--before {args.before.isoformat()} is in the future")
        artifacts_before = messages_before = args.before
    else:
        artifacts_before, messages_before = cutoffs(load_config(args).journal, store.clock())
    report = store.purge(artifacts_before=artifacts_before, messages_before=messages_before, dry_run=args.dry_run)
    print(report.summary())
    if args.vacuum and not args.dry_run:
        size = Path(store.path).stat().st_size
        try:
            store.vacuum()
        except sqlite3.Error as error:
            raise BridgeError(f"VACUUM of {store.path} failed ({error}): the journal is as it was") from None
        print(f"journal file {size / 1e6:.1f} MB, now {Path(store.path).stat().st_size / 1e6:.1f} MB")
    elif not args.dry_run and report.total_bytes:
        print("the file keeps its size: later writes reuse the space; to give it back to the disk, "
              "stop the service and run `fse-bridge journal purge --vacuum`")
    return 0


def _refuse_if_service_runs(config) -> None:
    """VACUUM holds the journal's write lock for as long as it rewrites the file: a running
    service's writes would fail. The service is running when its status page (``web.url`` in
    state_dir, written at start and removed at stop) accepts a connection."""
    try:
        url = urllib.parse.urlsplit((config.state_dir / URL_FILE).read_text().strip())
        address = (url.hostname, url.port)
    except (OSError, ValueError):
        return
    try:
        with socket.create_connection(address, timeout=2):
            pass
    except OSError:
        return   # a file left behind by a killed service
    raise BridgeError(f"the service is running (status page at {url.geturl()}): stop it before --vacuum")


def _update_metadata(args) -> int:
    """Through the running service if there is one, else in this process."""
    config = load_config(args)
    answer = _ask_service(config, "metadata", {"target": args.key, "settings": args.settings},
                          timeout=args.timeout, what="update", meanwhile="the update may still be made")
    if answer is not None:
        return _print_call(answer)
    store = open_store(args)
    try:
        return _print_call(_update_in_process(store, config, args.key, args.settings))
    finally:
        store.close()


def _print_call(answer: dict) -> int:
    print(answer["summary"])
    if answer.get("warning"):
        print(f"warning: {answer['warning']}")
    print(f"journaled under entry {answer['entry']}")
    return ExitCode.DONE if answer["ok"] else ExitCode.FAILED


def _ask_service(config, action: str, payload: dict, *, timeout: float, what: str,
                 meanwhile: str) -> dict | None:
    """The running service's answer to ``POST /operator/<action>`` with the JSON *payload*
    (bridge.web.operator.metadata_answer, resubmit_answer), or None when no service runs.

    No service: no ``web.url`` or token in state_dir, or nobody listening at the URL (a
    service killed leaves them behind). A service that answers but refuses is a BridgeError
    (*what* names the request): it must not then be carried out behind its back. *meanwhile*:
    what may still happen when the answer does not come in *timeout* seconds.
    """
    try:
        url = (config.state_dir / URL_FILE).read_text().strip()
        token = (config.state_dir / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise BridgeError(f"a service is running but its operator token is not readable "
                          f"({error.strerror}): run this as the service's user") from None
    request = urllib.request.Request(
        url + f"operator/{action}", method="POST", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    # Never through a proxy: the service is on this host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except ValueError:
        raise BridgeError(f"{config.state_dir / URL_FILE} does not hold the service's URL ({url[:60]!r})") from None
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        raise BridgeError(f"the running service at {url} did not answer: {error.reason}") from None
    except OSError as error:   # a timeout or a reset while waiting for the answer
        raise BridgeError(f"the running service at {url} did not answer ({error or type(error).__name__}): "
                          f"{meanwhile}; see `journal show`") from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise BridgeError(f"the running service at {url} answered HTTP {status} without a JSON body")
    if "summary" not in answer:
        raise BridgeError(f"the running service refused the {what} (HTTP {status}): "
                          f"{answer.get('error', 'no reason given')}")
    return answer


def _update_in_process(store, config, key: str, settings: list[str]) -> dict:
    """One metadata call from this process, journaled under the entry that published the document."""
    found = _find_one(store, key)
    document_id = next((e.document_id for e in reversed(found) if e.document_id), None)
    if document_id is None:
        raise metadata.UnknownTarget(f"{key!r} names no published document")
    document = store.find_document(document_id)
    if document is None or document.state != DocumentState.PUBLISHED:
        state = document.state if document else "unknown"
        raise metadata.NotCurrentVersion(f"{document_id} is not the published version ({state}): "
                                         "metadata can be updated only on the current version")
    sub, entry_id = metadata.submission_for(store, document)
    sub = metadata.apply_settings(sub, settings, submission_id=new_submission_id())

    async def call():
        client = GatewayClient.from_config(config, sleep=asyncio.sleep, base_url=gateway_url(config))
        async with client:
            return await client.metadata(sub)

    store.begin()
    call_id = store.gateway_call_sent(entry_id, "metadata", document_id)
    store.add_artifact(entry_id, ArtifactStage.METADATA, ArtifactName.METADATA_REQUEST,
                       json.dumps(submission_record(sub)).encode())
    store.commit()
    result = asyncio.run(call())
    store.begin()
    for index, attempt in enumerate(result.attempts):
        if index:
            call_id = store.gateway_call_sent(entry_id, "metadata", document_id)
        store.gateway_call_answered(call_id, **answer_fields(attempt))
    if result.outcome_class is OutcomeClass.PUBLISHED:
        # What the gateway took: the next update starts from it (bridge.publish.metadata.submission_for).
        store.add_artifact(entry_id, metadata.APPLIED_STAGE, ArtifactName.SUBMISSION,
                           json.dumps(submission_record(sub)).encode())
    store.commit()
    alert_for(result, f"entry {entry_id}")
    return metadata_answer(MetadataCall(entry_id=entry_id, result=result))[1]
