"""The kubelet's part: one Pod, run as containers exactly as its spec says, from its sandbox
and init containers to its containers' probes, restarts, eviction and graceful deletion.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

from polyframe_release.podprobes import PodProbes
from polyframe_release.podspec import TICK, VOLUME_CHECK_SECONDS, SpecError, quantity


class PodWorker(PodProbes):
    """Runs one Pod from creation to its removal, keeping its status in the store."""

    # -- the worker -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._lifecycle()
        except SpecError as exc:
            self.phase, self.reason, self.message = "Failed", "UnsupportedSpec", str(exc)
            self.event("Failed", str(exc), warning=True)
            self.node.log(f"pod {self.name}: {exc}")
        except Exception as exc:  # a bug of the runner: say so on the pod, never hang
            self.phase, self.reason, self.message = "Failed", "RunnerError", repr(exc)
            self.event("Failed", f"the release runner failed on this pod: {exc!r}", warning=True)
            self.node.log(f"pod {self.name}: runner error {exc!r}")
        finally:
            self.publish()
            self.finished.set()
            self._terminate()
            self.on_gone(self)

    def _lifecycle(self) -> None:
        while not self._prepare():
            if self._sleep(2.0):
                return
        for container in self.inits:
            if not self._run_init(container):
                return
        self.initialized = True
        self.publish()
        for container in self.containers:
            self._start(container)
        self.phase = "Running"
        self.publish()
        last_volume_check = time.monotonic()
        while not self.deleting.is_set():
            now = time.monotonic()
            for container in self.containers:
                self._watch(container, now)
            if now - last_volume_check >= VOLUME_CHECK_SECONDS:
                last_volume_check = now
                if self._evicted():
                    return
            if self._finished():
                return
            self.publish()
            self._sleep(TICK)

    # -- the end ----------------------------------------------------------------------------------

    def _finished(self) -> bool:
        """Succeeded or Failed, as the kubelet sets the phase; True when nothing will restart."""
        if any(c.current is not None or c.retry_at for c in self.containers):
            return False
        codes = [int(c.state.get("terminated", {}).get("exitCode", 1)) for c in self.containers]
        self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        self.publish()
        return True

    def _evicted(self) -> bool:
        for volume in self.pod["spec"].get("volumes") or []:
            limit = (volume.get("emptyDir") or {}).get("sizeLimit")
            if limit is None:
                continue
            used = _folder_size(self.volumes_dir / volume["name"])
            if used > quantity(limit):
                self.phase, self.reason = "Failed", "Evicted"
                # As the kubelet marks the pods it evicts (a Job's podFailurePolicy reads it).
                self._set_condition("DisruptionTarget", True, "TerminationByKubelet")
                self.message = (
                    f'Usage of EmptyDir volume "{volume["name"]}" exceeds the limit "{limit}".'
                )
                self.event("Evicted", self.message, warning=True)
                return True
        return False

    def _terminate(self) -> None:
        """Stop every container (gracefully), then the sandbox; the pod leaves the store."""
        threads = [
            threading.Thread(target=self._kill, args=(c, self.grace), daemon=True)
            for c in [*self.inits, *self.containers]
            if c.current is not None
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.grace + 60)
        if self.infra is not None:
            self.node.engine.run(
                "rm", "--force", "--time", "0", "--ignore", self.infra, check=False
            )
        shutil.rmtree(self.volumes_dir, ignore_errors=True)

    # -- logs -------------------------------------------------------------------------------------

    def log(self, container: str | None, *, previous: bool, tail_lines: int | None) -> str:
        runs = {c.name: c for c in [*self.inits, *self.containers]}
        if container is None:
            if len(self.containers) != 1:
                raise LookupError(
                    f"a container name must be specified for pod {self.name}, choose one of: "
                    f"{[c.name for c in self.containers]}"
                )
            container = self.containers[0].name
        run = runs.get(container)
        if run is None:
            raise LookupError(f"container {container} is not valid for pod {self.name}")
        if previous:
            if run.previous_log is None or run.restart_count == 0:
                raise LookupError(
                    f'previous terminated container "{container}" in pod "{self.name}" not found'
                )
            text = run.previous_log.read_text(encoding="utf-8", errors="replace")
        elif run.current is not None:
            done = self.node.engine.run("logs", run.current, check=False, timeout=60)
            text = done.stdout + done.stderr
        elif run.previous_log is not None:
            text = run.previous_log.read_text(encoding="utf-8", errors="replace")
        else:
            raise LookupError(f'container "{container}" in pod "{self.name}" is waiting to start')
        if tail_lines is not None:
            text = "\n".join(text.splitlines()[-tail_lines:]) + "\n"
        return text


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total
