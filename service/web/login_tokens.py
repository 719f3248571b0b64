"""Protocol layer (pure, no I/O): the page's password check, its session cookie and the CSRF tokens of its forms.

Every key comes from the server's secret (SESSION_SECRET, or the one a local run made and keeps), never from the
password alone, so nothing a visitor is handed lets them test a guessed password offline. `page_keys` derives
them: the password's scrypt hash (salted by the secret: slow, and different on every deployment), and from the
secret and that hash, the key that signs sessions and the key that signs CSRF cookies and tokens. A changed
password or a rotated secret ends every session; any process with the same two accepts the same sessions.

A session is `<expiry>.<nonce>.<mac>`: the expiry in Unix seconds, a random nonce, and an HMAC-SHA256 of both. It
is good until its expiry, and never for longer than the server's own lifetime from now, whatever the expiry says.
A CSRF token is bound to something the server signed: the login form's to a signed `csrf` cookie, a signed-in
page's forms (logout) to the session itself. A value a client makes up is never signed, so never accepted.

Every cookie of the page is `Secure`, so a browser keeps it only from an origin it trusts: https, or plain http
on a loopback host (`secure_cookies_kept`). Over plain http from any other host the browser drops them and a login
cannot work: the login page says so, rather than letting it look like a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Final

KEYS_LABEL: Final = b"callscribe page keys v2"
SALT_LABEL: Final = b"callscribe password salt v2"
# scrypt's cost (RFC 7914): 128 * N * r = 16 MiB and about 36 ms per check on one core, so a guess costs that much
# too (`python -m timeit -s "import hashlib" "hashlib.scrypt(b'p' * 14, salt=b's' * 16, n=2**14, r=8, p=1)"`).
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
MAX_PASSWORD_BYTES: Final = 1024  # longer is no password of ours, and is refused before scrypt
EXPIRY_DIGITS: Final = 12  # Unix seconds until the year 33658: a longer expiry is no session, unread


@dataclass(frozen=True, slots=True, repr=False)
class PageKeys:
    """What checks the page's password and signs its sessions and forms (repr hides it: it is all secret)."""

    salt: bytes
    password_hash: bytes
    session: bytes
    csrf: bytes


def password_hash(password: bytes, salt: bytes) -> bytes:
    """scrypt of `password`: slow and memory-hard on purpose (run it off the event loop)."""
    return hashlib.scrypt(password, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


def page_keys(secret: bytes, password: bytes) -> PageKeys:
    """The keys of a deployment with this server `secret` and page `password` (one scrypt: at start-up)."""
    salt = _hmac(secret, SALT_LABEL)[:16]
    hashed = password_hash(password, salt)
    base = _hmac(secret, KEYS_LABEL + hashed)
    return PageKeys(salt=salt, password_hash=hashed, session=_hmac(base, b"session"), csrf=_hmac(base, b"csrf"))


def password_matches(keys: PageKeys, given: bytes) -> bool:
    """Whether `given` is the password, compared through scrypt in constant time (slow: off the event loop)."""
    if len(given) > MAX_PASSWORD_BYTES:
        return False
    return hmac.compare_digest(password_hash(given, keys.salt), keys.password_hash)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# --- Sessions ------------------------------------------------------------------------------------------------


def issue_session(keys: PageKeys, *, now: float, lifetime_s: float, nonce: str | None = None) -> str:
    expiry = int(now + lifetime_s)
    nonce = nonce or secrets.token_hex(16)
    body = f"{expiry}.{nonce}"
    return f"{body}.{_mac(keys.session, body.encode())}"


def session_valid(keys: PageKeys, value: str | None, *, now: float, lifetime_s: float) -> bool:
    """Whether `value` is a session these keys issued, not expired, and expiring within `lifetime_s` of `now`.

    The cap holds even for a session signed with the right key: none lives longer than the server allows now
    (a shortened DASHBOARD_SESSION_HOURS shortens the sessions already out, too).
    """
    if not value or value.count(".") != 2:
        return False
    expiry, nonce, mac = value.split(".")
    # Checked before int(): a number of thousands of digits is no expiry, and converting it costs.
    if not 0 < len(expiry) <= EXPIRY_DIGITS or not expiry.isascii() or not expiry.isdigit():
        return False
    if not hmac.compare_digest(_mac(keys.session, f"{expiry}.{nonce}".encode()), mac):
        return False
    return now < int(expiry) <= now + lifetime_s


# --- CSRF ----------------------------------------------------------------------------------------------------


def new_csrf_cookie(keys: PageKeys) -> str:
    """A login form's cookie: a random value and the server's MAC of it, so a made-up cookie is told apart."""
    value = secrets.token_hex(16)
    return f"{value}.{_mac(keys.csrf, b'cookie:' + value.encode())}"


def csrf_cookie_valid(keys: PageKeys, cookie: str | None) -> bool:
    """Whether `cookie` is one `new_csrf_cookie` made with these keys."""
    if not cookie or cookie.count(".") != 1:
        return False
    value, mac = cookie.split(".")
    return hmac.compare_digest(_mac(keys.csrf, b"cookie:" + value.encode()), mac)


def login_csrf_token(keys: PageKeys, cookie: str) -> str:
    """The login form's token, for its (signed) `csrf` cookie."""
    return _mac(keys.csrf, b"login:" + cookie.encode())


def login_csrf_valid(keys: PageKeys, cookie: str | None, token: str | None) -> bool:
    """Whether the login form's `token` belongs with a `csrf` cookie the server signed."""
    if not token or not csrf_cookie_valid(keys, cookie):
        return False
    assert cookie is not None  # checked by csrf_cookie_valid
    return hmac.compare_digest(login_csrf_token(keys, cookie), token)


def session_csrf_token(keys: PageKeys, session: str) -> str:
    """A signed-in page's forms' token (logout): bound to the session itself."""
    return _mac(keys.csrf, b"session:" + session.encode())


def session_csrf_valid(keys: PageKeys, session: str | None, token: str | None) -> bool:
    """Whether a signed-in form's `token` belongs with the `session` cookie it came with."""
    if not session or not token:
        return False
    return hmac.compare_digest(session_csrf_token(keys, session), token)


# --- Where the cookies are kept ------------------------------------------------------------------------------


def secure_cookies_kept(scheme: str, host: str) -> bool:
    """Whether a browser keeps a `Secure` cookie from this origin: https, or plain http on a loopback host.

    `host` is the request's Host header (a name or address, maybe with a port): the origin the browser sees. The
    loopback hosts are those browsers treat as trustworthy without TLS (the Secure Contexts spec): `localhost`
    and its subdomains, 127.0.0.0/8 and `::1`.
    """
    if scheme in ("https", "wss"):
        return True
    name = host_name(host).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name or address of a Host header, without its port or an IPv6 address's brackets."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_port(host: str) -> str | None:
    """The port of a Host header, if it names one."""
    rest = host.partition("]")[2] if host.startswith("[") else host if host.count(":") == 1 else ""
    port = rest.rpartition(":")[2] if ":" in rest else ""
    return port if port.isdigit() else None
