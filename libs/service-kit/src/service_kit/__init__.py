"""Polyframe's shared service kit.

Framework-neutral core (settings, logging, problems, the request cycle, telemetry,
health, service client, credentials and tokens) plus thin adapters that translate
FastAPI, Flask and Django into it: ``service_kit.fastapi``, ``.flask``, ``.django``.
"""

__version__ = "0.1.0"
