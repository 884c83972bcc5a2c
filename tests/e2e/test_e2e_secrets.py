"""The log scan that runs when each local platform stops (``_stop_local_platform`` in
conftest.py) finds what it looks for: secrets planted in a log are reported by kind and
place, never printed; the demo passwords ``make up`` announces on purpose are allowed there
only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service_kit.credentials import basic_credential

pytestmark = pytest.mark.e2e


def test_planted_secrets_are_found_by_kind_and_line(
    local_ready: dict[str, Any], secret_scan: Any, tmp_path: Path
) -> None:
    platform_secrets, find = secret_scan
    data_dir = Path(local_ready["data_dir"])
    secrets = platform_secrets(data_dir)
    credential = (data_dir / "secrets" / "service-legacy-flask.secret").read_text().strip()
    pem_line = (data_dir / "secrets" / "jwt-signing-key.pem").read_text().splitlines()[5]
    demo = json.loads(Path(local_ready["demo_staff_file"]).read_text())[0]["password"]
    basic = basic_credential("legacy-flask", credential)
    header = basic_credential("admin-django", "x")  # a credential nobody uses: not a finding
    log = tmp_path / "planted.log"
    log.write_text(
        "\n".join(
            [
                'legacy-flask   | {"message": "request", "status": 200}',
                f"polyframe      |   support-acting    ada.acting      password: {demo}",
                f'users-fastapi  | {{"authorization": "{basic}"}}',
                f'legacy-flask   | {{"secret": "{credential}"}}',
                f"admin-django   | {pem_line}",
                f"traefik        | login with {demo}",
                f"traefik        | {header}",
            ]
        )
        + "\n"
    )
    findings, lines_read = find(secrets, [log])
    assert lines_read == 7
    assert findings == [
        f"service credential (as a Basic header) in {log} line 3",
        f"service credential in {log} line 4",
        f"token-signing key (a line of its PEM) in {log} line 5",
        f"demo account password in {log} line 6",
    ]
    assert not any(credential in finding or demo in finding for finding in findings)
