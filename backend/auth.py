"""Bearer tokens: Clerk session tokens (RS256 via JWKS) in production, locally signed ones in
development. Either way a verifier turns a token into an `Identity` or raises a 401 `AppError`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from backend.errors import unauthenticated
from config.settings import Environment, Settings

log = logging.getLogger("turbokit.auth")

DEV_ISSUER = "turbokit-dev"
DEV_KID = "turbokit-dev-1"
LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the token says the caller is; the user row is found or created from this."""

    subject: str
    email: str | None
    name: str | None
    image_url: str | None
    is_admin: bool


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Identity: ...


class CachedVerifier:
    """Remembers tokens already verified until they expire: a client sends the same token with
    every request, and parsing plus RSA verification is the costliest part of authentication."""

    def __init__(self, inner: TokenVerifier, max_entries: int = 10_000) -> None:
        self.inner = inner
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    async def verify(self, token: str) -> Identity:
        hit = self._cache.get(token)
        if hit is not None and time.time() < hit[1]:
            self._cache.move_to_end(token)
            return hit[0]
        identity = await self.inner.verify(token)
        self._remember(token, identity)
        return identity

    async def aclose(self) -> None:
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()

    def _remember(self, token: str, identity: Identity) -> None:
        expires = _unverified_expiry(token)
        if expires is None:
            return
        self._cache[token] = (identity, expires)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)


class ClerkVerifier:
    """Verifies Clerk tokens against the issuer's JWKS, cached; an unknown `kid` refetches at most
    once per `min_refetch_seconds` so a stream of forged kids cannot hammer the issuer."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        assert settings.clerk_jwt_issuer_domain
        self.issuer = settings.clerk_jwt_issuer_domain.rstrip("/")
        self.jwks_url = f"{self.issuer}/.well-known/jwks.json"
        self.authorized_parties = set(settings.clerk_authorized_parties)
        self.cache_seconds = settings.jwks_cache_seconds
        self.min_refetch_seconds = settings.jwks_min_refetch_seconds
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Identity:
        kid = _header(token).get("kid")
        if not isinstance(kid, str):
            raise unauthenticated("Token has no key id")
        key = await self._key(kid)
        claims = _decode(token, key, self.issuer)
        azp = claims.get("azp")
        if self.authorized_parties and azp not in self.authorized_parties:
            raise unauthenticated("Token was issued for another party")
        return _identity(claims)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _key(self, kid: str) -> Any:
        now = time.monotonic()
        if kid in self._keys and now - self._fetched_at < self.cache_seconds:
            return self._keys[kid]
        async with self._lock:
            stale = time.monotonic() - self._fetched_at >= self.cache_seconds
            unknown = kid not in self._keys
            if stale or (
                unknown and time.monotonic() - self._fetched_at >= self.min_refetch_seconds
            ):
                await self._refresh()
        if kid not in self._keys:
            raise unauthenticated("Token signed with an unknown key")
        return self._keys[kid]

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self._client.get(self.jwks_url)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.error("could not fetch JWKS from %s: %s", self.jwks_url, exc)
            return
        self._keys = {key.key_id: key.key for key in keys if key.key_id}


class DevVerifier:
    """Accepts tokens signed by this installation's development key (`turbokit token`)."""

    def __init__(self, settings: Settings) -> None:
        self._public_key = load_dev_key(settings).public_key()

    async def verify(self, token: str) -> Identity:
        if _header(token).get("kid") != DEV_KID:
            raise unauthenticated("Token signed with an unknown key")
        return _identity(_decode(token, self._public_key, DEV_ISSUER))


def make_verifier(settings: Settings) -> CachedVerifier:
    if settings.clerk_jwt_issuer_domain:
        return CachedVerifier(ClerkVerifier(settings))
    if settings.environment is Environment.production:
        raise RuntimeError("CLERK_JWT_ISSUER_DOMAIN must be set in production")
    return CachedVerifier(DevVerifier(settings))


def load_dev_key(settings: Settings) -> rsa.RSAPrivateKey:
    """The development signing key under DATA_DIR, created on first use."""
    path = Path(settings.data_dir) / "dev-signing-key.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return key


def issue_dev_token(
    settings: Settings,
    subject: str,
    *,
    email: str | None = None,
    name: str | None = None,
    admin: bool = False,
    ttl: timedelta = timedelta(days=1),
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": subject, "iss": DEV_ISSUER, "iat": now, "nbf": now}
    claims["exp"] = now + ttl
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, load_dev_key(settings), algorithm="RS256", headers={"kid": DEV_KID})


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise unauthenticated("Missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise unauthenticated("Malformed token") from exc
    if header.get("alg") != "RS256":
        raise unauthenticated("Token must be signed with RS256")
    return header


def _decode(token: str, key: Any, issuer: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "sub", "iss"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthenticated("Token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise unauthenticated("Token is not valid yet") from exc
    except jwt.InvalidIssuerError as exc:
        raise unauthenticated("Token issuer is not trusted") from exc
    except jwt.PyJWTError as exc:
        raise unauthenticated(f"Invalid token: {exc}") from exc
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise unauthenticated("Token has no subject")
    return claims


def _identity(claims: dict[str, Any]) -> Identity:
    metadata = claims.get("metadata")
    role = claims.get("role") or (metadata.get("role") if isinstance(metadata, dict) else None)
    return Identity(
        subject=claims["sub"],
        email=_str_claim(claims, "email"),
        name=_str_claim(claims, "name"),
        image_url=_str_claim(claims, "image_url") or _str_claim(claims, "picture"),
        is_admin=role == "admin",
    )


def _unverified_expiry(token: str) -> float | None:
    """The `exp` of a token that was just verified (so reading it unverified is safe)."""
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def _str_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None
