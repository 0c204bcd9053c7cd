"""Uploads: streamed in, hashed, owned, paged; bytes served from the local directory, or through a
presigned redirect from a real S3 API (moto's server) on loopback."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi import FastAPI
from moto.server import ThreadedMotoServer

from backend.app import create_app
from tests.conftest import Users, asgi_client, make_settings
from tests.support.servers import serve

MISSING = "upl_01JD0000000000000000000000"


async def upload(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    content: bytes,
    filename: str = "notes.txt",
    content_type: str = "text/plain",
) -> httpx.Response:
    files = {"file": (filename, content, content_type)}
    return await http.post("/v1/uploads", headers=headers, files=files)


async def created(
    http: httpx.AsyncClient, headers: dict[str, str], content: bytes, **kw: Any
) -> Any:
    response = await upload(http, headers, content, **kw)
    assert response.status_code == 201, response.text
    return response.json()


def stored_files(app: FastAPI) -> set[str]:
    root: Path = app.state.storage.root
    return {p.name for p in root.iterdir() if p.is_file()}


# --- local storage (the default) -----------------------------------------------------------------


async def test_upload_read_download_delete(
    client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    me = users.headers()
    content = b"hello, uploads\n" * 1000

    item = await created(client, me, content, filename="notes.txt", content_type="text/plain")

    assert set(item) == {"id", "filename", "content_type", "size", "sha256", "created_at"}
    assert item["id"].startswith("upl_")
    assert item["filename"] == "notes.txt"
    assert item["content_type"] == "text/plain"
    assert item["size"] == len(content)
    assert item["sha256"] == hashlib.sha256(content).hexdigest()
    assert item["created_at"].endswith("Z")
    assert item["id"] in stored_files(app)

    url = f"/v1/uploads/{item['id']}"
    assert (await client.get(url, headers=me)).json() == item
    download = await client.get(f"{url}/content", headers=me)
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"].startswith("text/plain")
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    )
    assert download.headers["x-content-type-options"] == "nosniff"

    assert (await client.delete(url, headers=me)).status_code == 204
    assert item["id"] not in stored_files(app)
    for response in (
        await client.get(url, headers=me),
        await client.get(f"{url}/content", headers=me),
        await client.delete(url, headers=me),
    ):
        assert response.status_code == 404
        assert response.json()["error"] == {
            "code": "NOT_FOUND",
            "message": "Upload not found",
            "data": {},
        }


async def test_an_empty_file_is_an_upload(client: httpx.AsyncClient, users: Users) -> None:
    me = users.headers()
    item = await created(client, me, b"", filename="empty.bin", content_type="")
    assert item["size"] == 0
    assert item["sha256"] == hashlib.sha256(b"").hexdigest()
    assert item["content_type"] == "application/octet-stream"
    assert (await client.get(f"/v1/uploads/{item['id']}/content", headers=me)).content == b""


async def test_another_users_upload_is_not_found_on_every_route(
    client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    owner, stranger = users.headers(), users.headers()
    item = await created(client, owner, b"private bytes")
    url = f"/v1/uploads/{item['id']}"
    for response in (
        await client.get(url, headers=stranger),
        await client.get(f"{url}/content", headers=stranger),
        await client.delete(url, headers=stranger),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert (await client.get("/v1/uploads", headers=stranger)).json() == {
        "items": [],
        "next_cursor": None,
    }
    assert item["id"] in stored_files(app)  # the stranger's delete removed nothing
    assert (await client.get(f"{url}/content", headers=owner)).content == b"private bytes"


async def test_list_is_a_keyset_page_newest_first(client: httpx.AsyncClient, users: Users) -> None:
    me = users.headers()
    ids = [(await created(client, me, f"file {n}".encode()))["id"] for n in range(5)]

    first = (await client.get("/v1/uploads?limit=2", headers=me)).json()
    assert [i["id"] for i in first["items"]] == [ids[4], ids[3]]
    second = (
        await client.get(f"/v1/uploads?limit=2&cursor={first['next_cursor']}", headers=me)
    ).json()
    assert [i["id"] for i in second["items"]] == [ids[2], ids[1]]
    last = (
        await client.get(f"/v1/uploads?limit=2&cursor={second['next_cursor']}", headers=me)
    ).json()
    assert [i["id"] for i in last["items"]] == [ids[0]]
    assert last["next_cursor"] is None


def multipart(filename: bytes, content: bytes, boundary: str = "b0undary") -> dict[str, Any]:
    """A body written byte for byte (httpx would percent-encode an unusual filename)."""
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\n\r\n'
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {
        "content": body,
        "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    }


async def test_filenames_are_sanitised(client: httpx.AsyncClient, users: Users) -> None:
    me = users.headers()
    cases = {
        b"../../etc/passwd": "passwd",
        b"C:\\Users\\me\\report.pdf": "report.pdf",
        b"tab\tand\x07bell\x1b[31m.txt": "tabandbell[31m.txt",
        "\u202egnp.exe".encode(): "gnp.exe",  # no right-to-left override
        b"..": "upload",
        b"x" * 300 + b".txt": "x" * 255,
        b"\xff\xfe.bin": "\ufffd\ufffd.bin",
    }
    for raw, clean in cases.items():
        request = multipart(raw, b"data")
        response = await client.post(
            "/v1/uploads", headers={**me, **request["headers"]}, content=request["content"]
        )
        assert response.status_code == 201, response.text
        assert response.json()["filename"] == clean, raw


async def test_content_disposition_keeps_unicode_and_cannot_be_broken(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    request = multipart('résumé \\"final\\";.pdf'.encode(), b"data")  # escaped quotes
    response = await client.post(
        "/v1/uploads", headers={**me, **request["headers"]}, content=request["content"]
    )
    item = response.json()
    assert item["filename"] == 'résumé "final";.pdf'
    response = await client.get(f"/v1/uploads/{item['id']}/content", headers=me)
    assert response.headers["content-disposition"] == (
        'attachment; filename="r_sum_ _final_;.pdf"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%3B.pdf"
    )


async def test_a_declared_media_type_is_kept_only_when_well_formed(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    kept = await created(client, me, b"{}", content_type="Application/JSON; charset=utf-8")
    assert kept["content_type"] == "application/json"
    for nonsense in ("not a media type", "text/", "a/b/c", "x" * 300 + "/y"):
        dropped = await created(client, me, b"<x>", content_type=nonsense)
        assert dropped["content_type"] == "application/octet-stream", nonsense


async def test_bad_requests_are_validation_errors(client: httpx.AsyncClient, users: Users) -> None:
    me = users.headers()
    not_multipart = await client.post("/v1/uploads", headers=me, json={"file": "x"})
    no_file = await client.post("/v1/uploads", headers=me, files={"other": ("a.txt", b"x")})
    not_a_file = await client.post("/v1/uploads", headers=me, data={"file": "just text"})
    two_files = await client.post(
        "/v1/uploads", headers=me, files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))]
    )
    truncated = await client.post(
        "/v1/uploads",
        headers={**me, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nab',
    )
    for response in (not_multipart, no_file, not_a_file, two_files, truncated):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (await client.get("/v1/uploads", headers=me)).json()["items"] == []
    bad_id = await client.get("/v1/uploads/prj_01JD0000000000000000000000", headers=me)
    assert bad_id.status_code == 422
    assert (await client.get(f"/v1/uploads/{MISSING}", headers=me)).status_code == 404


async def test_routes_need_a_token(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/v1/uploads"),
        await client.post("/v1/uploads", files={"file": ("a.txt", b"x")}),
        await client.get(f"/v1/uploads/{MISSING}/content"),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"


# --- the size limit, checked while streaming ------------------------------------------------------

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
async def small_app(data_dir: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(data_dir, database_url, max_upload_bytes=LIMIT)
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


class _Body:
    """A multipart body produced chunk by chunk, recording how much of it was read."""

    def __init__(self, size: int, chunk: int = 8192) -> None:
        self.boundary = uuid.uuid4().hex
        self.size = size
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        left = self.size
        while left > 0:
            n = min(self.chunk, left)
            self.sent += n
            left -= n
            yield b"x" * n
        yield f"\r\n--{self.boundary}--\r\n".encode()


async def test_exactly_the_limit_is_accepted(small_app: FastAPI, users: Users) -> None:
    async with asgi_client(small_app) as http:
        item = await created(http, users.headers(), os.urandom(LIMIT))
    assert item["size"] == LIMIT


async def test_over_the_limit_is_413_while_streaming(small_app: FastAPI, users: Users) -> None:
    me = users.headers()
    body = _Body(size=50 * LIMIT)  # no Content-Length: only the stream itself can tell
    async with asgi_client(small_app) as http:
        response = await http.post(
            "/v1/uploads",
            headers={**me, "Content-Type": f"multipart/form-data; boundary={body.boundary}"},
            content=body,
        )
        listed = (await http.get("/v1/uploads", headers=me)).json()
    assert response.status_code == 413, response.text
    assert response.json()["error"] == {
        "code": "PAYLOAD_TOO_LARGE",
        "message": f"The file is larger than {LIMIT} bytes",
        "data": {"max_bytes": LIMIT},
    }
    assert body.sent < 50 * LIMIT  # refused long before the end
    assert listed["items"] == []
    staging = small_app.state.storage.staging_dir()
    assert list(staging.iterdir()) == []  # the partial temporary file is gone


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    small_app: FastAPI, users: Users
) -> None:
    async with asgi_client(small_app) as http:
        response = await upload(http, users.headers(), b"y" * (LIMIT + 100_000))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


# --- R2 / S3 -------------------------------------------------------------------------------------

BUCKET = "turbokit-uploads"
S3_KEYS = {"r2_access_key_id": "test-key", "r2_secret_access_key": "test-secret"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def s3_url(data_dir: Path, database_url: str, s3_endpoint: str) -> AsyncIterator[str]:
    settings = make_settings(
        data_dir,
        database_url,
        r2_bucket_name=BUCKET,
        r2_endpoint_url=s3_endpoint,
        upload_url_seconds=60,
        **S3_KEYS,
    )
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application), serve(application) as url:
        yield url


def s3_objects(endpoint: str) -> dict[str, bytes]:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    )
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


async def test_s3_upload_redirects_to_a_presigned_url_and_delete_removes_the_object(
    s3_url: str, s3_endpoint: str, users: Users
) -> None:
    me = users.headers()
    content = os.urandom(300_000)
    async with httpx.AsyncClient(base_url=s3_url, timeout=30) as http:
        item = await created(http, me, content, filename="photo é.jpg", content_type="image/jpeg")
        assert item["sha256"] == hashlib.sha256(content).hexdigest()
        assert s3_objects(s3_endpoint)[item["id"]] == content

        url = f"/v1/uploads/{item['id']}/content"
        redirect = await http.get(url, headers=me)
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(f"{s3_endpoint}/{BUCKET}/{item['id']}?")
        assert "Expires=" in location or "X-Amz-Expires=60" in location

        # Following the redirect drops the bearer token (another origin) and gets the bytes.
        followed = await http.get(url, headers=me, follow_redirects=True)
        assert followed.status_code == 200
        assert followed.content == content
        assert followed.headers["content-type"] == "image/jpeg"
        assert "filename*=UTF-8''photo%20%C3%A9.jpg" in followed.headers["content-disposition"]

        stranger = await http.get(url, headers=users.headers())
        assert stranger.status_code == 404

        assert (await http.delete(f"/v1/uploads/{item['id']}", headers=me)).status_code == 204
        assert item["id"] not in s3_objects(s3_endpoint)
        assert (await http.get(url, headers=me)).status_code == 404


async def test_s3_over_the_limit_stores_nothing(
    data_dir: Path, database_url: str, s3_endpoint: str, users: Users
) -> None:
    settings = make_settings(
        data_dir,
        database_url,
        r2_bucket_name=BUCKET,
        r2_endpoint_url=s3_endpoint,
        max_upload_bytes=1000,
        **S3_KEYS,
    )
    application = create_app(settings, migrate=True)
    before = set(s3_objects(s3_endpoint))
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        response = await upload(http, users.headers(), b"z" * 1001)
    assert response.status_code == 413
    assert set(s3_objects(s3_endpoint)) == before
