"""Certificates for the TLS tests, made by the ``openssl`` command line tool.

A :class:`Pki` holds a CA, a server certificate for ``127.0.0.1`` and
``localhost`` signed by it, a client certificate signed by it, and a client
certificate signed by another CA (which the server must refuse). EC P-256
keys, valid for two days.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_DAYS = "2"


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def rogue_cert(self) -> Path:
        """A client certificate signed by a CA the server does not know."""
        return self.directory / "rogue.crt"

    @property
    def rogue_key(self) -> Path:
        return self.directory / "rogue.key"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def _ca(directory: Path, name: str, common_name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", _DAYS,
        "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def _leaf(directory: Path, name: str, ca: str, common_name: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(secrets.randbits(63)),
        "-days", _DAYS, "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


def make_pki(directory: Path) -> Pki:
    """Create the CA, server and client certificates in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca", "windshift test CA")
    _ca(directory, "rogue-ca", "some other CA")
    _leaf(
        directory,
        "server",
        "ca",
        "localhost",
        "basicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    _leaf(directory, "client", "ca", "windshift test client", client)
    _leaf(directory, "rogue", "rogue-ca", "rogue client", client)
    return Pki(directory)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session's certificates."""
    assert shutil.which("openssl"), "the TLS tests need the openssl command line tool"
    return make_pki(tmp_path_factory.mktemp("pki"))


__all__ = ["Pki", "make_pki", "pki"]
