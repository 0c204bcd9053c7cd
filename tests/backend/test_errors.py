"""The error contract holds on every route, including the framework's own 404/405/422."""

from __future__ import annotations

import httpx

from tests.conftest import Users


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "data"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404, "NOT_FOUND")


async def test_wrong_method_is_405(client: httpx.AsyncClient, users: Users) -> None:
    assert_error(await client.put("/v1/me", headers=users.headers()), 405, "METHOD_NOT_ALLOWED")


async def test_malformed_json_is_422(client: httpx.AsyncClient, users: Users) -> None:
    response = await client.post(
        "/v1/projects",
        headers={**users.headers(), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] is True


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] not in ("", "bad id with spaces")


async def test_nul_characters_are_refused_on_every_database(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    response = await client.post("/v1/projects", headers=me, json={"name": "bad\u0000name"})
    assert_error(response, 422, "VALIDATION_ERROR")
    response = await client.post("/v1/threads", headers=me, json={"metadata": {"k\u0000": 1}})
    assert_error(response, 422, "VALIDATION_ERROR")
