"""Configuration: one TOML file loaded into frozen, typed settings.

Every key of interface.md exists here with its embedded default. Relative
paths are resolved against the folder of the configuration file, except
``journal.path`` which is relative to ``state_dir``. Unknown keys, wrong types
and missing files raise :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from stdnum.it import codicefiscale, iva

from bridge import __version__
from bridge.errors import ConfigError
from bridge.hl7.message import ascii_compatible

#: The checkout's embedded default profile.
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "etc" / "bridge.toml"
#: A value a shipped profile leaves for the installation to set (etc/production.toml): refused until set.
PLACEHOLDER = "CHANGE-ME"
#: gateway.md section 1: the production hosts (the Region's CART gateway and the national one).
PRODUCTION_GATEWAY_HOSTS = frozenset({"fse20gw.regione.toscana.it", "modipa.fse.salute.gov.it"})


def is_production_gateway(url: str) -> bool:
    """*url* is a production gateway's (compared by host): real citizens' records."""
    return (urlsplit(url).hostname or "").lower() in PRODUCTION_GATEWAY_HOSTS


def _path(*, must_exist: bool = False, relative_to: str = "config") -> dict:
    return {"path": True, "must_exist": must_exist, "relative_to": relative_to}


@dataclass(frozen=True, slots=True, kw_only=True)
class MllpSettings:
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 4 * 1024 * 1024
    """Frames larger than this are refused (AR when a header can be read) and the connection closed."""
    max_connections: int = 64
    """At the limit, a new connection closes the longest-idle one (none waiting for its ACK)."""
    idle_timeout_s: float = 600.0
    frame_timeout_s: float = 60.0
    """A frame not complete this long after its start byte closes the connection (0: no deadline)."""
    max_segments: int = 10_000
    max_fields: int = 200_000
    """Caps on one message's segments and delimited parts (fields, repetitions, components):
    larger messages get AR 207 as an oversize frame does, before a parse tree is built."""
    default_charset: str = "iso-8859-1"
    """Charset of messages that do not declare MSH-18 (an ASCII-compatible one)."""
    tls_cert: Path | None = field(default=None, metadata=_path(must_exist=True))
    tls_key: Path | None = field(default=None, metadata=_path(must_exist=True))
    tls_client_ca: Path | None = field(default=None, metadata=_path(must_exist=True))
    """With this set, client certificates are required and verified against it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AckSettings:
    mode: str = "outcome"
    """"outcome": ACK after the gateway answers; "commit": ACK once journaled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayPaths:
    create: str = "documents/validate-and-create"
    replace: str = "documents/{id}"
    metadata: str = "documents/{id}/metadata"
    delete: str = "documents/{id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    base_url: str = "embedded"
    """"embedded" = the built-in simulator; else the CART base URL ending in /gateway/v2/."""
    audience: str = "https://modipa-val.fse.salute.gov.it/govway/rest/in/FSE/gateway/v1"
    timeout_s: float = 60.0
    max_attempts: int = 4
    """Attempts for retryable failures only (gateway.md section 8)."""
    backoff_s: float = 1.0
    """First back-off delay; doubled at each retry up to max_backoff_s."""
    max_backoff_s: float = 30.0
    token_lifetime_s: int = 300
    requeue_s: float = 60.0
    """A message already acknowledged ("commit" or enhanced mode) that the gateway could not
    take now is tried again after this delay, doubled each time up to requeue_max_s."""
    requeue_max_s: float = 3600.0
    paths: GatewayPaths = field(default_factory=GatewayPaths)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateSettings:
    auth_cert: Path | None = field(default=None, metadata=_path())
    auth_key: Path | None = field(default=None, metadata=_path())
    sign_cert: Path | None = field(default=None, metadata=_path())
    sign_key: Path | None = field(default=None, metadata=_path())
    auth_passphrase_env: str | None = None
    auth_passphrase_file: Path | None = field(default=None, metadata=_path(must_exist=True))
    sign_passphrase_env: str | None = None
    sign_passphrase_file: Path | None = field(default=None, metadata=_path(must_exist=True))
    gateway_ca: Path | None = field(default=None, metadata=_path())
    development: bool = False
    """Generate a development CA and A1/S1 certificates at these paths when missing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationSettings:
    id: str = "fse-bridge"
    vendor: str = "fse-bridge"
    version: str = __version__


@dataclass(frozen=True, slots=True, kw_only=True)
class StructureSettings:
    fiscal_code: str = "01386030488"
    repository: str = "999"
    """999 | 201 | 202 | 203 ("own" is refused: the retrieval service it needs is not implemented)."""
    repository_index: int | None = None
    name: str = "Struttura di prova"
    locality: str = "Struttura di prova^^^^^&2.16.840.1.113883.2.9.4.1.3&ISO^^^^090000000"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorSettings:
    fiscal_code: str = "RMSLSO31M04Z404R"
    role: str = "AAS"


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingSettings:
    dir: Path = field(default=Path("../mappings"), metadata=_path(must_exist=True))
    templates: Path = field(default=Path("../templates"), metadata=_path(must_exist=True))
    practitioners: Path | None = field(default=Path("../mappings/practitioners.csv"),
                                       metadata=_path(must_exist=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationSettings:
    rules_dir: Path = field(default=Path("../var/rules"), metadata=_path())
    """Holds schema/ and schematron/ as installed by `fse-bridge rules install`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalSettings:
    backend: str = "sqlite"
    path: Path = field(default=Path("journal.sqlite"), metadata=_path(relative_to="state_dir"))
    keep_artifacts_days: int = 90
    """Retention of what the stages produced (CDA, signed PDF, reports...: most of the file);
    0 = forever. The submission records of published documents are always kept."""
    keep_messages_days: int = 365
    """Retention of the raw messages as received, counted from their outcome; 0 = forever.
    The entry itself (times, control id, outcome, ids, ACK) is always kept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: Path | None = field(default=None, metadata=_path(must_exist=True))
    tls_key: Path | None = field(default=None, metadata=_path(must_exist=True))
    tls_client_ca: Path | None = field(default=None, metadata=_path(must_exist=True))
    registry: Path = field(default=Path("simulator.sqlite"), metadata=_path(relative_to="state_dir"))


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    processes: int = 1
    """Worker processes for parse to signed PDF, beside the reactor (0: in threads)."""
    timeout_s: float = 120.0
    """A worker silent this long on one message is killed and replaced."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingSettings:
    level: str = "INFO"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: Path | None = None
    """The file this was loaded from (None: built from defaults)."""
    state_dir: Path = field(default=Path("../var"), metadata=_path())
    mllp: MllpSettings = field(default_factory=MllpSettings)
    ack: AckSettings = field(default_factory=AckSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    certificates: CertificateSettings = field(default_factory=CertificateSettings)
    application: ApplicationSettings = field(default_factory=ApplicationSettings)
    structure: StructureSettings = field(default_factory=StructureSettings)
    operator: OperatorSettings = field(default_factory=OperatorSettings)
    mapping: MappingSettings = field(default_factory=MappingSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    journal: JournalSettings = field(default_factory=JournalSettings)
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    web: WebSettings = field(default_factory=WebSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    @property
    def embedded_gateway(self) -> bool:
        return self.gateway.base_url == "embedded"

    @property
    def production_gateway(self) -> bool:
        """The gateway is a production one (compared by host): real citizens' records."""
        return is_production_gateway(self.gateway.base_url)

    def passphrase(self, which: str) -> bytes | None:
        """The passphrase of the ``auth`` or ``sign`` key, from its env variable or file."""
        env = getattr(self.certificates, f"{which}_passphrase_env")
        path = getattr(self.certificates, f"{which}_passphrase_file")
        if env:
            value = os.environ.get(env)
            if value is None:
                raise ConfigError(f"environment variable {env} is not set",
                                  file=str(self.source or ""), key=f"certificates.{which}_passphrase_env")
            return value.encode()
        if path:
            return path.read_bytes().rstrip(b"\r\n")
        return None


_CHOICES = {
    "ack.mode": {"outcome", "commit"},
    "journal.backend": {"sqlite"},
    "logging.level": {"DEBUG", "INFO", "WARNING", "ERROR"},
    "operator.role": {"AAS", "APR", "PSS", "INF", "FAR", "DSA", "DAM", "OAM", "ASS", "TUT", "ING",
                      "GEN", "NOR", "DRS", "RSA", "MRP", "INI", "OGC", "OPI", "MDS", "GTW", "DAP"},
}

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               Path: "a path (string)"}


def default_config_path(cwd: Path | None = None) -> Path:
    """./etc/bridge.toml when the current folder has one, else the checkout's."""
    local = (cwd or Path.cwd()) / "etc" / "bridge.toml"
    return local if local.is_file() else DEFAULT_CONFIG


def load(path: str | os.PathLike | None = None) -> Config:
    """Load and check the configuration file at *path* (default: see default_config_path)."""
    path = Path(path) if path is not None else default_config_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", file=str(path)) from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None
    return from_dict(table, source=path)


def from_dict(table: dict, *, source: Path | None = None, base_dir: Path | None = None) -> Config:
    """Build a Config from a parsed TOML table (paths relative to *source*'s folder)."""
    base = base_dir or (source.resolve().parent if source else Path.cwd())
    loader = _Loader(file=str(source or "<defaults>"), base=base)
    # state_dir first: journal.path and simulator.registry are relative to it.
    state_dir = loader.resolve(table.get("state_dir", "../var"), "state_dir",
                               {"path": True, "must_exist": False, "relative_to": "config"})
    loader.state_dir = state_dir
    config = loader.build(Config, table, "", extra={"source": source})
    config = _development_defaults(config)
    _check(config, loader.file)
    return config


def _development_defaults(config: Config) -> Config:
    """With ``certificates.development``, unset certificate paths default to state_dir/certs."""
    certs = config.certificates
    if not certs.development:
        return config
    folder = config.state_dir / "certs"
    defaults = {"auth_cert": "auth.pem", "auth_key": "auth.key", "sign_cert": "sign.pem",
                "sign_key": "sign.key", "gateway_ca": "ca.pem"}
    missing = {name: folder / file for name, file in defaults.items() if getattr(certs, name) is None}
    if not missing:
        return config
    return dataclasses.replace(config, certificates=dataclasses.replace(certs, **missing))


class _Loader:
    def __init__(self, *, file: str, base: Path):
        self.file = file
        self.base = base
        self.state_dir = base

    def fail(self, key: str, message: str) -> typing.NoReturn:
        raise ConfigError(message, file=self.file, key=key)

    def build(self, cls, table, prefix: str, extra: dict | None = None):
        if not isinstance(table, dict):
            self.fail(prefix.rstrip("."), "must be a table")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        unknown = sorted(set(table) - set(fields))
        if unknown:
            self.fail(prefix + unknown[0], f"unknown key (known: {', '.join(sorted(fields))})")
        values = dict(extra or {})
        for name, f in fields.items():
            key = prefix + name
            hint = hints[name]
            if dataclasses.is_dataclass(hint):
                values[name] = self.build(hint, table.get(name, {}), key + ".")
            elif name in table:
                values[name] = self.convert(table[name], hint, key, f.metadata)
            elif f.metadata.get("path") and f.default is not None and f.default is not dataclasses.MISSING:
                values[name] = self.resolve(str(f.default), key, f.metadata)
        return cls(**values)

    def convert(self, value, hint, key: str, meta):
        optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        if value is None or (optional and value == ""):
            if optional:
                return None
            self.fail(key, f"must be {_TYPE_NAMES[base]}")
        if base is Path:
            if not isinstance(value, str):
                self.fail(key, "must be a path (string)")
            return self.resolve(value, key, meta)
        if isinstance(value, str) and value.startswith(PLACEHOLDER):
            self.fail(key, f"still the profile's placeholder ({value}): set it for this installation")
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, bool) or not isinstance(value, base):
            self.fail(key, f"must be {_TYPE_NAMES[base]}, not {type(value).__name__} {value!r}")
        return value

    def resolve(self, value: str, key: str, meta) -> Path:
        start = self.state_dir if meta.get("relative_to") == "state_dir" else self.base
        path = (start / Path(value).expanduser()).resolve()
        if meta.get("must_exist") and not path.exists():
            self.fail(key, f"no such file or folder: {path}")
        return path


def _check_fiscal_codes(config: Config, file: str) -> None:
    """The structure's P.IVA or fiscal code and the operator's fiscal code, check characters included:
    the gateway refuses every call made with a wrong one (403), whatever the document."""
    structure = config.structure.fiscal_code.strip().upper()
    if not (iva.is_valid(structure) or codicefiscale.is_valid(structure)):
        raise ConfigError("not a valid P.IVA (11 digits) or fiscal code (16 characters): check every character",
                          file=file, key="structure.fiscal_code")
    try:
        codicefiscale.validate(config.operator.fiscal_code)
    except ValueError as error:   # stdnum's ValidationError says which rule (never the value)
        raise ConfigError(f"not a valid fiscal code ({error}): the gateway would refuse every call made on "
                          "the operator's behalf", file=file, key="operator.fiscal_code") from None


def _check(config: Config, file: str) -> None:
    for key, allowed in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(sorted(allowed))}, not {value!r}",
                              file=file, key=key)
    for key in ("mllp.port", "web.port", "simulator.port"):
        section, name = key.split(".")
        port = getattr(getattr(config, section), name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"must be a port number 0-65535, not {port}", file=file, key=key)
    for key in ("mllp.max_message_bytes", "mllp.max_connections", "mllp.max_segments", "mllp.max_fields",
                "gateway.max_attempts", "workers.timeout_s"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 1:
            raise ConfigError("must be at least 1", file=file, key=key)
    for name in ("keep_artifacts_days", "keep_messages_days"):
        # At most a hundred years: a cut-off date stays representable.
        days = getattr(config.journal, name)
        if not 0 <= days <= 36500:
            raise ConfigError(f"must be 0 (keep forever) to 36500 days, not {days}",
                              file=file, key=f"journal.{name}")
    if not 0 <= config.workers.processes <= 64:
        raise ConfigError(f"must be 0 to 64, not {config.workers.processes}", file=file, key="workers.processes")
    for name in ("idle_timeout_s", "frame_timeout_s"):
        if getattr(config.mllp, name) < 0:
            raise ConfigError("must be 0 (none) or more seconds", file=file, key=f"mllp.{name}")
    if not ascii_compatible(config.mllp.default_charset):
        raise ConfigError(f"unknown charset, or not ASCII-compatible: {config.mllp.default_charset!r}",
                          file=file, key="mllp.default_charset")
    if bool(config.mllp.tls_cert) != bool(config.mllp.tls_key):
        raise ConfigError("tls_cert and tls_key go together", file=file, key="mllp.tls_key")
    repo = config.structure.repository
    if repo == "own":
        raise ConfigError("own is not supported: the Region fetches the documents of a structure with its own "
                          "repository through a retrieval service that fse-bridge does not implement (its "
                          "specification is not public), so they could be published but never read; use 999, "
                          "201, 202 or 203", file=file, key="structure.repository")
    if repo not in {"999", "201", "202", "203"}:
        raise ConfigError("must be 999, 201, 202 or 203", file=file, key="structure.repository")
    _check_fiscal_codes(config, file)
    if not config.embedded_gateway and not config.gateway.base_url.startswith(("https://", "http://")):
        raise ConfigError('must be "embedded" or an http(s) URL', file=file, key="gateway.base_url")
    cert = config.certificates
    if not cert.development:
        for name in ("auth_cert", "sign_cert"):
            if getattr(cert, name) is None:
                raise ConfigError("is required unless certificates.development = true",
                                  file=file, key=f"certificates.{name}")
