"""The fuzz target: one service in process under libFuzzer (atheris).

Run by ``polyframe-fuzz run`` as ``polyframe-fuzz-target [libFuzzer flags] [CORPUS …]``
with the service named by ``POLYFRAME_FUZZ_SERVICE`` (an environment variable, not an
argument: libFuzzer re-runs this command line for ``-merge`` and reads every argument that
is not a flag as a corpus directory).

Per input, any of these is a crash (atheris then prints it and saves the input):

* a status of 500 or more, or no response at all;
* an exception that escaped the app (the framework did not turn it into a response);
* an error-level log record carrying an exception (the kit's "unhandled exception");
* an input still running after ``POLYFRAME_FUZZ_HANG_SECONDS`` (2 s): a hang bound, not a
  speed test. A watchdog thread interrupts the main thread; atheris's ``-timeout`` (set far
  above) is the backstop for an interpreter stuck in native code.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import atheris

from polyframe_fuzz.inputs import FuzzRequest, decode
from polyframe_fuzz.targets import INSTRUMENTED, SERVICES, Target, start

SERVICE_VARIABLE = "POLYFRAME_FUZZ_SERVICE"
HANG_VARIABLE = "POLYFRAME_FUZZ_HANG_SECONDS"


class Hang(Exception):  # noqa: N818 - not an error of the service's making
    """Raised in the main thread when an input outlives the hang bound (an ``Exception``:
    wherever it lands, the app's own handling applies, and the watchdog's flag tells)."""


class BrokenRuleError(AssertionError):
    """What this input broke (the request is in the message)."""


class _Errors(logging.Handler):
    """Error-level records with an exception, logged while the current input ran."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "unhandled" in record.getMessage().lower():
            self.records.append(record)


class Watchdog:
    """Interrupts the main thread when an input runs longer than ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._started: float | None = None
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        threading.Thread(target=self._watch, name="polyframe-fuzz-watchdog", daemon=True).start()

    def arm(self) -> None:
        with self._lock:
            self.fired = False
            self._started = time.monotonic()

    def disarm(self) -> None:
        with self._lock:
            self._started = None

    def _watch(self) -> None:
        while True:
            time.sleep(self.seconds / 20)
            with self._lock:
                if self._started is None:
                    continue
                late = time.monotonic() - self._started - self.seconds
                if late > 0 and not self.fired:
                    self.fired = True
                    # An exception raised in the main thread at its next bytecode: no signal
                    # (libFuzzer and atheris own those).
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(self._main or 0), ctypes.py_object(Hang)
                    )


class Checker:
    """Sends each input through ``target`` and raises :class:`BrokenRuleError` on a failure."""

    def __init__(self, target: Target, hang_seconds: float) -> None:
        self.target = target
        self.errors = _Errors()
        logging.getLogger().addHandler(self.errors)
        # Warnings (every refused request logs one) would only drown the fuzzer's output.
        logging.disable(logging.WARNING)
        self.watchdog = Watchdog(hang_seconds)

    def run(self, request: FuzzRequest) -> int:
        """The status ``request`` gets; raises :class:`BrokenRuleError` if it broke a rule."""
        self.errors.records.clear()
        self.watchdog.arm()
        try:
            status = self.target.call(request)
        except Hang:
            raise self._failure(request, f"no answer after {self.watchdog.seconds} s") from None
        except Exception as exc:
            raise self._failure(request, "an exception escaped the app") from exc
        finally:
            self.watchdog.disarm()
        if self.watchdog.fired:
            raise self._failure(request, f"took longer than {self.watchdog.seconds} s ({status})")
        if not 100 <= status < 500:
            raise self._failure(request, f"answered {status or 'nothing'}")
        if self.errors.records:
            record = self.errors.records[0]
            raise self._failure(request, f"logged {record.getMessage()!r} at {record.levelname}")
        return status

    def __call__(self, data: bytes) -> None:
        self.run(decode(data, self.target.routes, self.target.credentials))

    def _failure(self, request: FuzzRequest, what: str) -> BrokenRuleError:
        return BrokenRuleError(f"{self.target.name} {what}:\n{request.describe()}")


def boot(service: str, scratch: Path, *, instrument: bool = True) -> tuple[Target, float]:
    """``service`` started (its code, the kit and the framework's request parsing
    instrumented for coverage); and how long that took in seconds."""
    started = time.monotonic()
    if instrument:
        with atheris.instrument_imports(include=INSTRUMENTED[service]):
            target = start(service, scratch)
    else:
        target = start(service, scratch)
    return target, time.monotonic() - started


def main() -> None:
    if any(argument in ("-h", "--help") for argument in sys.argv[1:]):
        print(__doc__)
        print("Services: " + ", ".join(SERVICES) + ". libFuzzer's own flags: -help=1.")
        return
    service = os.environ.get(SERVICE_VARIABLE, "")
    if service not in SERVICES:
        sys.exit(f"set {SERVICE_VARIABLE} to one of {', '.join(SERVICES)}")
    # The database in memory where there is a tmpfs: it is rewritten thousands of times.
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private (0700) directory in it
    scratch = Path(
        tempfile.mkdtemp(prefix=f"polyframe-fuzz-{service}-", dir=shm if shm.is_dir() else None)
    )
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # atheris.Fuzz() exits
    target, seconds = boot(service, scratch)
    print(f"==polyframe-fuzz== {service} started in {seconds:.1f} s", file=sys.stderr, flush=True)
    checker = Checker(target, float(os.environ.get(HANG_VARIABLE, "2")))
    atheris.Setup(sys.argv, checker)
    atheris.Fuzz()
