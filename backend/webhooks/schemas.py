from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class WebhookReceived(BaseModel):
    """The acknowledgement of a verified delivery, also of one already received or ignored."""

    received: Literal[True] = True
