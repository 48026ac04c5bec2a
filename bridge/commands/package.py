"""`fse-bridge package FILE.xml [--out FILE.pdf]`: the signed PDF the gateway receives.

Renders the report from the CDA, makes it PDF/A-3b, embeds the CDA as
cda.xml and signs it PAdES B-B with the configured signature certificate
(pdf.md). The output appears only when everything succeeded.
"""

from __future__ import annotations

import os
from pathlib import Path

from bridge import certs
from bridge.pdf import package
from bridge.commands._common import load_config
from bridge.errors import BridgeError, ConfigError
from bridge.pdf.sign import PdfSigner


def add_arguments(parser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.xml", help="the CDA document")
    parser.add_argument("--out", type=Path, metavar="FILE.pdf",
                        help="output file (default: FILE with .pdf)")
    parser.add_argument("--unsigned", action="store_true",
                        help="stop before the signature (the file to validate, pdf.md section 3)")


def write_atomically(path: Path, data: bytes) -> None:
    """Write *data* to *path* through a temporary file: never a partial output."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run(args) -> int:
    config = load_config(args)
    source: Path = args.file
    out: Path = args.out or source.with_suffix(".pdf")
    try:
        cda = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CDA: {exc.strerror}", file=str(source)) from None
    signer = None
    if not args.unsigned:
        certs.ensure_development_certificates(config)
        signer = PdfSigner.from_credential(certs.load_configured(config, "sign"))
    try:
        if signer is None:
            pdf = package.build_unsigned_pdf(cda)
        else:
            pdf = package.package_pdf(cda, signer)
    except BridgeError as exc:
        exc.message = f"{source}: {exc.message}"
        raise
    try:
        write_atomically(out, pdf)
    except OSError as exc:
        raise ConfigError(f"cannot write the PDF: {exc.strerror}", file=str(out)) from None
    print(f"{out} ({len(pdf)} bytes{', signed by ' + signer.display_name if signer else ', unsigned'})")
    return 0
