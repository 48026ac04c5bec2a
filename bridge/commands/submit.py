"""`fse-bridge submit FILE.pdf --op create|replace|delete|metadata`: one gateway call by hand.

The document id, type and patient are read from the ``cda.xml`` inside the
PDF (as the gateway reads them) unless given; the rest of the request body
comes from the options (gateway.md section 4 value sets). Prints the HTTP
status, the X-Cart-id, the answer body and the outcome class of every
attempt. Exit status: 0 published, 1 refused or not now, 2 usage or
configuration error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bridge import certs
from bridge.commands._common import load_config
from bridge.errors import ConfigError, ExitCode
from bridge.gateway import GatewayClient, Submission, identifiers, valuesets
from bridge.model import DocumentType
from bridge.simulator import cdaread, pdfcheck


def add_arguments(parser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE.pdf",
                        help="the signed PDF with cda.xml (needed for create and replace)")
    parser.add_argument("--op", required=True, choices=["create", "replace", "delete", "metadata"])
    parser.add_argument("--id", dest="document_id", metavar="ID",
                        help="identificativoDoc (default: ClinicalDocument/id of the CDA, root^extension); "
                             "for delete/metadata: the id in the path")
    parser.add_argument("--old-id", metavar="ID", help="replace: the id being replaced (in the path)")
    parser.add_argument("--type", type=str.upper, choices=[t.name for t in DocumentType],
                        help="document type (default: from the CDA's code)")
    parser.add_argument("--patient", metavar="CF", help="patient fiscal code (default: from the CDA)")
    parser.add_argument("--patient-root", default=valuesets.FISCAL_CODE_ROOT, metavar="OID")
    parser.add_argument("--facility", default="Territorio", choices=sorted(valuesets.FACILITY_TYPES),
                        help="tipologiaStruttura (default Territorio)")
    parser.add_argument("--practice-setting", default="AD_PSC100", metavar="AD_PSCnnn",
                        help="assettoOrganizzativo (default AD_PSC100)")
    parser.add_argument("--activity", default="ERP", choices=sorted(valuesets.CLINICAL_ACTIVITIES),
                        help="tipoAttivitaClinica (default ERP)")
    parser.add_argument("--admin-request", action="append", default=[],
                        choices=sorted(valuesets.ADMINISTRATIVE_REQUESTS),
                        help="administrativeRequest (repeatable; default SSN)")
    parser.add_argument("--start", metavar="yyyyMMddHHmmss", help="dataInizioPrestazione")
    parser.add_argument("--end", metavar="yyyyMMddHHmmss", help="dataFinePrestazione")
    parser.add_argument("--event-code", action="append", default=[], help="attiCliniciRegoleAccesso (repeatable)")
    parser.add_argument("--submission-id", metavar="N", type=int,
                        help="n of identificativoSottomissione 2.16.840.1.113883.2.9.2.90.4.3.<n> "
                             "(default: a fresh random 96-bit n, as the service draws them)")
    parser.add_argument("--workflow-instance-id", help="replace: workflowInstanceId of the replaced document")
    parser.add_argument("--resend", action="store_true",
                        help="an earlier identical call may have landed (409/404 then count as done)")
    parser.add_argument("--url", help="gateway base URL (required when gateway.base_url is 'embedded': "
                                      "give the URL printed by `fse-bridge simulator`)")


def _fail(message: str) -> int:
    print(f"fse-bridge submit: {message}", file=sys.stderr)
    return ExitCode.USAGE


def _cda_facts(pdf: bytes):
    try:
        return cdaread.read_cda(pdfcheck.extract_cda(pdf))
    except (pdfcheck.PdfProblem, cdaread.CdaProblem):
        return None


def run(args) -> int:
    config = load_config(args)
    pdf = None
    facts = None
    if args.op in ("create", "replace"):
        if not args.file:
            return _fail(f"--op {args.op} needs FILE.pdf")
        try:
            pdf = Path(args.file).read_bytes()
        except OSError as exc:
            return _fail(f"cannot read {args.file}: {exc.strerror}")
        facts = _cda_facts(pdf)
    elif args.file:
        try:
            facts = _cda_facts(Path(args.file).read_bytes())
        except OSError as exc:
            return _fail(f"cannot read {args.file}: {exc.strerror}")

    document_id = args.document_id or (f"{facts.id_root}^{facts.id_extension}"
                                       if facts and facts.id_root and facts.id_extension else None)
    if not document_id:
        return _fail("no document id: give --id (the PDF has no readable cda.xml id)")
    if args.op == "replace" and not args.old_id:
        return _fail("--op replace needs --old-id (the id being replaced)")
    doc_type = DocumentType[args.type] if args.type else next(
        (t for t in DocumentType if facts and t.loinc == facts.code), None)
    if doc_type is None:
        return _fail("no document type: give --type (the CDA's code is no declared type's)")
    patient = args.patient or next((ext for root, ext in (facts.patient_ids if facts else ()) if ext), None)
    if not patient:
        return _fail("no patient: give --patient")
    url = args.url or config.gateway.base_url
    if url == "embedded":
        raise ConfigError("gateway.base_url is 'embedded': start `fse-bridge simulator` and pass --url",
                          file=str(config.source or ""), key="gateway.base_url")

    structure = config.structure
    sub = Submission(
        document_id=document_id,
        repository_id=identifiers.repository_id(structure.fiscal_code, structure.repository,
                                                structure.repository_index),
        document_type=doc_type, facility_type=args.facility, practice_setting=args.practice_setting,
        clinical_activity=args.activity,
        submission_id=(f"{identifiers.SUBMISSION_ROOT}.{args.submission_id}" if args.submission_id
                       else identifiers.new_submission_id()),
        patient_id=patient, patient_root=args.patient_root,
        administrative_request=tuple(args.admin_request or ["SSN"]), start=args.start, end=args.end,
        event_codes=tuple(args.event_code), workflow_instance_id=args.workflow_instance_id)
    _, sign = certs.load_credentials(config)

    async def call():
        client = GatewayClient.from_config(config, sleep=asyncio.sleep, base_url=url, sign_credential=sign)
        try:
            if args.op == "create":
                return await client.create(sub, pdf, resend=args.resend)
            if args.op == "replace":
                return await client.replace(args.old_id, sub, pdf, resend=args.resend)
            if args.op == "metadata":
                return await client.metadata(sub, resend=args.resend)
            return await client.delete(sub, resend=args.resend)
        finally:
            await client.aclose()

    result = asyncio.run(call())
    for attempt in result.attempts:
        print(f"attempt {attempt.number}: status {attempt.status if attempt.status is not None else '-'}"
              f"  X-Cart-id {attempt.x_cart_id or '-'}")
        if attempt.error:
            print(f"  error: {attempt.error}")
        body = attempt.problem or {k: v for k, v in (("traceID", attempt.trace_id),
                                                     ("spanID", attempt.span_id),
                                                     ("workflowInstanceId", attempt.workflow_instance_id),
                                                     ("warning", attempt.warning)) if v is not None}
        if body:
            print("  " + json.dumps(body, ensure_ascii=False, indent=2).replace("\n", "\n  "))
    alert = f" (operator alert: {result.alert})" if result.operator_alert else ""
    reconciled = " (an earlier attempt had landed)" if result.reconciled else ""
    print(f"outcome: {result.outcome_class.value}{reconciled}{alert}")
    return ExitCode.DONE if result.published else ExitCode.FAILED
