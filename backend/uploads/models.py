from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from config.database import Base, UTCDateTime, utcnow
from config.ids import new_id


class Upload(Base):
    """One stored file. Its object's storage key is its id: nothing a client sends names it."""

    __tablename__ = "uploads"
    __table_args__ = (
        # ids are time-ordered, so (user_id, id) is the (user_id, created_at) index
        Index("ix_uploads_user_id_id", "user_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(30), primary_key=True, default=lambda: new_id("upl"))
    user_id: Mapped[str] = mapped_column(String(30), ForeignKey("users.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
