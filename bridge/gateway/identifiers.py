"""Toscana document and repository identifiers (gateway.md §5, RT §13).

identificativoDoc = ``2.16.840.1.113883.2.9.2.90.4.4^<PIVA>.<TYPE>.<CODREP>.<accession>_<seq>``,
the same value as ``ClinicalDocument/id`` (root ^ extension). The local id is a
fixed function of the accession and the sequence number so that resends and
recovery always compute the same id.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from bridge.errors import InvalidValue

#: Toscana's document-id domain (region 090 written without the leading zero).
DOCUMENT_ROOT = "2.16.840.1.113883.2.9.2.90.4.4"
#: Prefix of identificativoRep.
REPOSITORY_ROOT = "2.16.840.1.113883.2.9.2.90.4.5"
#: The Region's arc of identificativoSottomissione (SubmissionSet.uniqueId).
SUBMISSION_ROOT = "2.16.840.1.113883.2.9.2.90.4.3"
#: Bits of the random last arc: about 60 characters in all, under the common 64-character OID cap.
SUBMISSION_BITS = 96
#: Regional repositories; anything else names the structure's own repository.
SHARED_REPOSITORIES = ("999", "201", "202", "203")

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9-]")


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentIds:
    """What render_cda needs to identify a document version (cda.md §2.1)."""

    root: str
    extension: str
    set_root: str
    set_extension: str
    version_number: int = 1
    previous: tuple[str, str] | None = None
    """(root, extension) of the replaced version: one relatedDocument RPLC."""
    effective_time: str = ""
    """ClinicalDocument/effectiveTime; empty: the report's own time."""

    @property
    def document_id(self) -> str:
        return f"{self.root}^{self.extension}"


def new_submission_id() -> str:
    """A fresh identificativoSottomissione: the Region's arc plus a random 96-bit integer.

    Drawn per call (gateway.md section 5). Never a counter: every structure shares the
    arc, and a counter restarts with a new installation, a second machine or a restored
    journal, so it collides with ids the registry already holds (409).
    """
    return f"{SUBMISSION_ROOT}.{secrets.randbelow(2 ** SUBMISSION_BITS - 1) + 1}"


def reduce_accession(accession: str) -> str:
    """The accession with every character outside ``[A-Za-z0-9-]`` dropped."""
    reduced = _NOT_ALLOWED.sub("", accession)
    if not reduced:
        raise InvalidValue("accession number has no usable characters", location="OBR^1^3")
    return reduced


def local_id(accession: str, seq: int) -> str:
    """``<accession reduced>_<seq>``: the structure's own document number."""
    if seq < 1:
        raise ValueError("seq starts at 1")
    return f"{reduce_accession(accession)}_{seq}"


def repository_code(structure_cf: str, repository: str, repository_index: int | None = None) -> str:
    """CODREP: 999/201/202/203, or the structure's PIVA/CF (``-n`` with several repositories)."""
    if repository in SHARED_REPOSITORIES:
        return repository
    return f"{structure_cf}-{repository_index}" if repository_index else structure_cf


def repository_id(structure_cf: str, repository: str, repository_index: int | None = None) -> str:
    """identificativoRep: ``2.16.840.1.113883.2.9.2.90.4.5.<CODREP>``."""
    return f"{REPOSITORY_ROOT}.{repository_code(structure_cf, repository, repository_index)}"


def document_id(structure_cf: str, doc_type: str, repository: str, accession: str, seq: int,
                repository_index: int | None = None) -> str:
    """identificativoDoc, ``root^<PIVA>.<TYPE>.<CODREP>.<accession>_<seq>``."""
    codrep = repository_code(structure_cf, repository, repository_index)
    return f"{DOCUMENT_ROOT}^{structure_cf}.{doc_type}.{codrep}.{local_id(accession, seq)}"


def split_document_id(value: str) -> tuple[str, str]:
    """(root, extension) of ``root^extension``."""
    root, sep, extension = value.rpartition("^")
    if not sep or not root or not extension:
        raise ValueError(f"not a root^extension document id: {value!r}")
    return root, extension


def _seq_of(extension: str) -> int | None:
    head, sep, tail = extension.rpartition("_")
    return int(tail) if sep and tail.isdigit() else None


def document_ids(structure_cf: str, doc_type: str, repository: str, accession: str, *,
                 seq: int | None = None, repository_index: int | None = None,
                 previous_id: str | None = None, previous_version: int | None = None,
                 set_id: str | None = None, effective_time: str = "") -> DocumentIds:
    """The ids of a first version, or of the replacement of *previous_id*.

    Without *seq*: 1, or the previous id's seq + 1. A replacement keeps the set
    id (given, else derived from the previous id: the bridge's seq equals
    versionNumber within a set, gateway.md §5), raises versionNumber and names
    the previous id in one RPLC (cda.md §2.1).
    """
    previous = split_document_id(previous_id) if previous_id else None
    previous_seq = _seq_of(previous[1]) if previous else None
    if seq is None:
        seq = previous_seq + 1 if previous_seq else 1
    root, extension = split_document_id(
        document_id(structure_cf, doc_type, repository, accession, seq, repository_index))
    if previous is None:
        return DocumentIds(root=root, extension=extension, set_root=root, set_extension=extension,
                           version_number=1, effective_time=effective_time)
    version = previous_version or 1
    if set_id:
        set_root, set_extension = split_document_id(set_id)
    elif previous_seq and previous_seq - version + 1 >= 1:
        first = previous_seq - version + 1
        set_root = previous[0]
        set_extension = previous[1][: previous[1].rindex("_") + 1] + str(first)
    else:
        set_root, set_extension = previous
    return DocumentIds(root=root, extension=extension, set_root=set_root, set_extension=set_extension,
                       version_number=version + 1, previous=previous,
                       effective_time=effective_time)
