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
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from .config import ConfigError

__all__ = [
    "AuthResult",
    "BasicAuth",
    "TLSServerConfig",
    "WebConfig",
    "WebConfigError",
    "load_web_config",
    "ssl_context",
]

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
_VERIFYING = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
# Toolkit keys refused with a reason rather than as unknown.
_UNSUPPORTED_TLS_KEYS = {
    "cert": "inline certificates are not supported: use cert_file",
    "key": "inline keys are not supported: use key_file",
    "client_ca": "an inline client CA is not supported: use client_ca_file",
    "cipher_suites": "not supported: the OpenSSL defaults of Python are used",
    "curve_preferences": "not supported: the OpenSSL defaults of Python are used",
    "client_allowed_sans": "not supported by smsp-exporter",
}
_HTTP_KEYS = ("http2", "headers")
_HEADER_NAMES = (
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
)
_BCRYPT_RE = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
# Checked against when the user is unknown and no user is configured (BasicAuth makes one at
# the configured cost otherwise). The hash of a random, forgotten password.
_DUMMY_HASH = b"$2b$10$ftlfOEhER6uqlR13gYfssuXIRq7Dd0Q4O/fgOs0xwE3mXSZ5gjqDW"
_MAX_FILE_BYTES = 1024 * 1024
_CACHE_SIZE = 4096  # verdicts cached (a SHA-256 and a bool each)
_CHECK_WAIT = 0.2  # seconds a password check may wait for a free bcrypt slot


class WebConfigError(ConfigError):
    """The web configuration is invalid. ``str(err)`` is one line: ``source: key: problem``."""


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"


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
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise WebConfigError(source, "<file>", f"cannot read the file: {_reason(exc)}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise WebConfigError(source, "<file>", "the file is too large")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise WebConfigError(source, "<yaml>", f"invalid YAML{where}") from None
    except RecursionError:
        raise WebConfigError(source, "<yaml>", "the document is nested too deeply") from None
    config = _Builder(source, path.parent).build(data)
    if config.tls is not None:
        ssl_context(config)  # the certificate, key and CA must load now, not at first request
    return config


class _Builder:
    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base

    def fail(self, key: str, problem: str) -> WebConfigError:
        return WebConfigError(self.source, key, problem)

    def mapping(
        self,
        data: object,
        key: str,
        allowed: tuple[str, ...],
        refused: Mapping[str, str] | None = None,
    ) -> Mapping:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise self.fail(key or "<top level>", f"expected a mapping, got {type(data).__name__}")
        for name in data:
            full = f"{key}.{name}" if key else str(name)
            if refused and name in refused:
                raise self.fail(full, refused[name])
            if name not in allowed:
                raise self.fail(full, f"unknown key (known: {', '.join(allowed)})")
        return data

    def build(self, data: object) -> WebConfig:
        top = self.mapping(data, "", _TOP_KEYS)
        tls = self.tls(top.get("tls_server_config"))
        users = self.users(top.get("basic_auth_users"))
        headers = self.http(top.get("http_server_config"))
        return WebConfig(self.source, tls, users, headers)

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "expected a non-empty string")
        return value

    def file(self, value: object, key: str) -> Path:
        path = Path(self.string(value, key))
        return path if path.is_absolute() else self.base / path

    def tls(self, data: object) -> TLSServerConfig | None:
        prefix = "tls_server_config"
        section = self.mapping(data, prefix, _TLS_KEYS, _UNSUPPORTED_TLS_KEYS)
        if not section:
            return None
        for name in ("cert_file", "key_file"):
            if section.get(name) is None:
                raise self.fail(f"{prefix}.{name}", "missing: TLS needs cert_file and key_file")
        auth = section.get("client_auth_type", "NoClientCert")
        if auth not in CLIENT_AUTH_TYPES:
            raise self.fail(
                f"{prefix}.client_auth_type",
                f"invalid value {auth!r} (one of: {', '.join(CLIENT_AUTH_TYPES)})",
            )
        if auth == "RequireAnyClientCert":
            raise self.fail(
                f"{prefix}.client_auth_type",
                "RequireAnyClientCert (a certificate that is not verified) is not supported: "
                "use RequireAndVerifyClientCert with client_ca_file",
            )
        ca = section.get("client_ca_file")
        ca_path = None if ca is None else self.file(ca, f"{prefix}.client_ca_file")
        if auth in _VERIFYING and ca_path is None:
            raise self.fail(f"{prefix}.client_ca_file", f"missing: {auth} needs a client CA")
        if ca_path is not None and auth not in _VERIFYING:
            raise self.fail(
                f"{prefix}.client_auth_type",
                f"client_ca_file is set but {auth} does not verify client certificates: "
                "use RequireAndVerifyClientCert",
            )
        versions = {}
        for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
            value = section.get(name, default)
            if value not in TLS_VERSIONS:
                choices = ", ".join(TLS_VERSIONS)
                raise self.fail(f"{prefix}.{name}", f"invalid value {value!r} (one of: {choices})")
            versions[name] = value
        if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
            raise self.fail(f"{prefix}.min_version", "is above max_version")
        prefer = section.get("prefer_server_cipher_suites", True)
        if not isinstance(prefer, bool):
            raise self.fail(f"{prefix}.prefer_server_cipher_suites", "expected true or false")
        return TLSServerConfig(
            cert_file=self.file(section["cert_file"], f"{prefix}.cert_file"),
            key_file=self.file(section["key_file"], f"{prefix}.key_file"),
            client_auth_type=auth,
            client_ca_file=ca_path,
            **versions,
        )

    def users(self, data: object) -> tuple[tuple[str, bytes], ...]:
        if data is None:
            return ()
        if not isinstance(data, Mapping):
            raise self.fail("basic_auth_users", "expected a mapping of user names to bcrypt hashes")
        users = []
        for user, hashed in data.items():
            if not isinstance(user, str) or not user or ":" in user:
                raise self.fail("basic_auth_users", f"invalid user name {user!r}")
            # Never show the hash itself.
            if not isinstance(hashed, str) or not _BCRYPT_RE.fullmatch(hashed):
                raise self.fail(
                    f"basic_auth_users.{user}",
                    "not a bcrypt hash (make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
                )
            users.append((user, hashed.encode()))
        return tuple(users)

    def http(self, data: object) -> tuple[tuple[str, str], ...]:
        section = self.mapping(data, "http_server_config", _HTTP_KEYS)
        http2 = section.get("http2", True)
        if not isinstance(http2, bool):  # accepted and ignored: this server speaks HTTP/1.1
            raise self.fail("http_server_config.http2", "expected true or false")
        headers = self.mapping(section.get("headers"), "http_server_config.headers", _HEADER_NAMES)
        out = []
        for name, value in headers.items():
            text = "" if value is None else value
            if not isinstance(text, str) or any(c in text for c in "\r\n"):
                raise self.fail(f"http_server_config.headers.{name}", "expected a one-line string")
            if text:
                out.append((name, text))
        return tuple(out)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


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
                config.source, f"{prefix}.{name}", f"cannot read {path}: {_reason(exc)}"
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
