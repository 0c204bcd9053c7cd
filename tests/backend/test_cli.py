"""The `turbokit` command as operators meet it: help, tokens, migrations, clear config errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import Users


def turbokit(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATA_DIR": str(data_dir), "ENVIRONMENT": "development", **env}
    environment.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = turbokit("--help", data_dir=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "migrate", "token"):
        assert command in result.stdout


def test_migrate_then_status(tmp_path: Path) -> None:
    first = turbokit("migrate", data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    status = turbokit("migrate", "--status", data_dir=tmp_path)
    assert status.stdout.strip() == "database is up to date"


def test_production_config_error_names_the_variable(tmp_path: Path) -> None:
    result = turbokit("migrate", data_dir=tmp_path, ENVIRONMENT="production")
    assert result.returncode == 2
    assert "CLERK_JWT_ISSUER_DOMAIN" in result.stderr
    assert "Traceback" not in result.stderr


async def test_printed_token_is_accepted_by_the_server(
    client: httpx.AsyncClient, users: Users
) -> None:
    result = turbokit(
        "token", "cli-user", "--email", "cli@example.com", data_dir=users.settings.data_dir
    )
    assert result.returncode == 0, result.stderr
    response = await client.get(
        "/v1/me", headers={"Authorization": f"Bearer {result.stdout.strip()}"}
    )
    assert response.status_code == 200
    assert response.json()["email"] == "cli@example.com"
