"""Flask floor (``gunicorn 'polyframe_bench.floor.flask_app:create_app()'``): psycopg_pool."""

from __future__ import annotations

import atexit
from typing import Any

from flask import Flask, abort
from psycopg_pool import ConnectionPool

from polyframe_bench.floor import (
    FLASK_POOL_MAX,
    ORDER_ITEMS_SQL,
    ORDER_SQL,
    database_url,
    order_public,
    uuid_or_none,
)


def create_app() -> Flask:
    app = Flask(__name__)
    # One connection per gthread thread at most (gunicorn's --threads 8), as the service's
    # pool (SERVICE_POOLS); idle ones closed soon: the bench's two platforms share the
    # server's connections.
    pool = ConnectionPool(
        database_url(), min_size=1, max_size=FLASK_POOL_MAX, max_idle=5, open=True
    )
    atexit.register(pool.close)

    @app.get("/orders/<order_id>")
    def read_order(order_id: str) -> dict[str, Any]:
        key = uuid_or_none(order_id)
        if key is None:
            abort(404)
        with pool.connection() as connection:
            row = connection.execute(ORDER_SQL, (key,)).fetchone()
            if row is None:
                abort(404)
            items = connection.execute(ORDER_ITEMS_SQL, (key,)).fetchall()
        return order_public(row, items)

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        with pool.connection() as connection:
            connection.execute("SELECT 1")
        return {"status": "ok"}

    return app
