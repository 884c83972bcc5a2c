"""The bare framework apps the services are held against.

Each answers ``GET /hello`` with a small JSON document and ``GET /readyz`` with
200, nothing else: no database, no authentication, no middleware of ours. They
run on the same servers and settings as the services (see
:mod:`polyframe_bench.servers`), so the difference is what the service adds.
"""

HELLO = {"message": "hello", "framework": "bare"}
