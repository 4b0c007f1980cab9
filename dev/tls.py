"""A throwaway certificate authority and a `localhost` certificate it signed, for nginx in the
tests and `make run-tls`: made at run time, never committed."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.config import load_settings
from app.nginx_config import NginxOptions, render


@dataclass(frozen=True)
class Certificates:
    ca: Path  # what clients trust
    certificate: Path  # nginx's chain: the leaf, then the CA
    key: Path


def local_nginx_site(env: dict[str, str], bff_port: int, listen: int, certificates: Certificates) -> str:
    """`flask nginx-config`'s configuration (offload mode, no port-80 redirect) for a BFF started
    with `env` on `bff_port`, served on `listen` with `certificates`: `make run-tls`, `make bench`."""
    options = NginxOptions(
        bff_address=f"127.0.0.1:{bff_port}",
        listen=listen,
        http_redirect_port=None,
        certificate=str(certificates.certificate),
        certificate_key=str(certificates.key),
    )
    return render(load_settings(env), options)


def make_certificates(folder: Path, name: str = "localhost") -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BFF development CA (throwaway)")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = Certificates(folder / "ca.pem", folder / "localhost.pem", folder / "localhost.key")
    paths.ca.write_bytes(ca.public_bytes(pem))
    paths.certificate.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    paths.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths.key.chmod(0o600)
    return paths


def existing_or_new(folder: Path) -> Certificates:
    """The certificates already in `folder`, or new ones: a browser told to trust the CA keeps
    trusting it across restarts of the compose stack."""
    paths = Certificates(folder / "ca.pem", folder / "localhost.pem", folder / "localhost.key")
    if all(path.is_file() for path in (paths.ca, paths.certificate, paths.key)):
        return paths
    return make_certificates(folder)


if __name__ == "__main__":  # docker/compose.yaml's nginx-setup: python -m dev.tls FOLDER
    import sys

    made = existing_or_new(Path(sys.argv[1]))
    print(f"certificate for localhost: {made.certificate}; trust this CA in your browser: {made.ca}")
