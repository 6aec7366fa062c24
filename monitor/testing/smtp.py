"""A loopback SMTP server that delivers into a Maildir, for tests and the offline demo.

It wraps aiosmtpd's threaded ``Controller``, binds to 127.0.0.1 on a free port, and keeps every
accepted message both in memory (``messages``) and in a Maildir folder (``folder``)::

    with LoopbackSMTP(tmp_path / "maildir") as smtp:
        ...  # send to 127.0.0.1:smtp.port
        smtp.messages[0]["Message-ID"]

It can offer STARTTLS (``tls_context``; see :func:`self_signed_context`), speak implicit TLS
(``implicit_tls=True``), require a login (``auth=(user, password)``) and refuse messages on
demand (``fail_with=(421, "try later")`` or :meth:`LoopbackSMTP.fail_next`). Nothing here
reaches beyond the loopback interface.
"""

from __future__ import annotations

import email
import email.policy
import functools
import ipaddress
import logging
import mailbox
import os
import shutil
import ssl
import tempfile
import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["LoopbackSMTP", "Received", "self_signed_context"]

_AIOSMTPD_LOG = logging.getLogger("mail.log")


@dataclass(frozen=True, slots=True)
class Received:
    """The SMTP envelope of one accepted message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]


class _Handler:
    """aiosmtpd handler: accept into the Maildir, or refuse as :class:`LoopbackSMTP` says."""

    def __init__(self, server: LoopbackSMTP) -> None:
        self._server = server

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self._server._accept(envelope)


class _QuietAiosmtpd(logging.Filter):
    """Drop aiosmtpd's log lines about choices made here on purpose (loopback, tests only)."""

    NOISE = ("Session.login_data is deprecated", "auth_required == True but auth_require_tls")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


class _Controller(Controller):
    """A Controller that may bind port 0: it learns the real port before its self-check."""

    def factory(self) -> SMTP:
        with warnings.catch_warnings():  # AUTH without STARTTLS: on purpose, on loopback
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class LoopbackSMTP:
    """An SMTP server on 127.0.0.1 delivering into a Maildir. Use it as a context manager.

    ``folder``: the Maildir to deliver into (created owner-only if missing); ``None`` uses a
    temporary folder that is removed on :meth:`stop`.
    ``tls_context``: a server ``SSLContext``; offers STARTTLS, or with ``implicit_tls`` speaks
    TLS from the first byte (like port 465).
    ``auth``: ``(username, password)`` to require a login (over TLS when TLS is offered).
    ``fail_with``/``fail_times``: refuse the next ``fail_times`` messages (``None``: every one
    until ``fail_with`` is cleared) with this ``(code, text)`` answer to DATA.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        fail_with: tuple[int, str] | None = None,
        fail_times: int | None = None,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"LoopbackSMTP binds to loopback addresses only, not {host!r}")
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context (see self_signed_context())")
        self.host = host
        self.port = port
        self._own_folder = folder is None
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp())
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.messages: list[EmailMessage] = []  # every accepted message, in order
        self.envelopes: list[Received] = []  # their SMTP envelopes, same order
        self.refused = 0  # how many messages were refused on purpose
        self._lock = threading.Lock()
        self._fail_with = fail_with
        self._fail_times = fail_times
        self._controller: _Controller | None = None

    # ------------------------------------------------------------------ failures

    @property
    def fail_with(self) -> tuple[int, str] | None:
        """The ``(code, text)`` answer given to the next messages instead of accepting them."""
        with self._lock:
            return self._fail_with

    @fail_with.setter
    def fail_with(self, value: tuple[int, str] | None) -> None:
        if value is None:
            self.fail_next(None)
        else:
            self.fail_next(*value, times=None)

    def fail_next(self, code: int | None, text: str = "", *, times: int | None = 1) -> None:
        """Refuse the next ``times`` messages (``None``: all, until cleared) with ``code text``.

        ``fail_next(None)`` clears it. Use a 4xx code for a temporary refusal, 5xx for a
        permanent one.
        """
        with self._lock:
            if code is None:
                self._fail_with, self._fail_times = None, None
                return
            if not 400 <= code <= 599:
                raise ValueError(f"an SMTP refusal code is 4xx or 5xx, not {code}")
            self._fail_with, self._fail_times = (code, text or "refused"), times

    def _accept(self, envelope: Envelope) -> str:
        """Called on the server thread for each message: refuse it or store it."""
        with self._lock:
            if self._fail_with is not None:
                code, text = self._fail_with
                if self._fail_times is not None:
                    self._fail_times -= 1
                    if self._fail_times <= 0:
                        self._fail_with, self._fail_times = None, None
                self.refused += 1
                return f"{code} {text}"
            content = envelope.original_content or envelope.content or b""
            data = content.encode("utf-8") if isinstance(content, str) else content
            message = email.message_from_bytes(data, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            mailbox.Maildir(self.folder, create=False).add(data)
            self.messages.append(message)
            self.envelopes.append(
                Received(mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos))
            )
        return "250 OK"

    # ------------------------------------------------------------------ lifecycle

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.auth
        ok = data.login == user.encode() and data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    def start(self) -> LoopbackSMTP:
        """Create the Maildir (owner-only) and start serving; ``port`` is then the bound port."""
        if self._controller is not None:
            raise RuntimeError("this LoopbackSMTP is already running")
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        for sub in ("tmp", "new", "cur"):
            (self.folder / sub).mkdir(mode=0o700, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if self.auth is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self.tls_context is not None and not self.implicit_tls,
            )
        if self.tls_context is not None and not self.implicit_tls:
            kwargs["tls_context"] = self.tls_context
        if not any(isinstance(f, _QuietAiosmtpd) for f in _AIOSMTPD_LOG.filters):
            _AIOSMTPD_LOG.addFilter(_QuietAiosmtpd())
        controller = _Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=self.tls_context if self.implicit_tls else None,
            server_hostname="localhost",  # not socket.getfqdn(): no DNS lookups, no host name
            ready_timeout=10.0,
            **kwargs,
        )
        controller.start()
        self._controller = controller
        self.port = controller.port
        return self

    def stop(self) -> None:
        """Stop serving. A temporary folder made by this server is removed."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LoopbackSMTP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------- TLS


@functools.cache
def _self_signed_pem() -> tuple[bytes, bytes]:
    """A certificate and key for 127.0.0.1 and localhost (made once per process)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def self_signed_context() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """``(server_ctx, client_ctx)`` for TLS on 127.0.0.1 with a throwaway self-signed cert.

    The client context verifies the certificate and the host name as usual; it trusts only
    this certificate.
    """
    cert_pem, key_pem = _self_signed_pem()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_bytes(cert_pem)
        fd = os.open(key_file, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return server_ctx, client_ctx
