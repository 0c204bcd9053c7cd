"""Every table, imported in one place so `Base.metadata` is complete for migrations and tests."""

from backend.projects.models import Project
from backend.users.models import User
from threads.models import LLMCall, Message, Run, RunEvent, Thread

__all__ = ["LLMCall", "Message", "Project", "Run", "RunEvent", "Thread", "User"]
