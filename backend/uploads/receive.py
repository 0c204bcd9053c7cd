"""Receiving a multipart upload as it streams: the `file` part goes to a temporary file in
bounded chunks, hashed and counted on the way, and the request is refused with a 413 the moment
it passes MAX_UPLOAD_BYTES. Neither the body nor the file is ever held whole in memory.

FastAPI's `UploadFile` would parse the whole body (to a spooled file of any size) before the
route could check anything, so the route parses it here with python-multipart's push parser.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from backend.errors import AppError, validation_error
from backend.storage import discard
from backend.uploads.schemas import clean_content_type, clean_filename

FIELD = "file"
FRAMING_BYTES = 64 * 1024
"""What the body may hold besides the file's bytes: boundaries, part headers, small fields."""
FLUSH_BYTES = 1024 * 1024
"""Received bytes kept in memory before they are written (and hashed) in a worker thread."""


@dataclass(frozen=True, slots=True)
class Received:
    """A complete upload in a temporary file that the caller moves into storage or removes."""

    path: Path
    filename: str
    content_type: str
    size: int
    sha256: str


def too_large(limit: int) -> AppError:
    return AppError(
        "PAYLOAD_TOO_LARGE", f"The file is larger than {limit} bytes", 413, {"max_bytes": limit}
    )


async def receive_file(request: Request, staging: Path, limit: int) -> Received:
    """The request's `file` part, stored in a new temporary file under `staging`."""
    boundary = _boundary(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + FRAMING_BYTES:
        raise too_large(limit)  # refused before reading anything
    fd, name = tempfile.mkstemp(dir=staging, prefix="recv-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            part = await _stream_into(request, boundary, _FilePart(sink, limit))
        return Received(path, part.filename, part.content_type, part.size, part.digest())
    except BaseException:
        discard(path)
        raise


def _boundary(content_type: str | None) -> bytes:
    media_type, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise validation_error(["body"], "send the file as multipart/form-data in a `file` field")
    return boundary


@dataclass
class _FilePart:
    """Parser state: the headers of the current part and what the `file` part has delivered."""

    sink: Any
    limit: int
    filename: str = ""
    content_type: str = ""
    size: int = 0
    found: bool = False
    complete: bool = False
    pending: bytearray = field(default_factory=bytearray)
    _hash: Any = field(default_factory=hashlib.sha256)
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _field: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)
    _active: bool = False

    def digest(self) -> str:
        return str(self._hash.hexdigest())

    def flush(self) -> None:
        """Write and hash what is pending (called in a worker thread, or at the end)."""
        data = bytes(self.pending)
        self.pending.clear()
        self._hash.update(data)
        self.sink.write(data)

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers.clear()
        self._active = False

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        if options.get(b"name") != FIELD.encode():
            return  # another field: its bytes are only counted against the body's limit
        filename = options.get(b"filename")
        if not filename:
            raise validation_error(["body", FIELD], "`file` must be a file part with a filename")
        if self.found:
            raise validation_error(["body", FIELD], "send one file per request")
        self.found = self._active = True
        self.filename = clean_filename(filename.decode("utf-8", "replace"))
        self.content_type = clean_content_type(
            self._headers.get(b"content-type", b"").decode("latin-1")
        )

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self._active:
            return
        self.size += end - start
        if self.size > self.limit:
            raise too_large(self.limit)
        self.pending.extend(data[start:end])

    def _end(self) -> None:
        if self._active:
            self.complete = True
            self._active = False


async def _stream_into(request: Request, boundary: bytes, part: _FilePart) -> _FilePart:
    """Feed the body to the parser chunk by chunk; write the file's bytes off the event loop."""
    try:
        parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > part.limit + FRAMING_BYTES:
                raise too_large(part.limit)
            parser.write(chunk)
            if len(part.pending) >= FLUSH_BYTES:
                await asyncio.to_thread(part.flush)
        parser.finalize()
    except FormParserError as exc:
        raise validation_error(["body"], f"malformed multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        raise validation_error(["body"], "the request body ended early") from exc
    if not part.complete:
        raise validation_error(["body", FIELD], "a `file` field is required")
    await asyncio.to_thread(part.flush)
    return part
