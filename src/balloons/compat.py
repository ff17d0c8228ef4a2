"""Which machines may take which jobs: a job's compatibility tag, ``KEYID.VERSION``.

``KEYID`` names the key a job is signed with without revealing it: the first 12 hex digits
of an HMAC-SHA256, under the app's secret, of a fixed label (a public value that helps guess
nothing). ``VERSION`` is the first 12 hex digits of the SHA-256 of the code version: a
version string the app sets (``App(version=...)``, ``BALLOONS_VERSION``), else the image on Fly
(``FLY_IMAGE_REF``), else, on local machines, a digest of the source of the task modules.

The client stores the tag with each job; a machine works out its own from its secret and its
version when it starts and takes only jobs of its tag (see ``lua/take.lua``). So a warm
machine never runs a job signed with a key it does not hold, nor a job of other code.

On every machine's start-up path: the standard library only (``hashlib``, ``hmac``).
"""

from __future__ import annotations

import hashlib
import hmac
import re

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .store.keys import PoolKeys

#: What the key id is an HMAC of (changing it changes every tag).
_KEY_LABEL = b"balloons key id v1"
#: A tag as balloons writes it; anything else read from Redis is no tag.
TAG_RE = re.compile(r"^[0-9a-f]{12}\.[0-9a-f]{12}$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")
#: The longest version string an app may set (an image reference fits easily).
MAX_VERSION = 256
#: The prefix of a version made from source digests.
SOURCE_PREFIX = "src:"


def key_id(secret: bytes) -> str:
    """The public id of signing key ``secret``: 12 hex digits."""
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).hexdigest()[:12]


#: The version part of a tag that knows no version (a supervisor or a machine not told its
#: code, a job resubmitted by a process that imported no task): it matches every version of
#: its key, as before versions were checked.
ANY_VERSION = "0" * 12


def tag(secret: bytes, version: str) -> str:
    """The compatibility tag of jobs signed with ``secret`` for code ``version`` (``""``: any
    version of that key)."""
    if not version:
        return f"{key_id(secret)}.{ANY_VERSION}"
    return f"{key_id(secret)}.{hashlib.sha256(version.encode()).hexdigest()[:12]}"


def source_version(paths: list[str] | tuple[str, ...]) -> str:
    """A version made of the source of the files ``paths`` (the task modules): the SHA-256
    of each file's bytes, in the order of the sorted paths (a file that cannot be read counts
    as empty). ``src:`` and 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(set(paths)):
        h.update(path.encode())
        h.update(b"\0")
        h.update(_file_digest(path))
    return SOURCE_PREFIX + h.hexdigest()[:16]


#: The digest of each file read so far, with what ``stat`` said of it then: a process that
#: forks machines (the local fork server) reads each task module once per change, and its
#: machines find the digest made (see :func:`_file_digest`).
_DIGESTS: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}


def _file_digest(path: str) -> bytes:
    """The SHA-256 of a file's bytes (``-`` if it cannot be read), read again only when its
    device, inode, size or modification time (ns) changed since it was last read here."""
    import os

    try:
        st = os.stat(path)
    except OSError:
        return b"-"
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    known = _DIGESTS.get(path)
    if known is not None and known[0] == key:
        return known[1]
    try:
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).digest()
    except OSError:
        return b"-"
    if len(_DIGESTS) >= 1024:
        _DIGESTS.clear()
    _DIGESTS[path] = (key, digest)
    return digest


def check_version(version: str, what: str = "version") -> str:
    """``version`` when it is a usable version string; ``ValueError`` naming ``what`` else."""
    if not isinstance(version, str) or not version or len(version) > MAX_VERSION:
        raise ValueError(
            f"{what} must be a non-empty string of at most {MAX_VERSION} characters, "
            f"got {version!r}"
        )
    if not version.isprintable():
        raise ValueError(f"{what} must be printable text, got {version!r}")
    return version


def read_key_id(raw: object) -> str | None:
    """A key id read from Redis (hostile): itself when it is one, else None."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    return raw if isinstance(raw, str) and _KEY_ID_RE.match(raw) else None


def read_tag(raw: object) -> str:
    """A tag read from Redis (hostile): itself when balloons could have written it, else ``""``."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return ""
    return raw if isinstance(raw, str) and TAG_RE.match(raw) else ""


class Compat:
    """An app's code version and its jobs' tag (:meth:`balloons.App.compat`)."""

    __slots__ = ("conf", "env", "explicit", "files", "tag", "version")

    def __init__(self, tag: str, version: str, files: tuple[str, ...], explicit: bool) -> None:
        self.tag = tag
        self.version = version
        #: The task module files the version is a digest of (none for a version named).
        self.files = files
        #: Whether the app names its version (given to its machines as ``BALLOONS_VERSION``).
        self.explicit = explicit
        kid, _, digest = tag.partition(".")
        #: The pool setting SUBMIT stores with each job: the current version of this key's
        #: jobs, which a pool's warm floor keeps machines of (``v:KEYID DIGEST``).
        self.conf = f" v:{kid} {digest}" if digest != ANY_VERSION else ""
        #: What a machine is told at launch to work out the same version.
        self.env = self._machine_env()

    def __repr__(self) -> str:
        return f"Compat(tag={self.tag!r}, version={self.version!r})"

    def _machine_env(self) -> dict[str, str]:
        import os

        if self.explicit:
            return {"BALLOONS_VERSION": self.version}
        if self.files:
            return {"BALLOONS_VERSION_FILES": os.pathsep.join(self.files)}
        return {}


def compat_of(secret: bytes, version: str | None, image: object, tasks: Iterable[str]) -> Compat:
    """The compatibility of an app's jobs: its named ``version``, else the Fly ``image`` its
    machines run, else a digest of the source of the modules of ``tasks`` (task names)."""
    if version:
        return Compat(tag(secret, version), version, (), True)
    if isinstance(image, str) and image:
        return Compat(tag(secret, image), image, (), False)
    files = task_files(tasks)
    v = source_version(files) if files else ""  # no task module: any version of the key
    return Compat(tag(secret, v), v, files, False)


def task_files(tasks: Iterable[str]) -> tuple[str, ...]:
    """The source files of the modules that define ``tasks`` (``MODULE:QUALNAME``), sorted."""
    import os
    import sys

    out = set()
    for name in tasks:
        module = name.partition(":")[0]
        path = getattr(sys.modules.get(module), "__file__", None)
        if isinstance(path, str) and path.endswith(".py"):
            out.add(os.path.abspath(path))
    return tuple(sorted(out))


def wake_keys(pk: PoolKeys, tag_: str) -> tuple[str, ...]:
    """The wake lists a machine of tag ``tag_`` waits on: its tag's, its key's for jobs of no
    known version, and the pool's for jobs with no tag."""
    kid, _, version = tag_.partition(".")
    if version == ANY_VERSION:
        return (pk.wake_of(tag_), pk.wake)
    return (pk.wake_of(tag_), pk.wake_of(f"{kid}.{ANY_VERSION}"), pk.wake)
