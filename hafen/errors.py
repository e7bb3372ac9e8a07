"""The one root of hafen's errors.

    HafenError                  anything a user may see: one clear line
     +-- InvalidInput           bad name, app, version, domain, size, count
     +-- NotFound               no such instance or operation
     +-- Conflict               taken name or domain, or a state that forbids it
     |    +-- Locked            a lock on the instance refuses the action
     +-- Forbidden              the user may see it but not do it
     +-- Unauthenticated        no valid session or token (API only)
     +-- ControlPlaneDown       the controller is not running
     +-- OperationFailed        an operation ended in failure
     +-- EngineError            the orchestrator refused or failed
          +-- EngineUnavailable the Docker engine does not answer
          +-- EngineConflict    the engine refused because of other objects

SDK errors are translated at the engine boundary with `raise ... from exc`.
Each class carries the CLI's exit code.
"""


class HafenError(Exception):
    exit_code = 1


class InvalidInput(HafenError):
    exit_code = 2


class NotFound(HafenError):
    exit_code = 3


class Conflict(HafenError):
    exit_code = 4


class Locked(Conflict):
    pass


class Forbidden(HafenError):
    exit_code = 8


class Unauthenticated(HafenError):
    exit_code = 9


class ControlPlaneDown(HafenError):
    exit_code = 5


class OperationFailed(HafenError):
    exit_code = 6


class EngineError(HafenError):
    exit_code = 7


class EngineUnavailable(EngineError):
    pass


class EngineConflict(EngineError):
    pass
