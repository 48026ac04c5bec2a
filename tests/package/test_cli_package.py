"""`fse-bridge package`: the signed file, and clear errors with no partial output."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bridge import certs, cli
from bridge.pdf import package

from .package_samples import sample

NOW = dt.datetime.now(dt.timezone.utc)
DEV = ('development = true\nauth_cert = "../c/auth.pem"\nauth_key = "../c/auth.key"\n'
       'sign_cert = "../c/sign.pem"\nsign_key = "../c/sign.key"\ngateway_ca = "../c/ca.pem"\n')


def issue(folder, pki, cn, *, expired=False, passphrase=None):
    ca = certs.load_credential(pki.ca_cert, pki.ca_key)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    end = NOW - dt.timedelta(days=1) if expired else NOW + dt.timedelta(days=30)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=60)).not_valid_after(end)
            .sign(ca.private_key, hashes.SHA256()))
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    folder.mkdir(exist_ok=True)
    (folder / "s.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "s.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8, enc))
    return folder / "s.pem", folder / "s.key"


def test_package_command_writes_a_signed_pdf(tmp_path, write_config, capsys):
    path = write_config(tmp_path, DEV)
    cda = tmp_path / "LAB.xml"
    cda.write_bytes(sample("LAB"))
    assert cli.main(["package", str(cda), "--config", str(path)]) == 0
    pdf = (tmp_path / "LAB.pdf").read_bytes()
    assert package.extract_cda(pdf) == sample("LAB")
    assert b"/ETSI.CAdES.detached" in pdf
    assert (tmp_path / "c" / "sign.pem").exists()  # development certificates made on demand
    assert "signed by S1#090#01386030488PIPOHOUSE" in capsys.readouterr().out
    out = tmp_path / "x" / "unsigned.pdf"
    out.parent.mkdir()
    assert cli.main(["package", str(cda), "--unsigned", "--out", str(out), "--config", str(path)]) == 0
    assert b"/ByteRange" not in out.read_bytes()


def run_failing(tmp_path, path, cda_bytes, capsys, code):
    cda = tmp_path / "in.xml"
    cda.write_bytes(cda_bytes)
    out = tmp_path / "out.pdf"
    assert cli.main(["package", str(cda), "--out", str(out), "--config", str(path)]) == code
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.pdf")] == []
    return capsys.readouterr().err


def test_not_a_cda(tmp_path, write_config, capsys):
    path = write_config(tmp_path, DEV)
    err = run_failing(tmp_path, path, b"<html/>", capsys, 1)
    assert str(tmp_path / "in.xml") in err and "not an HL7 CDA R2 document" in err


@pytest.mark.parametrize("case, message", [
    ("wrong key", "does not match the certificate"),
    ("expired", "expired"),
    ("wrong CN", "does not follow the Region's pattern"),
    ("missing passphrase", "no passphrase is configured"),
])
def test_bad_signing_credential(tmp_path, write_config, pki, capsys, case, message):
    cn = "A1#090#01386030488PIPOHOUSE" if case == "wrong CN" else "S1#090#01386030488PIPOHOUSE"
    cert, key = issue(tmp_path / "c", pki, cn, expired=case == "expired",
                      passphrase=b"pem-secret" if case == "missing passphrase" else None)
    if case == "wrong key":
        key = pki.auth_key
    path = write_config(tmp_path, f'auth_cert = "{pki.auth_cert}"\nauth_key = "{pki.auth_key}"\n'
                                  f'sign_cert = "{cert}"\nsign_key = "{key}"\n')
    err = run_failing(tmp_path, path, sample("LAB"), capsys, 2)
    assert message in err
    assert str(cert) in err or str(key) in err
    assert "pem-secret" not in err and "PRIVATE" not in err


def test_unreadable_input(tmp_path, write_config, capsys):
    path = write_config(tmp_path, DEV)
    assert cli.main(["package", str(tmp_path / "missing.xml"), "--config", str(path)]) == 2
    assert "missing.xml" in capsys.readouterr().err
