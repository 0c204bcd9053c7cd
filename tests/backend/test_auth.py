"""Clerk tokens: RS256 with keys fetched over real HTTP; every bad token is 401 UNAUTHENTICATED."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from backend.app import create_app
from tests.conftest import asgi_client, make_settings
from tests.support.jwks import JWKSServer, SigningKey

KEY = SigningKey("key-1")


@pytest.fixture(scope="module")
def jwks() -> Iterator[JWKSServer]:
    with JWKSServer([KEY]) as server:
        yield server


@pytest.fixture(scope="module")
async def clerk_app(jwks: JWKSServer, data_dir: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        data_dir,
        database_url,
        clerk_jwt_issuer_domain=jwks.issuer,
        clerk_authorized_parties="https://app.example.com,http://localhost:3000",
        jwks_min_refetch_seconds=3600,
    )
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def clerk(clerk_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(clerk_app) as http:
        yield http


def claims(jwks: JWKSServer, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": f"user_{now}_{time.perf_counter_ns()}",
        "iss": jwks.issuer,
        "iat": now,
        "nbf": now - 1,
        "exp": now + 60,
        "azp": "https://app.example.com",
        "email": "ada@example.com",
        "name": "Ada",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_unauthenticated(http: httpx.AsyncClient, token: str | None) -> None:
    response = await http.get("/v1/me", headers=bearer(token) if token is not None else {})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_valid_clerk_token_provisions_the_user_from_its_claims(
    clerk: httpx.AsyncClient, jwks: JWKSServer
) -> None:
    response = await clerk.get("/v1/me", headers=bearer(KEY.sign(claims(jwks))))
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["email"] == "ada@example.com"
    assert me["name"] == "Ada"
    assert me["plan"] == "free"
    assert me["id"].startswith("usr_")


async def test_expired_token(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    past = int(time.time()) - 120
    await assert_unauthenticated(clerk, KEY.sign(claims(jwks, iat=past - 60, exp=past)))


async def test_not_yet_valid_token(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    await assert_unauthenticated(clerk, KEY.sign(claims(jwks, nbf=int(time.time()) + 120)))


async def test_wrong_issuer(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    await assert_unauthenticated(clerk, KEY.sign(claims(jwks, iss="https://evil.example.com")))


async def test_wrong_signing_key_with_a_known_kid(
    clerk: httpx.AsyncClient, jwks: JWKSServer
) -> None:
    impostor = SigningKey(KEY.kid)
    await assert_unauthenticated(clerk, impostor.sign(claims(jwks)))


async def test_unknown_kid_refetches_at_most_once_per_interval(
    clerk: httpx.AsyncClient, jwks: JWKSServer
) -> None:
    await clerk.get("/v1/me", headers=bearer(KEY.sign(claims(jwks))))
    before = jwks.fetches
    stranger = SigningKey("never-published")
    for _ in range(3):
        await assert_unauthenticated(clerk, stranger.sign(claims(jwks)))
    assert jwks.fetches - before <= 1


async def test_missing_sub(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    token = KEY.sign({k: v for k, v in claims(jwks).items() if k != "sub"})
    await assert_unauthenticated(clerk, token)


async def test_alg_none(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': KEY.kid})}.{b64(claims(jwks))}."
    await assert_unauthenticated(clerk, token)


async def test_hs256_signed_with_the_public_key(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    public_pem = KEY.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': KEY.kid})}.{b64(claims(jwks))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).decode().rstrip("=")
    await assert_unauthenticated(clerk, f"{signing_input}.{signature}")


async def test_unauthorized_party(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    await assert_unauthenticated(clerk, KEY.sign(claims(jwks, azp="https://phish.example.com")))


async def test_missing_or_malformed_header(clerk: httpx.AsyncClient) -> None:
    await assert_unauthenticated(clerk, None)
    await assert_unauthenticated(clerk, "not-a-jwt")
    response = await clerk.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


async def test_deleted_users_token_stops_working(
    clerk: httpx.AsyncClient, jwks: JWKSServer
) -> None:
    token = KEY.sign(claims(jwks))
    assert (await clerk.get("/v1/me", headers=bearer(token))).status_code == 200
    assert (await clerk.delete("/v1/me", headers=bearer(token))).status_code == 204
    await assert_unauthenticated(clerk, token)


async def test_development_tokens_are_refused_when_clerk_is_configured(
    clerk: httpx.AsyncClient, data_dir: Path
) -> None:
    from backend.auth import issue_dev_token

    await assert_unauthenticated(clerk, issue_dev_token(make_settings(data_dir), "mallory"))


async def test_admin_role_from_metadata(clerk: httpx.AsyncClient, jwks: JWKSServer) -> None:
    from backend.auth import _identity

    identity = _identity(claims(jwks, metadata={"role": "admin"}))
    assert identity.is_admin
