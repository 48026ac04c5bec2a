"""`fse-bridge certs generate|check`: development certificates; checking the configured pair."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bridge import certs
from bridge.commands._common import load_config
from bridge.errors import ConfigError


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=("generate", "check"),
                        help="generate: development CA, A1 and S1 certificates, server certificate "
                             "(existing files are kept); check: key matches, CN pattern, dates, and the CN's "
                             "P.IVA/fiscal code is structure.fiscal_code")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="generate into DIR (ca, auth, sign, server .pem/.key) instead of "
                             "the configured paths")


def _describe(cred: certs.Credential) -> str:
    cert = cred.certificate
    issuer = cert.issuer.rfc4514_string()
    return (f"{cred.cn} (issuer {issuer}; valid {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d})")


def run(args) -> int:
    config = load_config(args)
    if args.action == "generate":
        if args.out:
            pki = certs.generate_development_pki(args.out, fiscal_code=config.structure.fiscal_code,
                                                 vendor=config.application.vendor)
        else:
            pki = certs.generate_configured_pki(config)
        for name in ("ca_cert", "auth_cert", "sign_cert", "server_cert"):
            path = getattr(pki, name)
            print(f"{name.removesuffix('_cert'):<7} {path}  {certs.load_credential(path, getattr(pki, name.replace('_cert', '_key'))).cn}")
        return 0
    if args.out:
        raise ConfigError("--out is only for generate")
    certs.ensure_development_certificates(config)
    now = dt.datetime.now(dt.timezone.utc)
    failed = []
    for which in ("auth", "sign"):
        cred = certs.load_configured(config, which, check=False)
        problems = certs.check_credential(cred, which, now)
        problems += filter(None, [certs.identity_problem(config, which, cred)])
        print(f"{which}: {cred.source}: {_describe(cred)}")
        for problem in problems:
            print(f"  problem: {problem}")
        if problems:
            failed.append(which)
    if failed:
        raise ConfigError(f"{' and '.join(failed)} certificate not usable (see above)",
                          file=str(config.source or ""), key="certificates")
    print("ok")
    return 0
