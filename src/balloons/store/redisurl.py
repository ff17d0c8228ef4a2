"""Redis URLs as balloons reads them: ``redis://[user:password@]host[:port][/db]``,
``rediss://`` (TLS), ``unix:///path/to.sock``; the query options of :data:`URL_OPTIONS`, read
as redis-py reads them. Any other option is refused (:func:`check_url`): the app's redis-py
client would act on it and machines would not. :func:`mask_url` makes a URL safe to show.
Standard library only, and ``urllib.parse`` only for URLs a machine is not usually given:
every machine reads its URL here.
"""

from __future__ import annotations

import os
import socket

from ..errors import ConfigError

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from typing import Any

#: What a Redis URL says: scheme, host, port, username, password, socket path (unix), db, query.
UrlFields = tuple[str, str, int, "str | None", "str | None", str, str, dict[str, list[str]]]
#: The query options of a Redis URL that this client reads (as redis-py does), and the
#: schemes each applies to.
URL_OPTIONS: dict[str, tuple[str, ...]] = {
    "db": ("redis", "rediss", "unix"),
    "username": ("redis", "rediss", "unix"),
    "password": ("redis", "rediss", "unix"),
    "ssl_ca_certs": ("rediss",),  # a PEM file of the CAs to trust (default: the system's)
    "ssl_ca_path": ("rediss",),  # a directory of them
    "ssl_cert_reqs": ("rediss",),  # required (default), optional or none
    "ssl_check_hostname": ("rediss",),  # true (default) or false
    "ssl_certfile": ("rediss",),  # the client's certificate (mutual TLS), PEM
    "ssl_keyfile": ("rediss",),  # its key, when not in ssl_certfile
    # seconds a reply may take (a blocking command's: its block time and this); see
    # DEFAULT_TIMEOUT
    "socket_timeout": ("redis", "rediss", "unix"),
}
#: Seconds a Redis command's reply may take by default (a blocking command's: its block time
#: and this), after which the command fails with a ``StoreError`` rather than wait for ever
#: on a server that went silent. ``App(redis_timeout=...)``, ``BALLOONS_REDIS_TIMEOUT``, or
#: the URL's ``socket_timeout`` option (which machines read too) set it.
DEFAULT_TIMEOUT = 10.0
#: The range of that timeout, in seconds.
TIMEOUT_RANGE = (0.05, 86400.0)
#: TCP keepalive on every connection to Redis: the first probe after this many idle seconds,
#: then one every few seconds, and the connection is dropped after this many unanswered.
KEEPALIVE = {"TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
_CERT_REQS = ("none", "optional", "required")
_BOOLS = {"1": True, "t": True, "true": True, "y": True, "yes": True}
_BOOLS.update({"0": False, "f": False, "false": False, "n": False, "no": False})


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for messages and logs."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    scheme, _, rest = url.partition("://")
    broken = (
        "@" in parts.path + parts.fragment
        or not netloc.rpartition(":")[2].isdigit()
        or "@" in parts.query.split("&", 1)[0].split("=", 1)[0]  # no option's name has one
    )
    if "@" not in netloc and ":" in netloc and "@" in rest and broken:
        return _mask_broken_userinfo(scheme, netloc, rest)
    if "@" not in netloc and "password=" not in parts.query:
        return url  # nothing to hide (and unix:/// stays as written)
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{host}" if user else f"***@{host}"
    query = parts.query
    if "password=" in query:  # password=, and ssl_password= too
        query = "&".join(
            q.split("=", 1)[0] + "=***" if q.split("=", 1)[0].endswith("password") else q
            for q in query.split("&")
        )
    return parts._replace(netloc=netloc, query=query).geturl()


def _mask_broken_userinfo(scheme: str, netloc: str, rest: str) -> str:
    """A URL whose password holds an unencoded '/', '?' or '#', which ends the host early:
    everything from the first ':' to the last '@' may be the password, so none of it is
    shown."""
    user = netloc.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{rest.rsplit('@', 1)[1]}"


def check_url(url: str) -> None:
    """Refuse a Redis URL that this client, and so a machine, would not read as the app's
    redis-py client does: another scheme, a query option not in :data:`URL_OPTIONS` or one
    given to the wrong scheme, twice, or with a value it cannot take. ``ConfigError`` names
    the option and what was expected; the URL is masked."""
    if _simple_url(url) is None:
        _read_url(url)


def _read_url(url: str) -> UrlFields:
    """:func:`_url`, with the scheme and the query options checked (see :func:`check_url`)."""
    from urllib.parse import parse_qsl, urlsplit

    where = mask_url(url)
    try:
        fields = _url(url)
        options = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError as exc:
        # urllib's message quotes the text it took for the port: a password's, when a
        # '/', '?' or '#' in it ended the host early.
        reason = str(exc) if "'" not in str(exc) else "its port is not a number"
        raise ConfigError(f"malformed Redis URL {where}: {reason} ({_ENCODE})") from None
    scheme = fields[0]
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"Redis URL {where!r} must start with redis://, rediss:// or unix://")
    names = [name for name, _ in options]
    for name, value in options:
        if "@" in name:  # a password's end after a '?' in it: not shown
            raise ConfigError(f"malformed Redis URL {where}: {_ENCODE}")
        if name not in URL_OPTIONS:
            raise ConfigError(
                f"Redis URL option {name!r} in {where} is not supported: a machine's Redis "
                f"client reads only {', '.join(URL_OPTIONS)}"
            )
        if scheme not in URL_OPTIONS[name]:
            raise ConfigError(
                f"Redis URL option {name} in {where} applies to rediss:// URLs only "
                "(a TLS connection)"
            )
        if names.count(name) > 1:
            raise ConfigError(f"Redis URL option {name} is given twice in {where}: expected once")
        shown = "***" if name == "password" else repr(value)
        expected = {
            "db": "a database number" if not value.isdigit() else "",
            "ssl_cert_reqs": "none, optional or required" if value not in _CERT_REQS else "",
            "ssl_check_hostname": "true or false" if value.lower() not in _BOOLS else "",
            "socket_timeout": "" if _seconds(value) is not None else _TIMEOUT_WANTED,
        }.get(name, "" if value else "a value")
        if expected:
            raise ConfigError(f"Redis URL option {name}={shown} in {where}: expected {expected}")
    if scheme != "unix" and "db" not in names and not (fields[6].isdigit() or not fields[6]):
        # redis-py reads such a path as database 0, a machine's client as the text; which
        # may be a password's end (an unencoded '/' in it), so it is not shown.
        raise ConfigError(
            f"malformed Redis URL {where}: the path after its host is not a database number "
            "(any '/', '?', '#' or '@' in the user or password must be percent-encoded)"
        )
    if "ssl_keyfile" in names and "ssl_certfile" not in names:
        raise ConfigError(
            f"Redis URL option ssl_keyfile in {where} needs ssl_certfile: the client's "
            "certificate that goes with the key"
        )
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    for name in ("username", "password"):
        if name in names and (userinfo.partition(":")[2 if name == "password" else 0]):
            raise ConfigError(
                f"Redis URL {where} gives its {name} twice, before the host and as an "
                "option: expected one of them"
            )
    return fields


_ENCODE = (
    "expected redis://[USER:PASSWORD@]HOST[:PORT][/DB], any '/', '?', '#' or '@' in the user "
    "or password percent-encoded"
)
_TIMEOUT_WANTED = f"a number of seconds from {TIMEOUT_RANGE[0]:g} to {TIMEOUT_RANGE[1]:g}"


def _seconds(value: str) -> float | None:
    """A timeout option's value in seconds; None when it is not one in range (NaN neither)."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if TIMEOUT_RANGE[0] <= seconds <= TIMEOUT_RANGE[1] else None


def url_timeout(query: dict[str, list[str]], default: float | None) -> float | None:
    """The reply timeout a URL's query sets (``socket_timeout``), else ``default``."""
    given = query.get("socket_timeout")
    seconds = _seconds(given[0]) if given else None
    return default if seconds is None else seconds


def timeout_of(url: str, default: float) -> float:
    """The reply timeout of clients of ``url``: its ``socket_timeout`` option, else
    ``default``."""
    fields = _simple_url(url) or _read_url(url)
    return url_timeout(fields[7], default) or default


def _url(url: str) -> UrlFields:
    """The fields of a Redis URL, as redis-py reads them (``urllib.parse``)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    unix = parts.scheme == "unix"
    password = unquote(parts.password) if parts.password else None
    if "password" in query:
        password = query["password"][0]
    username = unquote(parts.username) if parts.username else None
    if "username" in query:
        username = query["username"][0]
    db = query.get("db", [""])[0] or ("" if unix else parts.path.strip("/"))
    return (
        parts.scheme,
        parts.hostname or "127.0.0.1",
        parts.port or 6379,
        username,
        password,
        unquote(parts.path) if unix else "",
        db,
        query,
    )


def _simple_url(url: str) -> UrlFields | None:
    """:func:`_url` for the URLs machines are given (``redis://[user:password@]host[:port]
    [/db]``, ``unix:///path``: no query, escape, IPv6 or other oddity), without importing
    ``urllib.parse`` (and ``ipaddress``), ~2 ms of every machine's start-up. None for any
    other URL: :func:`_url` reads it. A test checks both agree."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        return None
    if not rest.isascii() or any(odd in rest for odd in "?#[]%\\ \t\r\n"):
        return None
    netloc, slash, path = rest.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    host, _, port = hostport.partition(":")
    if ":" in port or (port and not (port.isdigit() and port.isascii() and int(port) <= 65535)):
        return None  # urllib.parse's own errors, or its reading
    user, has_password, password = userinfo.partition(":")
    unix = scheme == "unix"
    if not unix and not (slash + path).strip("/").isdigit() and path.strip("/"):
        return None  # not a database number: _read_url refuses it
    return (
        scheme,
        host.lower() or "127.0.0.1",
        int(port or 0) or 6379,
        user or None,
        password if has_password and password else None,
        slash + path if unix else "",
        "" if unix else (slash + path).strip("/"),
        {},
    )


# ------------------------------------------------- sockets and files of a connection
def keepalive(sock: socket.socket) -> None:
    """Turn TCP keepalive on for ``sock``, probing as :data:`KEEPALIVE` says where the
    platform lets it be set: a peer that vanished without a word (a host gone, a path
    dropped) then breaks the connection rather than leave it open for ever."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE.items():
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _send_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound each write on a socket that has no timeout of its own (``SO_SNDTIMEO``)."""
    _kernel_timeout(sock, socket.SO_SNDTIMEO, seconds)


def _recv_timeout(sock: socket.socket, seconds: float | None) -> None:
    """Bound each read on a socket that has no timeout of its own (``SO_RCVTIMEO``; None:
    none). A read that waited that long fails with ``BlockingIOError``; unlike Python's own
    socket timeout, this costs no ``poll`` before each read."""
    _kernel_timeout(sock, socket.SO_RCVTIMEO, seconds or 0.0)


def _kernel_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    import struct

    whole = int(seconds)
    usec = int((seconds - whole) * 1e6)
    if seconds > 0 and not whole and not usec:
        usec = 1  # 0 would mean no timeout at all
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", whole, usec))


def _signature(path: str | None) -> object:
    """What tells one version of a file from the next: its inode, size and change time."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


#: TLS contexts by their options, with what their files were when read: building one reads
#: them (the system's CAs by default, milliseconds), so it is built once, not per connection,
#: and again when a file is replaced (a certificate rotated).
_CONTEXTS: dict[tuple[str | None, ...], tuple[Any, tuple[object, ...]]] = {}
_TLS_FILES = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")


def tls_context(query: dict[str, list[str]]) -> Any:
    """The TLS context of a URL's ``ssl_*`` options (:data:`URL_OPTIONS`; ``query``: the
    URL's), as redis-py builds it."""
    q = {k: v[0] for k, v in query.items() if k.startswith("ssl_")}
    key = tuple(q.get(name) for name in URL_OPTIONS if name.startswith("ssl_"))
    files = tuple(_signature(q.get(name)) for name in _TLS_FILES)
    ctx, made_of = _CONTEXTS.get(key, (None, None))
    if ctx is None or made_of != files:  # new options, or a file replaced (rotated) since
        import ssl

        ctx = ssl.create_default_context(cafile=q.get("ssl_ca_certs"), capath=q.get("ssl_ca_path"))
        reqs = q.get("ssl_cert_reqs", "required")
        ctx.check_hostname = reqs != "none" and _BOOLS[q.get("ssl_check_hostname", "1").lower()]
        ctx.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
            reqs, ssl.CERT_REQUIRED
        )
        if "ssl_certfile" in q:
            ctx.load_cert_chain(q["ssl_certfile"], q.get("ssl_keyfile"))
        _CONTEXTS[key] = (ctx, files)
    return ctx
