"""``polyframe-bench soak``: a bounded mixed load through the ingress, then proof nothing broke.

:func:`run` drives the actors (:mod:`.actors`) and then the checks (:mod:`.verify`).
"""

from polyframe_bench.soak.runner import run
from polyframe_bench.soak.settings import STAFF_GROUP, Settings, SoakError, Target

__all__ = ["STAFF_GROUP", "Settings", "SoakError", "Target", "run"]
