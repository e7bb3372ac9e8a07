"""The one root of hafen's errors.

    HafenError                  anything a user may see: one clear line
     +-- InvalidInput           bad name, app, version, domain, size, count
     +-- NotFound               no such instance or operation
     +-- Conflict               taken name or domain, or a state that forbids it
     |    +-- Locked            a lock on the instance refuses the action
     +-- Forbidden              the user may see it but not do it
     +-- Unauthenticated        no valid session or token (API only)
     +-- ControlPlaneDown       the controller is not running
     |    +-- DatabaseUnavailable   the control plane's own database does not answer
     +-- OperationFailed        an operation ended in failure
     +-- StillRunning           an operation goes on after the CLI stopped waiting (exit 10; CLI only)
     +-- EngineError            the orchestrator failed; temporary: the operation backs off and retries
          +-- EngineUnavailable the Docker engine does not answer (refused, timed out): the pass stops
          |                     and is retried; the operation is not charged an attempt
          +-- EngineConflict    the engine refused because of other objects (409, "in use")
          +-- EngineNotFound    an object hafen expected is gone (404): the next pass re-observes
          +-- EngineRefused     PERMANENT: the engine says hafen's own request is invalid (400);
                                the operation fails at once with the engine's message

SDK errors are translated at the engine boundary with `raise ... from exc`
(hafen/engine/swarm.py); nothing of the Docker SDK or `requests` escapes it.
Whether an engine error is worth retrying is a property of its class,
`EngineError.temporary`, in the spirit of kopf's TemporaryError/PermanentError.
Each class carries the CLI's exit code, and the API's status and error code;
`retry_after` (seconds) becomes the API's Retry-After header.
"""


class HafenError(Exception):
    exit_code = 1
    http_status = 400
    code = "error"
    retry_after: int | None = None


class InvalidInput(HafenError):
    exit_code = 2
    http_status = 400
    code = "invalid"


class NotFound(HafenError):
    exit_code = 3
    http_status = 404
    code = "not_found"


class Conflict(HafenError):
    exit_code = 4
    http_status = 409
    code = "conflict"


class Locked(Conflict):
    code = "locked"


class Forbidden(HafenError):
    exit_code = 8
    http_status = 403
    code = "forbidden"


class Unauthenticated(HafenError):
    exit_code = 9
    http_status = 401
    code = "unauthenticated"


class ControlPlaneDown(HafenError):
    exit_code = 5
    http_status = 503
    code = "control_plane_down"


class DatabaseUnavailable(ControlPlaneDown):
    code = "database_unavailable"


class OperationFailed(HafenError):
    exit_code = 6
    http_status = 409
    code = "operation_failed"


class StillRunning(HafenError):
    """Not a failure: the operation goes on; the CLI merely stopped waiting for it.

    Raised only where the CLI waits, never by an API call; should one reach the API, it is a 409.
    """

    exit_code = 10
    http_status = 409
    code = "still_running"

    @classmethod
    def of(cls, kind: str, instance: str, step: str | None, seconds: float) -> "StillRunning":
        """`step`: the title of the step it is on, None before the controller has started it."""
        minutes, secs = divmod(int(seconds), 60)
        took = f"{minutes} min {secs} s" if minutes else f"{secs} s"
        now = step or "waiting for the controller to start it"
        return cls(f"{kind} of {instance} is still running after {took} (now: {now}); it goes on: "
                   f"follow it with `hafen show {instance}`, or wait longer with --timeout SECONDS")


class EngineError(HafenError):
    exit_code = 7
    http_status = 502
    code = "engine"
    temporary = True


class EngineUnavailable(EngineError):
    """Not an answer but its absence: 503, so clients retry rather than blame the request."""

    http_status = 503
    code = "engine_unavailable"
    retry_after = 10


class EngineConflict(EngineError):
    pass


class EngineNotFound(EngineError):
    pass


class EngineRefused(EngineError):
    temporary = False


_BY_STATUS = (InvalidInput, Unauthenticated, Forbidden, NotFound, Conflict, EngineError, ControlPlaneDown)
_BY_CODE = {cls.code: cls for cls in (*_BY_STATUS, Locked, OperationFailed, EngineUnavailable)}


def from_status(status: int, code: str | None = None) -> type[HafenError]:
    """The error class an API answer stands for: by its error code, else the first declared for its status."""
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    for cls in _BY_STATUS:
        if cls.http_status == status:
            return cls
    return HafenError
