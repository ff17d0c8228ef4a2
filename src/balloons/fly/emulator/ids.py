"""Identifiers shaped like Fly's: machine ids, ULIDs, machine names, 6PN addresses.

Every generator draws from one :class:`random.Random`, so an emulator built with a ``seed``
hands out the same ids in the same order, which makes a failing run replayable. ULIDs are
monotonic within a process (a later one always sorts after an earlier one, even within the same
millisecond) because ``wait?from_event_id=`` compares event ids by their order.
"""

from __future__ import annotations

import random
import threading
import time

#: Crockford's base32 alphabet, as ULIDs use it.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_ADJECTIVES = (
    "aged", "ancient", "autumn", "billowing", "bitter", "black", "blue", "bold", "broken",
    "cold", "cool", "crimson", "damp", "dark", "dawn", "delicate", "divine", "dry", "empty",
    "falling", "floral", "fragrant", "frosty", "green", "hidden", "holy", "icy", "late",
    "lingering", "little", "lively", "long", "misty", "morning", "muddy", "nameless", "old",
    "patient", "polished", "proud", "purple", "quiet", "red", "restless", "rough", "shy",
    "silent", "small", "snowy", "solitary", "sparkling", "spring", "still", "summer", "twilight",
    "wandering", "weathered", "white", "wild", "winter", "wispy", "withered", "young",
)  # fmt: skip
_NOUNS = (
    "bird", "breeze", "brook", "bush", "butterfly", "cherry", "cloud", "darkness", "dawn",
    "dew", "dream", "dust", "feather", "field", "fire", "firefly", "flower", "fog", "forest",
    "frog", "frost", "glade", "glitter", "grass", "haze", "hill", "lake", "leaf", "meadow",
    "moon", "morning", "mountain", "night", "paper", "pine", "pond", "rain", "resonance",
    "river", "sea", "shadow", "shape", "silence", "sky", "smoke", "snow", "snowflake", "sound",
    "star", "sun", "sunset", "surf", "thunder", "tree", "violet", "voice", "water", "waterfall",
    "wave", "wildflower", "wind", "wood",
)  # fmt: skip


class IdSource:
    """Generates every identifier the emulator hands out, from one seeded stream."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_random = 0

    def machine_id(self) -> str:
        """14 lowercase hex characters, like ``1857156b526dd8``."""
        with self._lock:
            return f"{self._rng.getrandbits(56):014x}"

    def ulid(self) -> str:
        """A 26-character monotonic ULID (48-bit ms timestamp, 80 random bits)."""
        with self._lock:
            now_ms = int(time.time() * 1000)
            if now_ms <= self._last_ms:
                # Same (or an earlier, if the clock stepped back) millisecond: keep the
                # timestamp and bump the random part so the order still holds.
                now_ms = self._last_ms
                value = self._last_random + 1
            else:
                value = self._rng.getrandbits(79)  # top bit clear leaves room to increment
            self._last_ms, self._last_random = now_ms, value
            return _encode(now_ms, 10) + _encode(value, 16)

    def machine_name(self) -> str:
        """A generated name like ``aged-thunder-7371``."""
        with self._lock:
            adjective = self._rng.choice(_ADJECTIVES)
            noun = self._rng.choice(_NOUNS)
            return f"{adjective}-{noun}-{self._rng.randrange(10000):04d}"

    def private_ip(self) -> str:
        """A 6PN-style IPv6 address in Fly's ``fdaa::/16`` range."""
        with self._lock:
            groups = [f"{self._rng.getrandbits(16):x}" for _ in range(4)]
            return "fdaa:0:" + ":".join(groups) + ":2"

    def token_hex(self, nbytes: int) -> str:
        """Random hex, used for lease nonces and app ids."""
        with self._lock:
            return f"{self._rng.getrandbits(8 * nbytes):0{2 * nbytes}x}"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))
