"""The web configuration file (``--web.config.file``): TLS and basic authentication.

The format is the Prometheus exporter-toolkit's, so one file works for this exporter and for
``promtool check web-config``::

    tls_server_config:
      cert_file: tls/server.crt          # relative paths: to this file's directory
      key_file: tls/server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: tls/ca.crt
      min_version: TLS12
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2y$10$...             # bcrypt, e.g. from: htpasswd -nBC 10 "" | tr -d ':\\n'

Errors are :class:`WebConfigError`, one line naming the file, the key and the problem. Keys of
the toolkit that this exporter cannot honour (inline ``cert``/``key``, cipher and curve lists,
``client_allowed_sans``, ``RequireAnyClientCert``) are refused rather than silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import secrets
import ssl
import threading
import typing
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, ClassVar, Literal, NoReturn

import bcrypt
import msgspec
from msgspec import Meta

from .config import ConfigError
from .schema import SchemaError, convert, say
from .yamlfile import YamlFileError, os_reason, read_yaml

__all__ = [
    "AuthResult",
    "BasicAuth",
    "TLSServerConfig",
    "WebConfig",
    "WebConfigError",
    "load_web_config",
    "ssl_context",
]

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
CLIENT_AUTH_TYPES: tuple[str, ...] = typing.get_args(ClientAuthType)
_VERIFYING = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
TLSVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_BCRYPT_RE = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
# Checked against when the user is unknown and no user is configured (BasicAuth makes one at
# the configured cost otherwise). The hash of a random, forgotten password.
_DUMMY_HASH = b"$2b$10$ftlfOEhER6uqlR13gYfssuXIRq7Dd0Q4O/fgOs0xwE3mXSZ5gjqDW"
_MAX_FILE_BYTES = 1024 * 1024
_CACHE_SIZE = 4096  # verdicts cached (a SHA-256 and a bool each)
_CHECK_WAIT = 0.2  # seconds a password check may wait for a free bcrypt slot


class WebConfigError(ConfigError):
    """The web configuration is invalid. ``str(err)`` is one line: ``source: key: problem``."""


# --------------------------------------------------------------------------------------------
# The declared shape of the file (the exporter-toolkit's, less what Python cannot honour)

_TLS_FILES = Meta(extra=say(missing="TLS needs cert_file and key_file"))


@dataclass(frozen=True)
class TLSServerConfig:
    # Toolkit keys refused with a reason rather than as unknown.
    refused: ClassVar[dict[str, str]] = {
        "cert": "inline certificates are not supported: use cert_file",
        "key": "inline keys are not supported: use key_file",
        "client_ca": "an inline client CA is not supported: use client_ca_file",
        "cipher_suites": "not supported: the OpenSSL defaults of Python are used",
        "curve_preferences": "not supported: the OpenSSL defaults of Python are used",
        "client_allowed_sans": "not supported by smsp-exporter",
    }

    # Relative paths are made relative to the file's directory by load_web_config.
    cert_file: Annotated[Path, _TLS_FILES]
    key_file: Annotated[Path, _TLS_FILES]
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: TLSVersion = "TLS12"
    max_version: TLSVersion = "TLS13"
    prefer_server_cipher_suites: bool = True  # accepted: Python's OpenSSL defaults are used


_Header = (
    Annotated[str, Meta(pattern=r"\A[^\r\n]*\Z", extra=say(expected="a one-line string"))] | None
)


class _Headers(msgspec.Struct, frozen=True):  # a Struct: its keys are not Python names
    """The response headers the toolkit lets one set (None or empty: not sent)."""

    csp: _Header = msgspec.field(default=None, name="Content-Security-Policy")
    frame_options: _Header = msgspec.field(default=None, name="X-Frame-Options")
    content_type_options: _Header = msgspec.field(default=None, name="X-Content-Type-Options")
    xss_protection: _Header = msgspec.field(default=None, name="X-XSS-Protection")
    hsts: _Header = msgspec.field(default=None, name="Strict-Transport-Security")


@dataclass(frozen=True)
class _HttpServerConfig:
    http2: bool = True  # accepted and ignored: this server speaks HTTP/1.1
    headers: _Headers | None = None


_User = Annotated[str, Meta(pattern=r"\A[^:]+\Z", extra=say(invalid="invalid user name {got}"))]
_BcryptHash = Annotated[
    str,
    Meta(
        pattern=rf"\A{_BCRYPT_RE.pattern}\Z",
        # Never show the hash itself.
        extra=say(
            secret=True,
            invalid="not a bcrypt hash (make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
        ),
    ),
]


@dataclass(frozen=True)
class _WebConfigFile:
    expected: ClassVar[str] = (
        "a mapping with the keys tls_server_config, http_server_config, basic_auth_users"
    )

    tls_server_config: TLSServerConfig | None = None
    http_server_config: _HttpServerConfig | None = None
    basic_auth_users: (
        Annotated[
            dict[_User, _BcryptHash],
            Meta(extra=say(expected="a mapping of user names to bcrypt hashes")),
        ]
        | None
    ) = None


@dataclass(frozen=True)
class WebConfig:
    source: str
    tls: TLSServerConfig | None = None
    # (user, bcrypt hash) pairs; empty: no authentication.
    basic_auth_users: tuple[tuple[str, bytes], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    # Not part of the file: the CLI flag --web.healthz-without-auth.
    healthz_without_auth: bool = field(default=False)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web configuration file (and the TLS files it names)."""
    source = str(path)
    try:
        _, data = read_yaml(source, _MAX_FILE_BYTES)
    except YamlFileError as err:
        raise WebConfigError(source, f"<{err.part}>", err.problem) from None
    config = _check(data, source, Path(source).parent)
    if config.tls is not None:
        ssl_context(config)  # the certificate, key and CA must load now, not at first request
    return config


def _check(data: object, source: str, base: Path) -> WebConfig:
    """The declared shape first, then the rules between keys."""

    def fail(key: str, problem: str) -> NoReturn:
        raise WebConfigError(source, key, problem)

    if isinstance(data, Mapping) and data.get("tls_server_config") == {}:
        data = {**data, "tls_server_config": None}  # as in the toolkit: no TLS
    try:
        file = convert({} if data is None else data, _WebConfigFile)
    except SchemaError as err:
        fail(err.key or "<top level>", err.problem)
    tls = file.tls_server_config
    if tls is not None:
        prefix, auth, ca = "tls_server_config", tls.client_auth_type, tls.client_ca_file
        if auth == "RequireAnyClientCert":
            fail(
                f"{prefix}.client_auth_type",
                "RequireAnyClientCert (a certificate that is not verified) is not supported: "
                "use RequireAndVerifyClientCert with client_ca_file",
            )
        if auth in _VERIFYING and ca is None:
            fail(f"{prefix}.client_ca_file", f"missing: {auth} needs a client CA")
        if ca is not None and auth not in _VERIFYING:
            fail(
                f"{prefix}.client_auth_type",
                f"client_ca_file is set but {auth} does not verify client certificates: "
                "use RequireAndVerifyClientCert",
            )
        if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
            fail(f"{prefix}.min_version", "is above max_version")
        tls = replace(
            tls,
            cert_file=base / tls.cert_file,
            key_file=base / tls.key_file,
            client_ca_file=None if ca is None else base / ca,
        )
    headers = (file.http_server_config or _HttpServerConfig()).headers or _Headers()
    names = _Headers.__struct_encode_fields__
    return WebConfig(
        source,
        tls,
        tuple((user, hashed.encode()) for user, hashed in (file.basic_auth_users or {}).items()),
        tuple((n, v) for n, v in zip(names, msgspec.structs.astuple(headers), strict=True) if v),
    )


def ssl_context(config: WebConfig) -> ssl.SSLContext:
    """A server-side SSL context for ``config.tls`` (which must be set)."""
    tls = config.tls
    if tls is None:
        raise ValueError("the web configuration has no tls_server_config")
    prefix = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    for name, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        try:
            path.open("rb").close()
        except OSError as exc:
            raise WebConfigError(
                config.source, f"{prefix}.{name}", f"cannot read {path}: {os_reason(exc)}"
            ) from None
    asked = []

    def no_passphrase() -> bytes:
        # Without a callback, OpenSSL asks for the passphrase on the terminal (and blocks).
        asked.append(True)
        return b""

    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=no_passphrase)
    except (OSError, ssl.SSLError) as exc:
        if asked:
            raise WebConfigError(
                config.source,
                f"{prefix}.key_file",
                "the private key is encrypted: passphrases are not supported, "
                "give an unencrypted key (readable by this user only)",
            ) from None
        raise WebConfigError(
            config.source,
            f"{prefix}.cert_file",
            f"cannot load the certificate and key ({_ssl_reason(exc)})",
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                config.source, f"{prefix}.client_ca_file", f"cannot load ({_ssl_reason(exc)})"
            ) from None
        if tls.client_auth_type == "RequireAndVerifyClientCert":
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.verify_mode = ssl.CERT_OPTIONAL
    # NoClientCert and RequestClientCert: a client certificate is never verified, so it grants
    # nothing: Python cannot ask for one without verifying it, and need not.
    return context


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or type(exc).__name__)


class AuthResult(enum.Enum):
    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"  # too many password checks at once: try again


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    - User names are compared in constant time, and an unknown user costs one bcrypt check
      against a dummy hash made at start-up at the highest cost of the configured hashes, so
      that it costs what a known user with a wrong password costs (no user enumeration by
      timing; give every user the same cost).
    - Verdicts are cached, successes and failures alike, under a SHA-256 of user, hash and
      password (as the exporter-toolkit caches successes: bcrypt at cost 10 takes tens of
      milliseconds per request, at cost 12 a quarter of a second). A scraper pays bcrypt once;
      a client repeating the same wrong password, too.
    - At most ``max_checks`` bcrypt checks run at once (one per two CPUs by default): a flood
      of new wrong passwords takes that much CPU and no more. A check that cannot start within
      ``wait`` seconds is answered :attr:`AuthResult.BUSY` (HTTP 503), which frees the request
      thread; cached verdicts need no check and are never BUSY.
    """

    def __init__(
        self,
        users: tuple[tuple[str, bytes], ...],
        *,
        max_checks: int | None = None,
        wait: float = _CHECK_WAIT,
    ) -> None:
        self._users = tuple((user.encode(), hashed) for user, hashed in users)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()
        if max_checks is None:
            max_checks = max(1, (os.cpu_count() or 2) // 2)
        self._checks = threading.BoundedSemaphore(max_checks)
        self._wait = wait
        self._dummy = _DUMMY_HASH
        if self._users:
            cost = max(_cost(hashed) for _, hashed in self._users)
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))

    def __bool__(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        return self.verify(header) is AuthResult.OK

    def verify(self, header: str | None) -> AuthResult:
        credentials = _decode_basic(header)
        if credentials is None:
            return AuthResult.DENIED
        user, password = credentials
        hashed = self._dummy
        known = False
        for name, candidate in self._users:
            if hmac.compare_digest(name, user):
                hashed, known = candidate, True
        key = hashlib.sha256(b"\0".join((user, hashed, password))).digest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return AuthResult.OK if cached else AuthResult.DENIED
        if not self._checks.acquire(timeout=self._wait):
            return AuthResult.BUSY
        try:
            ok = bcrypt.checkpw(password, hashed) and known
        except ValueError:
            ok = False
        finally:
            self._checks.release()
        with self._lock:
            self._cache[key] = ok
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return AuthResult.OK if ok else AuthResult.DENIED


def _cost(hashed: bytes) -> int:
    # "$2b$12$...": the cost is the two digits after the second "$" (checked at load time).
    try:
        return int(hashed.split(b"$")[2])
    except (IndexError, ValueError):
        return 10


def _decode_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password
