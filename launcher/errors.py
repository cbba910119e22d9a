"""The launcher's exception tree, one exit code per branch (DESIGN §7).

    LauncherError                      exit 1  (unexpected; should not reach a user)
    ├── InputError                     exit 2  bad flag, unknown model/GPU, malformed config
    │   ├── UnknownModelError
    │   ├── ModelConfigError           config.json / profile missing or malformed fields
    │   ├── CheckpointError            truncated or corrupt safetensors header
    │   └── UnknownGpuError
    ├── DoesNotFitError                exit 3  the model cannot be served on these GPUs
    ├── EngineStartError               exit 4
    ├── VerificationError              exit 5
    └── HardwareError                  exit 6  no driver, NVML failure

Every error carries three parts a person needs: what failed, how to fix it, and a runnable
hint. The CLI prints them without a traceback unless LAUNCHER_DEBUG=1.
"""

from __future__ import annotations


class LauncherError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.hint = hint

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "fix": self.fix,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class InputError(LauncherError):
    exit_code = 2


class UnknownModelError(InputError):
    pass


class ModelConfigError(InputError):
    pass


class CheckpointError(InputError):
    pass


class UnknownGpuError(InputError):
    pass


class DoesNotFitError(LauncherError):
    exit_code = 3


class EngineStartError(LauncherError):
    exit_code = 4


class VerificationError(LauncherError):
    exit_code = 5


class HardwareError(LauncherError):
    exit_code = 6
