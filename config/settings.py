"""One `Settings` object, read from the environment and `.env`, validated at startup.

Production refuses to start with a missing or placeholder secret; the error names the variable so an
operator can fix it without reading code.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDERS = frozenset(
    {"", "changeme", "change-me", "changethis", "secret", "xxx", "todo", "..."}
)
"""Values that mean "somebody forgot to set this"; refused for secrets in production."""

SECRET_FIELDS = (
    "clerk_webhook_secret",
    "openrouter_api_key",
    "resend_api_key",
    "resend_webhook_secret",
    "stripe_webhook_secret",
    "autumn_secret_key",
    "r2_access_key_id",
    "r2_secret_access_key",
    "metrics_token",
)
"""Secrets that are optional, but when set in production must not be placeholders."""


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Environment = Environment.development
    data_dir: Path = Path("data")
    database_url: str | None = None
    redis_url: str | None = None
    job_queue: str = Field(default="turbokit", min_length=1)
    """The rq queue jobs go to, with REDIS_URL set (`turbokit worker` takes jobs from it)."""
    job_retries: int = Field(default=3, ge=0)
    """How many times a failed job runs again."""
    job_backoff_seconds: float = Field(default=10.0, ge=0)
    """Wait before a job's first retry; each later retry waits four times longer."""
    crons_enabled: bool = True
    """Run the cron scheduler inside `turbokit serve`; off for tests, or where another
    deployment's servers run it."""
    crons_tick_seconds: float = Field(default=5.0, gt=0)
    """How often the scheduler looks for due crons."""
    log_level: str = "INFO"
    slow_query_ms: float = Field(default=200.0, ge=0)
    db_pool_size: int = Field(default=10, ge=1)

    clerk_jwt_issuer_domain: str | None = None
    clerk_authorized_parties: Annotated[list[str], NoDecode] = Field(default_factory=list)
    clerk_webhook_secret: str | None = None
    jwks_cache_seconds: float = Field(default=3600.0, gt=0)
    jwks_min_refetch_seconds: float = Field(default=60.0, ge=0)

    openrouter_api_key: str | None = None
    openrouter_model: str = "openai/gpt-4o-mini"
    openrouter_base_url: str | None = None
    openrouter_fallback_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    app_url: str = "https://github.com/turbokit/turbokit-backend"
    app_name: str = "TurboKit"
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0)
    llm_backoff_seconds: float = Field(default=0.5, ge=0)
    run_stale_seconds: float = Field(default=900, gt=0)
    """A run silent this long and executing in no live process is ended as interrupted."""
    thread_titles: bool = True
    """Title untitled threads from their first exchange (one short, billed model call)."""

    resend_api_key: str | None = None
    resend_webhook_secret: str | None = None
    email_from: str = "TurboKit <noreply@example.com>"
    resend_base_url: str = "https://api.resend.com"
    """Resend's API; another URL reaches a stand-in (tests, a proxy)."""
    stripe_webhook_secret: str | None = None
    autumn_secret_key: str | None = None
    autumn_base_url: str | None = None
    autumn_feature_id: str = "credits"
    autumn_sync_seconds: float = Field(default=5.0, gt=0)

    r2_access_key_id: str | None = None
    r2_secret_access_key: str | None = None
    r2_bucket_name: str | None = None
    r2_endpoint_url: str | None = None
    r2_region: str = "auto"
    """The signing region: R2 takes "auto"; AWS S3 needs the bucket's region."""
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    upload_url_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    """How long a presigned download URL (R2/S3) stays valid."""

    credits_per_usd: int = Field(default=1000, gt=0)
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"openai/gpt-4o-mini": (0.15, 0.60)}
    )
    """USD per million prompt and completion tokens, for calls whose provider reported no cost
    (e.g. one cut short by a stop); JSON in MODEL_PRICES."""
    metrics_token: str | None = None

    presence_ttl_seconds: float = Field(default=30.0, gt=0)
    """A presence session is online while its last heartbeat is younger than this."""
    events_keepalive_seconds: float = Field(default=15.0, gt=0)
    """A comment line on a quiet `/v1/events` stream this often, so proxies keep it open."""
    events_retry_ms: int = Field(default=3000, ge=0)
    """The `retry:` an `EventSource` waits before reconnecting."""
    events_stream_max_seconds: float = Field(default=3600.0, gt=0)
    """A `/v1/events` stream ends after this long (the client reconnects, re-authenticating)."""
    tool_plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Modules (`package.module` or `package.module:attribute`) that add tools and agents, for
    code that is not an installed package with a `turbokit.tools` entry point."""

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("clerk_authorized_parties", "openrouter_fallback_models", "tool_plugins"):
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = [part.strip() for part in value.split(",") if part.strip()]
        return data

    @model_validator(mode="after")
    def _check_production(self) -> Self:
        if self.environment is not Environment.production:
            return self
        if not self.clerk_jwt_issuer_domain:
            raise SettingsError(
                "CLERK_JWT_ISSUER_DOMAIN must be set when ENVIRONMENT=production "
                "(development tokens are refused in production)"
            )
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None and value.strip().lower() in PLACEHOLDERS:
                raise SettingsError(f"{name.upper()} is a placeholder; set a real value")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.production

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under DATA_DIR."""
        if self.database_url:
            return _async_driver(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'turbokit.db').resolve()}"

    @property
    def llm_configured(self) -> bool:
        return bool(self.openrouter_api_key or self.openrouter_base_url)


def _async_driver(url: str) -> str:
    """Accept the URLs operators paste (postgres://, sqlite://) and pick the async driver."""
    for prefix, replacement in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
