"""Metadata update of a published document (gateway.md section 1, PUT documents/{id}/metadata).

An operator changes what INI knows of a document (for example obscuring it,
P99, at the patient's request) without sending the document again. The
values start from the submission that published the document (kept in the
journal) and the changes use the gateway's own field names, so what the
operator types is what the Region's documentation says.

``fse-bridge journal update-metadata`` asks the running service to make the call
(bridge.web.operator's endpoint, bridge.publish.pipeline.update_metadata: under the
accession's lock, beside the messages it processes); with no service running it
makes the call itself.
"""

from __future__ import annotations

import dataclasses

from bridge.errors import BridgeError, InvalidValue
from bridge.gateway.bodies import Submission, check_submission
from bridge.journal import ArtifactStage
from bridge.publish.submission import current_submission

#: Gateway field name → (Submission field, is a list).
FIELDS = {
    "tipologiaStruttura": ("facility_type", False),
    "assettoOrganizzativo": ("practice_setting", False),
    "tipoAttivitaClinica": ("clinical_activity", False),
    "tipoDocumentoLivAlto": ("class_code", False),
    "administrativeRequest": ("administrative_request", True),
    "dataInizioPrestazione": ("start", False),
    "dataFinePrestazione": ("end", False),
    "attiCliniciRegoleAccesso": ("event_codes", True),
    "descriptions": ("descriptions", True),
    "conservazioneANorma": ("conservation", False),
}


class UnknownTarget(BridgeError):
    """The target names no journal entry, or no document the bridge published."""


class NotCurrentVersion(BridgeError):
    """The named document is not (or no longer) the accession's published version."""


def check_settings(settings) -> dict:
    """The Submission changes that ``KEY=VALUE`` *settings* ask for (lists comma-separated;
    an empty value clears). Raises InvalidValue naming the key when a setting is not
    ``KEY=VALUE`` or the key is not a gateway field; values are checked by apply_settings."""
    changes = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        key = key.strip()
        if not sep or key not in FIELDS:
            raise InvalidValue(f"--set {key or setting!r}: expected KEY=VALUE with KEY one of "
                               f"{', '.join(FIELDS)}")
        name, is_list = FIELDS[key]
        value = value.strip()
        if is_list:
            changes[name] = tuple(v.strip() for v in value.split(",") if v.strip())
        else:
            changes[name] = value or None
    return changes


def apply_settings(sub: Submission, settings: list[str], *, submission_id: str) -> Submission:
    """*sub* with ``KEY=VALUE`` changes applied (check_settings).

    Raises InvalidValue naming the key when a key is unknown or a value is
    outside the gateway's value sets.
    """
    updated = dataclasses.replace(sub, **check_settings(settings), submission_id=submission_id)
    check_submission(updated)
    return updated


#: The stage under which a metadata update the gateway took is recorded, as ``submission.json``
#: under the message that published the document: the next update starts from it.
APPLIED_STAGE = ArtifactStage.METADATA


def submission_for(store, document) -> tuple[Submission, int]:
    """*document*'s current submission (the publication's, or its latest metadata update the
    gateway took) and the journal entry that published it (sync store: the CLI's own path)."""
    if document.message_id is not None:
        sub = current_submission(store.artifacts(document.message_id), document.document_id)
        if sub is not None:
            return sub, document.message_id
    raise UnknownTarget(f"no publication of {document.document_id} in the journal")
