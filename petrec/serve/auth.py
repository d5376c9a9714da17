"""API keys: loaded from ``$PETREC_API_KEYS`` or a JSON file, checked in constant time.

File (or variable) format::

    {"keys": [
        {"name": "team-x", "key_sha256": "<hex sha256 of the key>", "adapters": ["*"], "admin": true},
        {"name": "team-y", "key": "<the key itself>", "adapters": ["ctr-a", "ctr-b"]}
    ]}

``$PETREC_API_KEYS`` may also be a plain comma-separated list of keys (each allowed every
adapter, none admin). ``admin`` rights apply to the key's own ``adapters`` only (no list: all). Only sha256 digests are kept in memory. A request presents its key as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; the digest is compared against *every*
configured digest with :func:`hmac.compare_digest` (no early exit). Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variable with the keys (JSON as above, or comma-separated keys).
KEYS_ENV = "PETREC_API_KEYS"


class AuthConfigError(ValueError):
    """The key file / variable is malformed (the message never contains a key)."""


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and what it may do."""

    name: str
    adapters: tuple[str, ...] = ("*",)
    admin: bool = False

    def allows(self, adapter: str) -> bool:
        """Whether this key may use ``adapter``."""
        return "*" in self.adapters or adapter in self.adapters

    @property
    def unrestricted(self) -> bool:
        """Whether this key may use every adapter (``"*"`` in its list, or no list given)."""
        return "*" in self.adapters

    def may_manage(self, adapter: str) -> bool:
        """Whether this key may load / replace / delete ``adapter``: an admin key, and only for
        the adapters of its list (a key without a list: all)."""
        return self.admin and self.allows(adapter)


@dataclass
class KeyRing:
    """The configured keys, as sha256 digests."""

    entries: list[tuple[bytes, Principal]] = field(default_factory=list)
    anonymous: bool = False

    def check(self, presented: str | None) -> Principal | None:
        """The principal of ``presented`` or None; constant time in the key (all digests compared)."""
        if self.anonymous:
            return Principal("anonymous", ("*",), admin=True)
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for stored, principal in self.entries:
            if hmac.compare_digest(digest, stored) and found is None:
                found = principal
        return found


def _digest_of(entry: dict, where: str, index: int) -> bytes:
    if "key_sha256" in entry:
        value = entry["key_sha256"]
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise AuthConfigError(f"{where}: keys[{index}].key_sha256 is not a 64-character hex digest")
        return raw
    if isinstance(entry.get("key"), str) and entry["key"]:
        return hashlib.sha256(entry["key"].encode()).digest()
    raise AuthConfigError(f"{where}: keys[{index}] needs 'key' or 'key_sha256'")


def parse_keys(text: str, where: str) -> KeyRing:
    """Parse the JSON key format (or comma-separated keys) into a :class:`KeyRing`.

    Raises:
        AuthConfigError: Malformed text; the message names the entry, never a key.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        keys = [k.strip() for k in stripped.split(",") if k.strip()]
        return KeyRing([(hashlib.sha256(k.encode()).digest(), Principal(f"key-{i}"))
                        for i, k in enumerate(keys)])
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise AuthConfigError(f"{where}: expected {{\"keys\": [...]}}")
    ring = KeyRing()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise AuthConfigError(f"{where}: keys[{i}] is not an object")
        unknown = sorted(set(entry) - {"name", "key", "key_sha256", "adapters", "admin"})
        if unknown:
            raise AuthConfigError(f"{where}: keys[{i}] has unknown field(s) {unknown}")
        adapters = entry.get("adapters", ["*"])
        if not isinstance(adapters, list) or not all(isinstance(a, str) for a in adapters):
            raise AuthConfigError(f"{where}: keys[{i}].adapters must be a list of names or [\"*\"]")
        principal = Principal(str(entry.get("name", f"key-{i}")), tuple(adapters), bool(entry.get("admin", False)))
        ring.entries.append((_digest_of(entry, where, i), principal))
    return ring


def load_keys(keys_file: str | None, *, allow_anonymous: bool = False) -> KeyRing:
    """Keys from ``keys_file``, else ``$PETREC_API_KEYS``.

    Raises:
        AuthConfigError: No keys configured and ``allow_anonymous`` is off, or malformed keys.
    """
    if keys_file:
        path = Path(keys_file)
        if not path.is_file():
            raise AuthConfigError(f"API key file {str(path)!r} not found")
        ring = parse_keys(path.read_text(encoding="utf-8"), str(path))
    elif os.environ.get(KEYS_ENV):
        ring = parse_keys(os.environ[KEYS_ENV], f"${KEYS_ENV}")
    else:
        ring = KeyRing()
    if not ring.entries:
        if not allow_anonymous:
            raise AuthConfigError(
                f"no API keys configured: set {KEYS_ENV}, pass --api-keys FILE, or run with "
                "--allow-anonymous to serve without authentication"
            )
        ring.anonymous = True
    return ring


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries (``Authorization: Bearer K`` or ``X-API-Key: K``)."""
    if x_api_key:
        return x_api_key
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None
