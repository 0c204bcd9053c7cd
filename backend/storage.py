"""Where uploaded bytes live: a local directory by default, R2 or any S3 API when configured.

Keys are made by the server (an upload's id), never taken from a client, so no user input ever
becomes a path or an object name. An object arrives as a finished temporary file (written,
hashed and size-checked while the request streamed) and is moved into place whole: a reader
never sees half an object.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from config.settings import Settings, SettingsError

_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Download:
    """How to hand an object to a client: a local file to send, or a URL to redirect to."""

    path: Path | None = None
    url: str | None = None


class Storage(Protocol):
    """The few operations uploads need; implementations are safe to share across requests."""

    def staging_dir(self) -> Path:
        """A directory for temporary files on the same filesystem as local objects."""
        ...

    async def put(self, key: str, source: Path, content_type: str) -> None:
        """Store the finished file `source` under `key`; `source` is consumed (moved or removed
        by the caller afterwards)."""
        ...

    async def download(self, key: str, filename: str, content_type: str) -> Download: ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...


def content_disposition(filename: str) -> str:
    """`attachment` with the name twice: an ASCII fallback any client reads, and the exact name
    RFC 5987-encoded. Quotes, backslashes and control characters never reach the header."""
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def discard(path: Path) -> None:
    """Remove a temporary file if it is there: one metadata call, cheap enough for the loop."""
    path.unlink(missing_ok=True)


def check_key(key: str) -> str:
    """Keys are server-made ids; anything else is a programming error, refused before any I/O."""
    if not _KEY.match(key):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """Objects as files under `DATA_DIR/uploads`, named by key."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / ".staging"

    def staging_dir(self) -> Path:
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, source: Path, content_type: str) -> None:
        # Same filesystem (staging lives under root): an atomic rename, no copy.
        os.replace(source, self.path(key))

    async def download(self, key: str, filename: str, content_type: str) -> Download:
        return Download(path=self.path(key))

    async def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


class S3Storage:
    """Objects in an S3 bucket (Cloudflare R2, AWS, MinIO...), through boto3 and the endpoint URL.
    boto3 blocks, so transfers run in worker threads; presigning is local arithmetic."""

    def __init__(self, settings: Settings, staging: Path) -> None:
        import boto3
        from botocore.config import Config

        assert settings.r2_bucket_name is not None
        self.bucket = settings.r2_bucket_name
        self.url_seconds = settings.upload_url_seconds
        self._staging = staging
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.r2_endpoint_url,
            aws_access_key_id=settings.r2_access_key_id,
            aws_secret_access_key=settings.r2_secret_access_key,
            region_name=settings.r2_region,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )

    def staging_dir(self) -> Path:
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    async def put(self, key: str, source: Path, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.upload_file,
            str(source),
            self.bucket,
            check_key(key),
            ExtraArgs={"ContentType": content_type},
        )

    async def download(self, key: str, filename: str, content_type: str) -> Download:
        params = {
            "Bucket": self.bucket,
            "Key": check_key(key),
            "ResponseContentDisposition": content_disposition(filename),
            "ResponseContentType": content_type,
        }
        url = self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self.url_seconds
        )
        return Download(url=str(url))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=check_key(key))


def make_storage(settings: Settings) -> Storage:
    """S3 when `R2_BUCKET_NAME` is set (with both keys), else the local directory."""
    local_root = settings.data_dir / "uploads"
    if not settings.r2_bucket_name:
        return LocalStorage(local_root)
    if not (settings.r2_access_key_id and settings.r2_secret_access_key):
        raise SettingsError(
            "R2_BUCKET_NAME is set: R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY must be set too"
        )
    return S3Storage(settings, local_root / ".staging")
