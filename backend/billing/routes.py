from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from backend.billing import usage
from backend.billing.plans import plan_for
from backend.billing.schemas import (
    AdminUsageGroupBy,
    BillingPublic,
    UsageEventPublic,
    UsageGroup,
    UsageGroupBy,
    UsageReport,
    UsageTotals,
)
from backend.deps import AdminUser, CurrentUser, DatabaseDep, SessionDep, SettingsDep
from backend.errors import ErrorResponse, error_responses, validation_error
from backend.pagination import Page, PageParams, page_params
from backend.routing import TurboKitRoute

router = APIRouter(route_class=TurboKitRoute, tags=["billing"], responses=error_responses(401, 422))


_ISO_DAY = r"^\d{4}-\d{2}-\d{2}$"


async def _days(
    start: Annotated[
        str | None,
        Query(
            alias="from",
            pattern=_ISO_DAY,
            json_schema_extra={"format": "date"},
            description="First UTC day, inclusive, `YYYY-MM-DD` (default: 29 days before `to`)",
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            pattern=_ISO_DAY,
            json_schema_extra={"format": "date"},
            description="Last UTC day, inclusive, `YYYY-MM-DD` (default: today). The range may "
            "cover at most 366 days",
        ),
    ] = None,
) -> usage.DayRange:
    return usage.day_range(_day(start, "from"), _day(end, "to"))


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise validation_error(["query", name], f"{name}: not a date (YYYY-MM-DD)") from None


Days = Annotated[usage.DayRange, Depends(_days)]


class CSVResponse(StreamingResponse):
    media_type = "text/csv"


def _json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`error_responses` for a route whose own media type is not JSON: FastAPI would file the
    error body under that media type, so name the JSON content explicitly."""
    schema = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
    return {
        status: {
            "description": doc["description"],
            "content": {"application/json": {"schema": schema}},
        }
        for status, doc in error_responses(*statuses).items()
    }


_CSV_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "The events as CSV, oldest first, with a header row"},
    **_json_errors(401, 422),
}


@router.get("/v1/billing")
async def get_billing(user: CurrentUser, settings: SettingsDep) -> BillingPublic:
    """The caller's plan and balance."""
    return BillingPublic(
        plan=user.plan,
        credits=user.credits,
        credits_per_usd=settings.credits_per_usd,
        monthly_credits=plan_for(user.plan).monthly_credits,
    )


@router.get("/v1/usage")
async def get_usage(
    user: CurrentUser, session: SessionDep, days: Days, group_by: UsageGroupBy = "day"
) -> UsageReport:
    """The caller's usage over a range of UTC days: totals, and groups by day (oldest first) or
    by model, agent or thread (most credits first)."""
    if group_by == "thread":
        totals, groups = await usage.thread_report(session, user.id, days)
    else:
        totals, groups = await usage.daily_report(session, days, group_by, user.id)
    return _report(days, group_by, totals, groups)


@router.get("/v1/usage/events")
async def list_usage_events(
    user: CurrentUser,
    session: SessionDep,
    page: Annotated[PageParams, Depends(page_params("evt"))],
) -> Page[UsageEventPublic]:
    """The caller's metered LLM calls, newest first."""
    items, cursor = await usage.events_page(session, user.id, page)
    return Page(items=items, next_cursor=cursor)


@router.get("/v1/usage/export.csv", response_class=CSVResponse, responses=_CSV_DOC)
async def export_usage(user: CurrentUser, db: DatabaseDep, days: Days) -> CSVResponse:
    """The caller's metered LLM calls in the range as a CSV download (the columns of
    `/v1/usage/events`), streamed."""
    filename = f"usage-{days.start.isoformat()}-{days.end.isoformat()}.csv"
    return CSVResponse(
        usage.export_csv(db, user.id, days),
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/v1/admin/usage", tags=["admin"], responses=error_responses(403))
async def get_all_usage(
    _admin: AdminUser, session: SessionDep, days: Days, group_by: AdminUsageGroupBy = "day"
) -> UsageReport:
    """Everyone's usage over a range of UTC days, grouped by user, day or model (admins only)."""
    totals, groups = await usage.daily_report(session, days, group_by)
    return _report(days, group_by, totals, groups)


def _report(
    days: usage.DayRange, group_by: str, totals: UsageTotals, groups: list[UsageGroup]
) -> UsageReport:
    return UsageReport(
        from_=days.start, to=days.end, group_by=group_by, totals=totals, groups=groups
    )
