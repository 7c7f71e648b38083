"""A throwaway certificate authority for tests, and the files TLS peers expect.

One `Pki` per test session issues the registries' server certificates, the client certificate
of the `tls-client` variant, and the token server's signing certificate (whose CA is the
registries' `rootcertbundle`). Clients get a containers `certs.d`-style directory: `ca.crt`,
plus `client.cert` and `client.key` when a client certificate is needed.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    """A certificate (PEM, leaf first) and its private key (PEM) on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class SigningIdentity:
    """A private key and the DER chain (leaf first) of its certificate, for JWT `x5c`."""

    key: EllipticCurvePrivateKey
    chain_der: tuple[bytes, ...]

    def x5c(self) -> list[str]:
        """The chain as a JWS `x5c` header value (standard base64 DER)."""
        return [base64.b64encode(der).decode("ascii") for der in self.chain_der]


class Pki:
    """A test CA writing its certificates under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="mirrord tests")
        self.ca_cert = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_cert))

    def __repr__(self) -> str:
        return f"Pki({str(self.directory)!r})"

    def server_cert(self, name: str, hosts: tuple[str, ...] = LOOPBACK_NAMES) -> CertFiles:
        """Issue a server certificate for `hosts`, written as `<name>.crt` / `<name>.key`."""
        return self._write(name, self._ca.issue_cert(*hosts, common_name=name))

    def client_cert(self, name: str = "mirror-client") -> CertFiles:
        """Issue a client certificate (trustme leaves carry both server and client usage)."""
        return self._write(name, self._ca.issue_cert(f"{name}.client.test", common_name=name))

    def certs_d(self, name: str, *, client: CertFiles | None = None) -> Path:
        """A containers `certs.d`-style directory: `ca.crt` (+ `client.cert`, `client.key`)."""
        directory = self.directory / "certs.d" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_bytes(self.ca_cert.read_bytes())
        if client is not None:
            (directory / "client.cert").write_bytes(client.cert.read_bytes())
            (directory / "client.key").write_bytes(client.key.read_bytes())
        return directory

    def ssl_context(self, *, client: CertFiles | None = None) -> ssl.SSLContext:
        """A client-side SSL context trusting this CA, presenting `client` if given."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        return context

    def signing_identity(self, name: str = "token-signer") -> SigningIdentity:
        """A key and certificate chain for signing tokens that registries trusting this CA accept."""
        leaf = self._ca.issue_cert(f"{name}.test", common_name=name)
        key = load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        if not isinstance(key, EllipticCurvePrivateKey):
            raise TypeError(f"trustme issued a {type(key).__name__}, expected an ECDSA key")
        chain = tuple(
            x509.load_pem_x509_certificate(pem.bytes()).public_bytes(Encoding.DER)
            for pem in leaf.cert_chain_pems
        )
        return SigningIdentity(key=key, chain_der=chain)

    def _write(self, name: str, leaf: trustme.LeafCert) -> CertFiles:
        files = CertFiles(cert=self.directory / f"{name}.crt", key=self.directory / f"{name}.key")
        files.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        files.key.write_bytes(leaf.private_key_pem.bytes())
        return files
