"""Every table, imported in one place so `Base.metadata` is complete for migrations and tests."""

from backend.billing.models import LedgerEntry, Reservation, UsageDaily, UsageEvent, WebhookEvent
from backend.crons.models import CronState
from backend.email.models import Email
from backend.presence.models import Presence
from backend.projects.models import Project
from backend.uploads.models import Upload
from backend.users.models import User
from backend.workflows.models import WorkflowRun, WorkflowStep
from threads.models import LLMCall, Message, Run, RunEvent, Thread

__all__ = [
    "CronState",
    "Email",
    "LLMCall",
    "LedgerEntry",
    "Message",
    "Presence",
    "Project",
    "Reservation",
    "Run",
    "RunEvent",
    "Thread",
    "Upload",
    "UsageDaily",
    "UsageEvent",
    "User",
    "WebhookEvent",
    "WorkflowRun",
    "WorkflowStep",
]
