"""Request and response bodies: a family of schemas per entity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from service_kit.inputs import StrictInput, Trimmed


class _Strict(StrictInput):
    """Unknown fields are refused: a client cannot slip in ``role`` or ``is_active``; no
    text holds a NUL (PostgreSQL stores none). Nothing is stripped before the limits are
    checked (see service_kit.inputs): a password is exactly what was typed."""


class UserCreate(_Strict):
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=12, max_length=256)
    full_name: Trimmed = Field(min_length=1, max_length=200)

    @field_validator("password")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class LoginRequest(_Strict):
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=1, max_length=256)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str
    role: str
    is_active: bool
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserPublic]
    #: Opaque cursor for the next page; absent on the last page.
    next_cursor: str | None = None


class JsonWebKey(BaseModel):
    model_config = ConfigDict(extra="allow")

    kty: str
    kid: str
    use: str
    alg: str
    n: str
    e: str


class JsonWebKeySet(BaseModel):
    keys: list[JsonWebKey]
