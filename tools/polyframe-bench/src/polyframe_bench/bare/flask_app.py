"""Bare Flask (``gunicorn 'polyframe_bench.bare.flask_app:create_app()'``)."""

from __future__ import annotations

from flask import Flask

from polyframe_bench.bare import HELLO


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return HELLO

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return app
