"""Projects: owned, paged by keyset, searched with the database's full-text index."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Users

MISSING = "prj_01JD0000000000000000000000"


async def create(
    http: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> dict[str, object]:
    response = await http.post("/v1/projects", headers=headers, json={"name": "Untitled", **body})
    assert response.status_code == 201, response.text
    project: dict[str, object] = response.json()
    return project


async def test_create_read_update_delete(client: httpx.AsyncClient, users: Users) -> None:
    me = users.headers()
    project = await create(client, me, name="Apollo", description="Moon landing plans")
    assert project["status"] == "active"
    assert project["settings"] == {"is_public": False, "allow_comments": True}
    assert str(project["id"]).startswith("prj_")
    assert str(project["created_at"]).endswith("Z")
    assert project["updated_at"] == project["created_at"]
    url = f"/v1/projects/{project['id']}"
    assert (await client.get(url, headers=me)).json() == project

    patched = await client.patch(
        url, headers=me, json={"status": "archived", "settings": {"is_public": True}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "archived"
    assert patched.json()["settings"] == {"is_public": True, "allow_comments": True}
    assert patched.json()["name"] == "Apollo"

    assert (await client.delete(url, headers=me)).status_code == 204
    assert (await client.get(url, headers=me)).status_code == 404


async def test_another_user_never_sees_my_project(client: httpx.AsyncClient, users: Users) -> None:
    owner, stranger = users.headers(), users.headers()
    project = await create(client, owner, name="Zephyrine secret", description="zephyrine")
    url = f"/v1/projects/{project['id']}"
    for response in (
        await client.get(url, headers=stranger),
        await client.patch(url, headers=stranger, json={"name": "mine now"}),
        await client.delete(url, headers=stranger),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert (await client.get("/v1/projects", headers=stranger)).json()["items"] == []
    search = await client.get("/v1/projects/search", params={"q": "zephyrine"}, headers=stranger)
    assert search.json() == {"items": []}
    assert (await client.get(url, headers=owner)).json()["name"] == "Zephyrine secret"


async def test_a_deleted_account_is_refused_at_once(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    project = await create(client, me, name="Left behind", description="behind")
    assert (await client.get("/v1/projects", headers=me)).status_code == 200
    assert (await client.delete("/v1/me", headers=me)).status_code == 204
    for response in (
        await client.get("/v1/projects", headers=me),
        await client.get(f"/v1/projects/{project['id']}", headers=me),
        await client.get("/v1/projects/search", params={"q": "behind"}, headers=me),
        await client.post("/v1/projects", headers=me, json={"name": "After"}),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "ok", "user_id": "usr_01JD0000000000000000000000"},
        {"name": "ok", "credits": 5},
        {"name": "ok", "status": "deleted"},
        {"name": "ok", "settings": {"is_public": True, "owner": "me"}},
        {"description": "no name"},
    ],
)
async def test_bad_project_input_writes_nothing(
    client: httpx.AsyncClient, users: Users, body: dict[str, object]
) -> None:
    me = users.headers()
    response = await client.post("/v1/projects", headers=me, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (await client.get("/v1/projects", headers=me)).json()["items"] == []


async def test_bad_ids_and_cursors_are_422(client: httpx.AsyncClient, users: Users) -> None:
    me = users.headers()
    for path in ("/v1/projects/not-an-id", "/v1/projects/thr_01JD0000000000000000000000"):
        response = await client.get(path, headers=me)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (await client.get(f"/v1/projects/{MISSING}", headers=me)).status_code == 404
    for cursor in ("garbage!", "bm90LWFuLWlk", "thr_01JD0000000000000000000000"):
        response = await client.get("/v1/projects", params={"cursor": cursor}, headers=me)
        assert response.status_code == 422
        assert response.json()["error"]["data"]["errors"][0]["loc"] == ["query", "cursor"]
    for limit in (0, 101, "ten"):
        assert (await client.get(f"/v1/projects?limit={limit}", headers=me)).status_code == 422


async def test_patch_with_null_or_unknown_fields_changes_nothing(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    project = await create(client, me, name="Keep")
    url = f"/v1/projects/{project['id']}"
    for body in ({"name": None}, {"name": "x" * 201}, {"name": "New", "user_id": "usr_x"}):
        assert (await client.patch(url, headers=me, json=body)).status_code == 422
    assert (await client.get(url, headers=me)).json() == project


async def test_pagination_walks_every_project_once_while_more_are_created(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    existing = set()
    for batch in range(0, 250, 25):
        made = await asyncio.gather(*(create(client, me, name=f"p{batch + i}") for i in range(25)))
        existing.update(str(p["id"]) for p in made)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 20}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/projects", params=params, headers=me)).json()
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        await create(client, me, name=f"during walk {pages}")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a project was repeated"
    assert existing <= set(seen), "a project was missed"
    assert seen == sorted(seen, reverse=True), "not newest first"
    assert pages == 13


async def test_status_filter(client: httpx.AsyncClient, users: Users) -> None:
    me = users.headers()
    await create(client, me, name="a", status="draft")
    await create(client, me, name="b")
    drafts = (await client.get("/v1/projects", params={"status": "draft"}, headers=me)).json()
    assert [p["name"] for p in drafts["items"]] == ["a"]


async def test_search_ranks_name_matches_first_and_follows_edits(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    in_description = await create(client, me, name="Quarterly", description="about the nebula")
    in_name = await create(client, me, name="Nebula tracker", description="telescope work")
    await create(client, me, name="Unrelated", description="gardening")

    found = (await client.get("/v1/projects/search", params={"q": "nebula"}, headers=me)).json()
    assert [p["id"] for p in found["items"]] == [in_name["id"], in_description["id"]]

    prefix = (await client.get("/v1/projects/search", params={"q": "teles"}, headers=me)).json()
    assert [p["id"] for p in prefix["items"]] == [in_name["id"]]

    await client.patch(f"/v1/projects/{in_name['id']}", headers=me, json={"name": "Comet log"})
    found = (await client.get("/v1/projects/search", params={"q": "nebula"}, headers=me)).json()
    assert [p["id"] for p in found["items"]] == [in_description["id"]]

    await client.delete(f"/v1/projects/{in_description['id']}", headers=me)
    found = (await client.get("/v1/projects/search", params={"q": "nebula"}, headers=me)).json()
    assert found["items"] == []

    odd = await client.get("/v1/projects/search", params={"q": '"* OR NEAR( -'}, headers=me)
    assert odd.status_code == 200
    assert odd.json() == {"items": []}
