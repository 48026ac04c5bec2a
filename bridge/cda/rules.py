"""Install the validation rules (CDA XSD + official schematrons) into the rules folder.

SOURCE is a folder, a .zip or .tar(.gz) archive, or an http(s) URL of such an
archive (the official catalogue repository's archive works as it is: its files
sit under a top-level folder such as ``it-fse-catalogs-main/``). The source is
laid out like the reference pack: ``schema/POCD_MT000040UV02/*.xsd`` and
``schematron/*.sch``. Only those files are read, the latest schematron per
document type is kept (version from the file name), and an ``index.json``
records which schematron serves which template root and version.

Archives are never extracted as given: each wanted member is read and written
under a name this module builds (a plain file name checked against a strict
pattern), so no member can land outside the rules folder. The new rules are
loaded and compiled in a staging folder before they replace the old ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from bridge.cda.validate import XSD_FOLDER, Rules, RulesError, SchematronFile, latest_schematrons

INDEX_FILE = "index.json"
SCHEMA_PREFIX = f"schema/{XSD_FOLDER}/"
SCHEMATRON_PREFIX = "schematron/"
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 120.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,200}$")


@dataclass
class InstallReport:
    rules_dir: Path
    source: str
    schema_files: list[str] = field(default_factory=list)
    schematrons: list[SchematronFile] = field(default_factory=list)
    """What now serves each type (paths inside rules_dir)."""
    skipped: list[str] = field(default_factory=list)
    """Schematron files left out: older versions, other document types."""
    index: Path | None = None

    def lines(self) -> list[str]:
        out = [f"installed into {self.rules_dir} from {self.source}:",
               f"  XSD: {SCHEMA_PREFIX}CDA.xsd ({len(self.schema_files)} files)"]
        for found in sorted(self.schematrons, key=lambda s: s.doc_type.name):
            out.append(f"  {found.doc_type.name}: {found.path.name} (version {found.version_text}, "
                       f"template root {found.root})")
        if self.skipped:
            out.append(f"  not installed ({len(self.skipped)}): older versions or other document types")
        out.append(f"  index: {self.index}")
        return out


class InstallError(RulesError):
    """The source cannot be installed: names the source and what is missing."""


# A source seen as {posix path: reader}, whatever it is (folder or archive).
Members = dict[str, Callable[[], bytes]]


def install_rules(source: str, rules_dir: Path) -> InstallReport:
    """Install the XSD and the latest schematron per type from *source* into *rules_dir*."""
    rules_dir = Path(rules_dir)
    is_url = re.match(r"^https?://", source, re.I) is not None
    label = _without_credentials(source) if is_url else str(Path(source).expanduser())
    try:
        return _install_from(source, is_url, label, rules_dir)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise InstallError(f"{label}: damaged archive: {exc}") from None
    except OSError as exc:
        raise InstallError(f"{exc.filename or label}: {exc.strerror or exc}") from None


def _install_from(source: str, is_url: bool, label: str, rules_dir: Path) -> InstallReport:
    with tempfile.TemporaryDirectory(prefix="fse-rules-") as scratch:
        archive = _download(source, Path(scratch) / "download") if is_url else Path(label)
        if archive.is_dir():
            if rules_dir.exists() and archive.resolve() == rules_dir.resolve():
                raise InstallError(f"{label} is the rules folder itself")
            return _install(_folder_members(archive), label, rules_dir)
        if not archive.is_file():
            raise InstallError(f"{label}: no such file or folder")
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return _install(_zip_members(zf), label, rules_dir)
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                return _install(_tar_members(tf), label, rules_dir)
        raise InstallError(f"{label}: neither a folder nor a zip/tar archive")


def _install(members: Members, label: str, rules_dir: Path) -> InstallReport:
    prefix = _layout_root(members, label)
    schema = {}
    sch_names = {}
    for name, read in members.items():
        if not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        if rel.startswith(SCHEMA_PREFIX) and "/" not in rel[len(SCHEMA_PREFIX):]:
            schema[_safe(rel[len(SCHEMA_PREFIX):], label)] = read
        elif rel.startswith(SCHEMATRON_PREFIX) and rel.endswith(".sch") and "/" not in rel[len(SCHEMATRON_PREFIX):]:
            sch_names[rel[len(SCHEMATRON_PREFIX):]] = read
    latest = latest_schematrons(Path(n) for n in sch_names)
    if not latest:
        raise InstallError(f"{label}: no schematron for LAB, RAD, RSA, RAP or LDO in {prefix}{SCHEMATRON_PREFIX}")
    chosen = {found.path.name for found in latest.values()}

    rules_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=rules_dir))
    try:
        schema_dir = staging / "schema" / XSD_FOLDER
        schema_dir.mkdir(parents=True)
        for name, read in sorted(schema.items()):
            (schema_dir / name).write_bytes(read())
        sch_dir = staging / "schematron"
        sch_dir.mkdir()
        for name in sorted(chosen):
            (sch_dir / _safe(name, label)).write_bytes(sch_names[name]())
        installed = latest_schematrons(sch_dir.iterdir())
        # Refuse rules that do not load: the old ones stay in place.
        Rules(staging, installed).warm()
        (staging / INDEX_FILE).write_text(json.dumps(_index(installed, sorted(schema), label), indent=2) + "\n",
                                          encoding="utf-8")
        _swap(staging, rules_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    report = InstallReport(rules_dir, label, sorted(schema), index=rules_dir / INDEX_FILE)
    report.schematrons = [SchematronFile(f.doc_type, f.version, rules_dir / "schematron" / f.path.name)
                          for f in installed.values()]
    report.skipped = sorted(n for n in sch_names if n not in chosen)
    return report


def _layout_root(members: Members, label: str) -> str:
    """The folder prefix ('' or 'it-fse-catalogs-main/') that holds schema/ and schematron/."""
    marker = SCHEMA_PREFIX + "CDA.xsd"
    roots = sorted((m[: -len(marker)] for m in members if m == marker or m.endswith("/" + marker)), key=len)
    if not roots:
        raise InstallError(f"{label}: no {marker} found (expected the layout schema/{XSD_FOLDER}/, schematron/)")
    return roots[0]


def _safe(name: str, label: str) -> str:
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise InstallError(f"{label}: refusing the file name {name!r}")
    return name


def _index(installed: dict, schema_files: list[str], label: str) -> dict:
    return {
        "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": label,
        "schema": {"folder": SCHEMA_PREFIX.rstrip("/"), "root": "CDA.xsd", "files": schema_files},
        "schematron": [
            {"type": f.doc_type.name, "template_root": f.root, "version": f.version_text,
             "file": f"{SCHEMATRON_PREFIX}{f.path.name}",
             "sha256": hashlib.sha256(f.path.read_bytes()).hexdigest()}
            for f in sorted(installed.values(), key=lambda f: f.doc_type.name)
        ],
    }


def _swap(staging: Path, rules_dir: Path) -> None:
    """Replace schema/POCD_MT000040UV02, schematron/ and the index; other files are left alone."""
    for part in (Path("schema") / XSD_FOLDER, Path("schematron"), Path(INDEX_FILE)):
        target = rules_dir / part
        target.parent.mkdir(parents=True, exist_ok=True)
        old = staging / f"old-{part.name}"
        if target.exists() or target.is_symlink():
            os.replace(target, old)
        os.replace(staging / part, target)


def _folder_members(folder: Path) -> Members:
    members: Members = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            path = Path(dirpath) / filename
            rel = path.relative_to(folder).as_posix()
            if (SCHEMA_PREFIX in "/" + rel or SCHEMATRON_PREFIX in "/" + rel) and path.is_file():
                members[rel] = lambda path=path: _read_limited(path.open("rb"), str(path))
    return members


def _zip_members(zf: zipfile.ZipFile) -> Members:
    members: Members = {}
    for info in zf.infolist():
        file_type = (info.external_attr >> 16) & 0o170000
        if info.is_dir() or file_type not in (0, 0o100000):
            continue  # folders, and symlinks or devices recorded by unix zip tools
        name = _member_name(info.filename)
        if name:
            members[name] = lambda info=info: _read_limited(zf.open(info), info.filename)
    return members


def _tar_members(tf: tarfile.TarFile) -> Members:
    members: Members = {}
    for info in tf.getmembers():
        if not info.isfile():
            continue  # folders, links, devices
        name = _member_name(info.name)
        if name:
            members[name] = lambda info=info: _read_limited(tf.extractfile(info), info.name)
    return members


def _member_name(raw: str) -> str | None:
    """A relative posix member name, or None for absolute names and names with '..'."""
    path = PurePosixPath(raw.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return "/".join(p for p in path.parts if p != ".")


def _read_limited(stream, name: str) -> bytes:
    with stream:
        data = stream.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise InstallError(f"{name}: larger than {MAX_MEMBER_BYTES} bytes")
    return data


def _download(url: str, target: Path) -> Path:
    import httpx

    label = _without_credentials(url)
    size = 0
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_S) as response:
            if response.status_code != 200:
                raise InstallError(f"{label}: HTTP {response.status_code}")
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise InstallError(f"{label}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise InstallError(f"{label}: download failed: {exc}") from None
    return target


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
