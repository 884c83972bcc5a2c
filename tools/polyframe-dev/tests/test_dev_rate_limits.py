"""``--rate-limit``: the users service's rate limits on a local platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyframe_dev.localsecrets import LocalSecrets
from polyframe_dev.plan import rate_limits
from polyframe_dev.services import SERVICES, Context
from polyframe_dev.supervisor import StartupError


def _users_env(tmp_path: Path, **limits: str) -> dict[str, str]:
    ctx = Context(
        data_dir=tmp_path,
        secrets=LocalSecrets(tmp_path / "secrets"),
        ports={"admin-django": 1, "users-fastapi": 2},
        workers=1,
        rate_limits=limits,
    )
    return SERVICES["users-fastapi"].server_env(ctx)


def test_local_platforms_allow_many_log_ins_and_registrations_per_address(
    tmp_path: Path,
) -> None:
    env = _users_env(tmp_path)
    assert env["USERS_LOGIN_LIMIT_PER_IP"] == "100000"
    assert env["USERS_REGISTER_LIMIT_PER_IP"] == "100000"
    # The per-account limit on failed log-ins keeps the service's own default.
    assert "USERS_LOGIN_FAILURE_LIMIT" not in env


def test_rate_limit_options_reach_the_users_service(tmp_path: Path) -> None:
    limits = rate_limits(
        ["login-limit-per-ip=3", "login-failure-limit=2", "ip-limit-window-seconds=1.5"]
    )
    env = _users_env(tmp_path, **limits)
    assert env["USERS_LOGIN_LIMIT_PER_IP"] == "3"
    assert env["USERS_REGISTER_LIMIT_PER_IP"] == "100000"
    assert env["USERS_LOGIN_FAILURE_LIMIT"] == "2"
    assert env["USERS_IP_LIMIT_WINDOW_SECONDS"] == "1.5"


@pytest.mark.parametrize(
    "item", ["login=3", "login-limit-per-ip", "login-limit-per-ip=0", "login-failure-limit=x"]
)
def test_a_wrong_rate_limit_is_refused_by_name(item: str) -> None:
    with pytest.raises(StartupError, match="--rate-limit"):
        rate_limits([item])
