"""Phone numbers: normalization, keyed hashing, encryption at rest, and resolution for a send.

A phone lives in clear only in memory, for the send that needs it. At rest it is
Fernet-encrypted (``PII_ENCRYPTION_KEY``) in ``recipients``, keyed by ``phone_hash`` =
HMAC-SHA256(``PHONE_HASH_KEY``, E.164). Plain SHA-256 would not do: the 10⁹ Colombian mobiles
are brute-forced in minutes.

No error raised here repeats the number it was given. ``phonenumbers`` and ``cryptography`` are
imported on first use: a cold start that serves no intake does not pay for them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from executor.errors import ConfigError, PhoneError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from executor.config import Settings

COLOMBIA_REGION = "CO"
COLOMBIA_CODE = 57


def normalize_phone(raw: str) -> str:
    """E.164 form of a Colombian mobile (``3001234567`` -> ``+573001234567``).

    Landlines, other countries and junk raise PhoneError with a message that does not echo it.
    """
    import phonenumbers
    from phonenumbers import NumberParseException, PhoneNumberType

    if not isinstance(raw, str) or not raw.strip() or len(raw) > 40:
        raise PhoneError("phone is missing or not a Colombian mobile number")
    text = raw.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    # "573001234567" without '+' is the country code written out, not a 12-digit local number.
    if not text.startswith("+") and len(digits) == 12 and digits.startswith("57"):
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, COLOMBIA_REGION)
    except NumberParseException:
        raise PhoneError("phone is not a parseable phone number") from None
    if number.country_code != COLOMBIA_CODE or not phonenumbers.is_valid_number(number):
        raise PhoneError("phone is not a valid Colombian mobile number")
    if phonenumbers.number_type(number) not in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise PhoneError("phone is not a Colombian mobile number (landline or special number)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _key_bytes(value: str, variable: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ConfigError(f"{variable}: must be urlsafe-base64") from None
    if len(key) != 32:
        raise ConfigError(f"{variable}: must decode to 32 bytes")
    return key


class PhoneVault:
    """Hashes and encrypts phones with the two PII keys."""

    def __init__(self, hash_key: str, encryption_key: str) -> None:
        self._hash_key = _key_bytes(hash_key, "PHONE_HASH_KEY")
        self._encryption_key = encryption_key
        _key_bytes(encryption_key, "PII_ENCRYPTION_KEY")

    @classmethod
    def from_settings(cls, settings: Settings) -> PhoneVault:
        if settings.phone_hash_key is None:
            raise ConfigError("PHONE_HASH_KEY is required to accept or send to phone numbers")
        if settings.pii_encryption_key is None:
            raise ConfigError("PII_ENCRYPTION_KEY is required to accept or send to phone numbers")
        return cls(
            settings.phone_hash_key.get_secret_value(),
            settings.pii_encryption_key.get_secret_value(),
        )

    @cached_property
    def _fernet(self) -> Fernet:
        from cryptography.fernet import Fernet

        return Fernet(self._encryption_key.encode("ascii"))

    def hash(self, e164: str) -> str:
        return hmac.new(self._hash_key, e164.encode("ascii"), hashlib.sha256).hexdigest()

    def encrypt(self, e164: str) -> bytes:
        return self._fernet.encrypt(e164.encode("ascii"))

    def decrypt(self, token: bytes) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(bytes(token)).decode("ascii")
        except InvalidToken:
            raise PhoneError(
                "stored phone cannot be decrypted (was PII_ENCRYPTION_KEY changed?)"
            ) from None


@dataclass(frozen=True)
class ResolvedPhone:
    """A phone for one send. ``repr`` hides the number."""

    e164: str
    phone_hash: str
    source: str

    def __repr__(self) -> str:
        return f"ResolvedPhone(source={self.source!r}, phone_hash={self.phone_hash[:8]}…)"


class PhoneSource(Protocol):
    """A place a phone can come from for a guía, tried in order by the resolver."""

    name: str

    async def lookup(self, guide: str) -> str | None: ...


class HttpPhoneLookup:
    """``GET {PHONE_LOOKUP_URL}?guide=G`` with a bearer token -> ``{"phone": "..."}``.

    For upstreams that keep phones themselves. A 404 or an empty answer means "no phone".
    """

    name = "http_lookup"

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._url = url
        self._client = httpx.AsyncClient(
            headers=headers, timeout=timeout_seconds, transport=transport
        )

    async def lookup(self, guide: str) -> str | None:
        try:
            response = await self._client.get(self._url, params={"guide": guide})
        except httpx.HTTPError:
            raise PhoneError("phone lookup service did not answer") from None
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise PhoneError(f"phone lookup service answered HTTP {response.status_code}")
        try:
            body: Any = response.json()
        except ValueError:
            raise PhoneError("phone lookup service answered with invalid JSON") from None
        phone = body.get("phone") if isinstance(body, Mapping) else None
        return phone if isinstance(phone, str) and phone.strip() else None

    async def aclose(self) -> None:
        await self._client.aclose()


class PhoneResolver:
    """Finds the phone of an action: the encrypted store first, then optional lookup sources.

    ``stored`` maps phone_hash -> encrypted phone, fetched for a whole batch in one query.
    """

    def __init__(self, vault: PhoneVault, sources: Sequence[PhoneSource] = ()) -> None:
        self.vault = vault
        self.sources = list(sources)

    def from_store(self, phone_hash: str, stored: Mapping[str, bytes]) -> ResolvedPhone | None:
        token = stored.get(phone_hash)
        if token is None:
            return None
        e164 = normalize_phone(self.vault.decrypt(token))
        return ResolvedPhone(e164=e164, phone_hash=phone_hash, source="recipients")

    async def from_sources(self, guide: str) -> ResolvedPhone | None:
        for source in self.sources:
            raw = await source.lookup(guide)
            if raw is not None:
                e164 = normalize_phone(raw)
                return ResolvedPhone(
                    e164=e164, phone_hash=self.vault.hash(e164), source=source.name
                )
        return None

    async def aclose(self) -> None:
        for source in self.sources:
            closer = getattr(source, "aclose", None)
            if closer is not None:
                await closer()
