"""Secrets of the local platform, generated once into the data folder.

Created at the first ``make up`` and reused afterwards; files are mode 0600
in a 0700 folder, git-ignored, and never printed (except the demo accounts'
passwords, which exist to be typed in by hand).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SERVICES = ("users-fastapi", "legacy-flask", "admin-django")


@dataclass(frozen=True, slots=True)
class LocalSecrets:
    folder: Path

    @property
    def jwt_signing_key(self) -> Path:
        return self.folder / "jwt-signing-key.pem"

    def service_secret(self, service: str) -> Path:
        return self.folder / f"service-{service}.secret"

    def trusted_services(self, service: str) -> Path:
        """JSON map of the other services' credentials, as ``service`` accepts them."""
        return self.folder / f"trusted-by-{service}.json"

    @property
    def demo_accounts(self) -> Path:
        return self.folder / "demo-accounts.json"

    @property
    def demo_staff(self) -> Path:
        """Support staff of admin-django (Django accounts, not users-service accounts)."""
        return self.folder / "demo-staff.json"

    @property
    def django_secret_key(self) -> Path:
        return self.folder / "admin-django-secret-key"


def _write_private(path: Path, content: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)


def ensure_local_secrets(data_dir: Path) -> LocalSecrets:
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    local = LocalSecrets(folder)

    if not local.jwt_signing_key.exists():
        key = rsa.generate_private_key(public_exponent=65_537, key_size=2048)
        _write_private(
            local.jwt_signing_key,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    for service in SERVICES:
        path = local.service_secret(service)
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(32).encode())
    credentials = {s: local.service_secret(s).read_text().strip() for s in SERVICES}
    for service in SERVICES:
        path = local.trusted_services(service)
        others = {name: secret for name, secret in credentials.items() if name != service}
        content = json.dumps(others, indent=2).encode()
        if not path.exists() or path.read_bytes() != content:
            path.unlink(missing_ok=True)
            _write_private(path, content)
    if not local.django_secret_key.exists():
        _write_private(local.django_secret_key, secrets.token_urlsafe(50).encode())
    if not local.demo_staff.exists():
        staff = [
            {
                "username": "ada.acting",
                "group": "support-acting",
                "password": secrets.token_urlsafe(12),
            },
            {
                "username": "rita.readonly",
                "group": "support-readonly",
                "password": secrets.token_urlsafe(12),
            },
        ]
        _write_private(local.demo_staff, json.dumps(staff, indent=2).encode())
    if not local.demo_accounts.exists():
        accounts = [
            {
                "email": "alice@example.com",
                "full_name": "Alice Member",
                "role": "member",
                "password": secrets.token_urlsafe(12),
            },
            {
                "email": "bob@example.com",
                "full_name": "Bob Member",
                "role": "member",
                "password": secrets.token_urlsafe(12),
            },
            {
                "email": "sam.staff@example.com",
                "full_name": "Sam Staff",
                "role": "staff",
                "password": secrets.token_urlsafe(12),
            },
        ]
        _write_private(local.demo_accounts, json.dumps(accounts, indent=2).encode())
    return local
