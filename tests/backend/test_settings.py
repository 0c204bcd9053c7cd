"""Settings fail fast: production without an issuer or with a placeholder secret refuses to start,
and the message names the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_development_needs_nothing() -> None:
    defaults = settings()
    assert defaults.environment == "development"
    assert defaults.resolved_database_url.startswith("sqlite+aiosqlite:///")


def test_production_without_clerk_issuer_refuses() -> None:
    with pytest.raises(ValidationError, match="CLERK_JWT_ISSUER_DOMAIN"):
        settings(environment="production")


@pytest.mark.parametrize("value", ["changeme", "", "secret"])
def test_production_with_a_placeholder_secret_refuses(value: str) -> None:
    with pytest.raises(ValidationError, match="STRIPE_WEBHOOK_SECRET"):
        settings(
            environment="production",
            clerk_jwt_issuer_domain="https://clerk.example.com",
            stripe_webhook_secret=value,
        )


def test_lists_and_urls_are_read_the_way_operators_write_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "https://a.example.com, https://b.example.com")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.example.com/app")
    loaded = settings()
    assert loaded.clerk_authorized_parties == ["https://a.example.com", "https://b.example.com"]
    assert loaded.resolved_database_url == "postgresql+asyncpg://u:p@db.example.com/app"
