import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from bridge import certs, cli, config
from bridge.errors import ConfigError

NOW = dt.datetime.now(dt.timezone.utc)


def test_development_pki_has_the_region_cn_patterns(pki):
    auth = certs.load_credential(pki.auth_cert, pki.auth_key)
    sign = certs.load_credential(pki.sign_cert, pki.sign_key)
    assert auth.cn == "A1#090#01386030488PIPOHOUSE"
    assert sign.cn == "S1#090#01386030488PIPOHOUSE"
    assert certs.check_credential(auth, "auth", NOW) == []
    assert certs.check_credential(sign, "sign", NOW) == []
    eku = auth.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ca = certs.load_credential(pki.ca_cert, pki.ca_key)
    for cred in (auth, sign):
        assert cred.certificate.issuer == ca.certificate.subject
        cred.certificate.verify_directly_issued_by(ca.certificate)
        assert cred.private_key.key_size >= 2048


def test_server_certificate_for_localhost(pki):
    server = certs.load_credential(pki.server_cert, pki.server_key)
    san = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = server.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_keys_are_private_files(pki):
    for path in (pki.ca_key, pki.auth_key, pki.sign_key, pki.server_key):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_generation_keeps_existing_files(tmp_path):
    first = certs.generate_development_pki(tmp_path, fiscal_code="01386030488", vendor="x")
    before = {p: p.read_bytes() for p in vars(first).values()}
    first.sign_cert.unlink()
    first.sign_key.unlink()
    again = certs.generate_development_pki(tmp_path, fiscal_code="01386030488", vendor="x")
    for path, data in before.items():
        if path not in (first.sign_cert, first.sign_key):
            assert path.read_bytes() == data
    new_sign = certs.load_credential(again.sign_cert, again.sign_key)
    assert new_sign.certificate.public_bytes(serialization.Encoding.PEM) != before[first.sign_cert]
    ca = certs.load_credential(again.ca_cert, again.ca_key)
    new_sign.certificate.verify_directly_issued_by(ca.certificate)  # same CA reused


def test_key_and_certificate_in_one_pem_with_chain(tmp_path, pki):
    combined = tmp_path / "sign-all.pem"
    combined.write_bytes(pki.sign_key.read_bytes() + pki.sign_cert.read_bytes() + pki.ca_cert.read_bytes())
    cred = certs.load_credential(combined, None)
    assert cred.cn.startswith("S1#090#")
    assert [c.subject for c in cred.chain] == [certs.load_credential(pki.ca_cert, pki.ca_key).certificate.subject]
    assert "PRIVATE" not in repr(cred)


def _p12(tmp_path, pki, passphrase):
    sign = certs.load_credential(pki.sign_cert, pki.sign_key)
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    path = tmp_path / "sign.p12"
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"s1", sign.private_key, sign.certificate, None, enc))
    return path


def test_pkcs12_with_passphrase(tmp_path, pki):
    path = _p12(tmp_path, pki, b"s3cret-pass")
    cred = certs.load_credential(path, None, b"s3cret-pass")
    assert cred.cn == "S1#090#01386030488PIPOHOUSE"


@pytest.mark.parametrize("passphrase, words", [(b"wrong-pass", "wrong passphrase"),
                                               (None, "needs a passphrase")])
def test_pkcs12_bad_passphrase_names_the_file(tmp_path, pki, passphrase, words):
    path = _p12(tmp_path, pki, b"s3cret-pass")
    with pytest.raises(ConfigError) as err:
        certs.load_credential(path, None, passphrase)
    assert str(path) in str(err.value) and words in str(err.value)
    assert "s3cret" not in str(err.value) and "wrong-pass" not in str(err.value)


def test_encrypted_pem_key_needs_its_passphrase(tmp_path, issue):
    cert, key = issue(tmp_path, "S1#090#01386030488PIPOHOUSE", passphrase=b"pem-secret")
    assert certs.load_credential(cert, key, b"pem-secret").cn.startswith("S1#")
    with pytest.raises(ConfigError, match="encrypted and no passphrase") as err:
        certs.load_credential(cert, key, None)
    assert str(key) in str(err.value)
    with pytest.raises(ConfigError, match="wrong passphrase") as err:
        certs.load_credential(cert, key, b"nope-nope")
    assert str(key) in str(err.value) and "nope-nope" not in str(err.value)


def test_key_not_matching_the_certificate(pki):
    with pytest.raises(ConfigError, match="does not match") as err:
        certs.load_credential(pki.sign_cert, pki.auth_key)
    assert str(pki.sign_cert) in str(err.value)


def test_unreadable_and_garbage_files(tmp_path, pki):
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="cannot read certificate") as err:
        certs.load_credential(missing, None)
    assert str(missing) in str(err.value)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        certs.load_credential(garbage, pki.sign_key)
    with pytest.raises(ConfigError, match="no PEM private key"):
        certs.load_credential(pki.sign_cert, garbage)


def test_dates_are_checked(tmp_path, issue):
    cn = "S1#090#01386030488PIPOHOUSE"
    cert, key = issue(tmp_path, cn, not_before=NOW - dt.timedelta(days=60),
                      not_after=NOW - dt.timedelta(days=1))
    expired = certs.load_credential(cert, key)
    assert any("expired" in p for p in certs.check_credential(expired, "sign", NOW))
    assert certs.check_credential(expired, "sign", NOW - dt.timedelta(days=30)) == []
    with pytest.raises(ConfigError, match="expired") as err:
        certs.require_valid(expired, "sign", NOW)
    assert str(cert) in str(err.value)
    future = certs.load_credential(*issue(tmp_path / "..", cn, not_before=NOW + dt.timedelta(days=2),
                                         not_after=NOW + dt.timedelta(days=9)))
    assert any("not valid before" in p for p in certs.check_credential(future, "sign", NOW))


@pytest.mark.parametrize("cn, kind, ok", [
    ("A1#090#01386030488PIPOHOUSE", "auth", True),
    ("A12#090#RSSMRA80A01H501UVENDOR", "auth", True),
    ("S2#090#01386030488PIPOHOUSE", "sign", True),
    ("S1#090#01386030488PIPOHOUSE", "auth", False),   # a signature cert used for TLS
    ("A1#090#01386030488PIPOHOUSE", "sign", False),
    ("A1#080#01386030488PIPOHOUSE", "auth", False),   # another Region
    ("A1#090#0138603048PIPOHOUSE", "auth", False),    # 10-digit VAT number
    ("A1#090#01386030488", "auth", False),            # no vendor
    ("localhost", "auth", False),
])
def test_cn_pattern(tmp_path, issue, cn, kind, ok):
    cred = certs.load_credential(*issue(tmp_path, cn))
    problems = certs.check_credential(cred, kind, NOW)
    assert (problems == []) is ok
    if not ok:
        assert "pattern" in problems[0]


def test_load_credentials_from_configuration(tmp_path, monkeypatch, write_config):
    path = write_config(tmp_path, 'development = true\nauth_cert = "../c/auth.pem"\nauth_key = "../c/auth.key"\n'
                                  'sign_cert = "../c/sign.pem"\nsign_key = "../c/sign.key"\n'
                                  'gateway_ca = "../c/ca.pem"\n')
    cfg = config.load(path)
    auth, sign = certs.load_credentials(cfg)
    assert auth.cn == "A1#090#01386030488PIPOHOUSE" and sign.cn.startswith("S1#")
    assert {p.name for p in (tmp_path / "c").iterdir()} == {
        "ca.pem", "ca.key", "auth.pem", "auth.key", "sign.pem", "sign.key", "server.pem", "server.key"}


def test_missing_passphrase_from_configuration(tmp_path, issue, monkeypatch, write_config):
    (tmp_path / "c").mkdir()
    cert, key = issue(tmp_path / "c", "S1#090#01386030488PIPOHOUSE", passphrase=b"pem-secret")
    path = write_config(tmp_path, f'sign_cert = "{cert}"\nsign_key = "{key}"\nauth_cert = "{cert}"\n'
                                  'sign_passphrase_env = "FSE_TEST_SIGN_PASS"\n')
    cfg = config.load(path)
    monkeypatch.delenv("FSE_TEST_SIGN_PASS", raising=False)
    with pytest.raises(ConfigError, match="FSE_TEST_SIGN_PASS"):
        certs.load_configured(cfg, "sign")
    monkeypatch.setenv("FSE_TEST_SIGN_PASS", "pem-secret")
    assert certs.load_configured(cfg, "sign").cn.startswith("S1#")


def test_cli_generate_and_check(tmp_path, capsys, write_config):
    path = write_config(tmp_path, 'development = true\nauth_cert = "../c/auth.pem"\nauth_key = "../c/auth.key"\n'
                                  'sign_cert = "../c/sign.pem"\nsign_key = "../c/sign.key"\n'
                                  'gateway_ca = "../c/ca.pem"\n')
    assert cli.main(["certs", "generate", "--config", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "sign.pem").exists() and not (tmp_path / "c").exists()
    assert cli.main(["certs", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "A1#090#01386030488PIPOHOUSE" in out and out.rstrip().endswith("ok")
    assert "PRIVATE KEY" not in out


def test_cli_check_refuses_a_wrong_pair(tmp_path, issue, capsys, write_config):
    (tmp_path / "c").mkdir()
    auth = issue(tmp_path / "c", "A1#090#01386030488PIPOHOUSE")
    sign = issue(tmp_path / "c", "localhost")
    path = write_config(tmp_path, f'auth_cert = "{auth[0]}"\nauth_key = "{auth[1]}"\n'
                                  f'sign_cert = "{sign[0]}"\nsign_key = "{sign[1]}"\n')
    assert cli.main(["certs", "check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "does not follow the Region's pattern" in captured.out
    assert "sign certificate not usable" in captured.err
