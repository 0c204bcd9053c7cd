"""`/v1/me`: provisioned on first sight, profile edits only, soft delete."""

from __future__ import annotations

import httpx
import pytest

from backend.billing.plans import plan_for
from tests.conftest import Users


async def test_first_request_provisions_a_free_user(
    client: httpx.AsyncClient, users: Users
) -> None:
    headers = users.headers(email="grace@example.com", name="Grace")
    response = await client.get("/v1/me", headers=headers)
    assert response.status_code == 200
    me = response.json()
    assert set(me) == {
        "id",
        "email",
        "name",
        "image_url",
        "plan",
        "credits",
        "onboarding_completed",
        "created_at",
        "updated_at",
    }
    assert (me["email"], me["name"], me["plan"], me["onboarding_completed"]) == (
        "grace@example.com",
        "Grace",
        "free",
        False,
    )
    assert me["created_at"].endswith("Z")
    assert me["credits"] == plan_for("free").monthly_credits  # this month's grant
    again = await client.get("/v1/me", headers=headers)
    assert again.json()["id"] == me["id"]


async def test_patch_updates_the_profile(client: httpx.AsyncClient, users: Users) -> None:
    headers = users.headers()
    response = await client.patch(
        "/v1/me",
        headers=headers,
        json={
            "name": "Linus",
            "image_url": "https://img.example.com/a.png",
            "onboarding_completed": True,
        },
    )
    assert response.status_code == 200, response.text
    assert (await client.get("/v1/me", headers=headers)).json()["name"] == "Linus"


@pytest.mark.parametrize(
    "body",
    [
        {"credits": 1_000_000},
        {"plan": "enterprise"},
        {"role": "admin"},
        {"name": "x" * 201},
        {"name": None},
        {"image_url": "not a url"},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
)
async def test_patch_refuses_what_a_client_must_not_set(
    client: httpx.AsyncClient, users: Users, body: dict[str, object]
) -> None:
    headers = users.headers(name="Before")
    before = (await client.get("/v1/me", headers=headers)).json()
    response = await client.patch("/v1/me", headers=headers, json={"name": "After", **body})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["data"]["errors"][0]["loc"]
    assert (await client.get("/v1/me", headers=headers)).json() == before


async def test_delete_is_soft_and_ends_the_session(client: httpx.AsyncClient, users: Users) -> None:
    headers = users.headers()
    assert (await client.get("/v1/me", headers=headers)).status_code == 200
    assert (await client.delete("/v1/me", headers=headers)).status_code == 204
    response = await client.get("/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_many_new_users_at_once_are_provisioned_without_waiting(
    client: httpx.AsyncClient, users: Users
) -> None:
    """More first requests than pooled connections: none waits for a connection held by another."""
    import asyncio

    async with asyncio.timeout(10):
        responses = await asyncio.gather(
            *(client.get("/v1/projects", headers=users.headers()) for _ in range(25))
        )
    assert [r.status_code for r in responses] == [200] * 25
