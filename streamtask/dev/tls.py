"""A throwaway certificate authority and broker certificate for the local secured broker.

Made with the JDK's ``keytool`` (the broker needs Java anyway), so TLS costs no Python
dependency: a CA whose certificate clients trust (``ca.pem``, for ``STREAMTASK_SSL_CA``), and
a PKCS12 keystore for the brokers holding their key, a certificate the CA signed for
``127.0.0.1``/``localhost`` (librdkafka verifies the host name), and the CA as trusted entry
(brokers verify each other with it). The CA's own key is deleted once it has signed, so
nothing else can ever be signed with it. For development and tests only.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streamtask.config import Secret
from streamtask.errors import BrokerSetupError

VALIDITY_DAYS = "3650"


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA certificate (clients) and the brokers' keystore/truststore are."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    def exists(self) -> bool:
        return self.ca.exists() and self.keystore.exists()


def generate(directory: Path, password: Secret) -> TlsFiles:
    """Create the CA and the broker keystore in ``directory`` unless they exist."""
    files = TlsFiles(directory)
    if files.exists():
        return files
    keytool = shutil.which("keytool")
    if keytool is None:
        raise BrokerSetupError("keytool (part of the JDK) is needed to make the local "
                               "broker's TLS certificates; install a JDK 17 or newer")
    directory.mkdir(parents=True, exist_ok=True)
    ca_store, csr, signed = directory / "ca.p12", directory / "broker.csr", directory / "broker.pem"
    store = ["-storetype", "PKCS12", "-storepass", password.reveal()]
    steps = [
        ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-dname",
         "CN=streamtask local CA", "-ext", "bc:c", "-validity", VALIDITY_DAYS,
         "-keystore", str(ca_store), *store],
        ["-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), *store,
         "-file", str(files.ca)],
        ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-dname",
         "CN=localhost", "-validity", VALIDITY_DAYS, "-keystore", str(files.keystore), *store],
        ["-certreq", "-alias", "broker", "-keystore", str(files.keystore), *store,
         "-file", str(csr)],
        ["-gencert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), *store,
         "-infile", str(csr), "-outfile", str(signed), "-ext", "SAN=IP:127.0.0.1,DNS:localhost",
         "-validity", VALIDITY_DAYS],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca),
         "-keystore", str(files.keystore), *store],
        ["-importcert", "-noprompt", "-alias", "broker", "-file", str(signed),
         "-keystore", str(files.keystore), *store],
    ]
    for step in steps:
        done = subprocess.run([keytool, "-J-XX:TieredStopAtLevel=1", *step],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).replace(password.reveal(), "***")
            raise BrokerSetupError(f"keytool {step[0]} failed: {output.strip()}")
    for leftover in (ca_store, csr, signed):
        leftover.unlink()
    return files
