"""Polyframe's shared service kit.

Framework-neutral core (settings, logging, problems, health, service client,
service credentials and token verification) plus thin adapters per framework
(``service_kit.fastapi`` now; Flask and Django adapters join with their
services). Adapters only translate; every convention lives in the core.
"""

__version__ = "0.1.0"
