from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from pydantic import BaseModel, ConfigDict

MAX_FILENAME_CHARS = 255
DEFAULT_FILENAME = "upload"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


class UploadPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime


def clean_filename(raw: str | None) -> str:
    """The name to show and to offer on download: the last path segment only, without control
    or format characters (no NUL, no bidi overrides), trimmed to 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip(" .")
    return name[:MAX_FILENAME_CHARS] or DEFAULT_FILENAME


def clean_content_type(raw: str | None) -> str:
    """The part's declared media type without parameters, when it is a well-formed one."""
    media_type = (raw or "").split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.match(media_type) else DEFAULT_CONTENT_TYPE
