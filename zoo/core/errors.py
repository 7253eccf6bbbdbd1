"""One error hierarchy; each class carries the exit code the CLI returns for it.

A `ZooError` is always the user's to fix (or the environment's); its message is one
line that says what was expected, what was received and what to do. Anything else
escaping the library is a bug in zoo.
"""

import errno
import os


class ZooError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what `zoo` exits with."""

    exit_code = 1


class SpecError(ZooError):
    """The spec file is missing, unreadable or invalid. Holds every problem found."""

    exit_code = 2

    def __init__(self, source, problems):
        self.source = str(source)
        self.problems = list(problems)  # [(path, message), ...]
        lines = [f"{self.source}: {p}: {m}" if p else f"{self.source}: {m}" for p, m in self.problems]
        super().__init__("\n".join(lines))


class UsageError(ZooError):
    """A command-line argument or a run folder is not what the command needs."""

    exit_code = 2


class DataError(ZooError):
    """A dataset is missing, corrupt, or does not match the spec."""

    exit_code = 3


class TrainingError(ZooError):
    """Training diverged (NaN/inf loss) or could not run on the requested device."""

    exit_code = 4


class ExportError(ZooError):
    """The model could not be converted to a valid ONNX file."""

    exit_code = 5


class VerificationError(ZooError):
    """The ONNX model does not compute what the Keras model computes."""

    exit_code = 6


class RunLockedError(ZooError):
    """Another zoo process is working on the same run folder."""

    exit_code = 7


class ProvenanceError(ZooError):
    """A run's artefact is not the one its record says: edited by hand, stale, or unrecorded."""

    exit_code = 8


class EnvironmentProblem(ZooError):
    """The machine, not the input: permission denied, a full disk, a read-only file system."""

    exit_code = 9


class ServerError(ZooError):
    """zoo serve's server could not start, or one of its parts (Triton, nginx) stopped under it."""

    exit_code = 10


class SweepError(ZooError):
    """A sweep could not finish: every worker stopped with trials still unfinished."""

    exit_code = 11


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (SIGINT): finally-blocks run, checkpoints are kept (or, for a fresh
    training, the earlier run is put back: zoo.core.aside)."""

    exit_code = 143


EXIT_CODES = {
    0: "success",
    1: "unexpected internal error (a bug in zoo: please report it)",
    2: "usage or spec error (SpecError, UsageError)",
    3: "data error (DataError)",
    4: "training error (TrainingError: NaN/inf loss, unavailable device)",
    5: "export error (ExportError)",
    6: "verification failed (VerificationError)",
    7: "run folder locked by another zoo process (RunLockedError)",
    8: "an artefact does not match its provenance record: edited by hand or stale (ProvenanceError)",
    9: "the environment failed: permission denied, disk full, read-only file system, stdout full, out of memory "
       "(EnvironmentProblem)",
    10: "zoo serve: the server could not start, or a part of it (Triton, nginx) stopped (ServerError)",
    11: "zoo sweep: every worker stopped with trials unfinished (SweepError)",
    130: "interrupted (Ctrl-C); the last completed checkpoint is kept (a fresh training puts the earlier run back)",
    141: "stdout was closed before zoo finished writing (a pipe's reader exited)",
    143: "terminated (SIGTERM); the last completed checkpoint is kept (a fresh training puts the earlier run back)",
}


_ENVIRONMENT = {errno.ENOSPC: "the disk is full: free space or choose another --out",
                errno.EDQUOT: "disk quota exceeded: free space or choose another --out",
                errno.EFBIG: "larger than this system lets a file grow (ulimit -f): raise the limit",
                errno.EACCES: "permission denied: fix its permissions or choose another location",
                errno.EPERM: "choose another location",
                errno.EROFS: "read-only file system: choose a writable --out"}


ENVIRONMENT_ERRNOS = frozenset(_ENVIRONMENT)


def io_error(path, e: OSError, doing="write") -> "ZooError":
    """One line for a failed file operation: the environment's fault (exit 9) or the arguments' (exit 2)."""
    if e.errno in _ENVIRONMENT:
        return EnvironmentProblem(f"{path}: cannot {doing} ({e.strerror or os.strerror(e.errno)}: "
                                  f"{_ENVIRONMENT[e.errno]}); nothing was changed")
    if e.errno == errno.ELOOP:
        return UsageError(f"{path}: is a symbolic link; zoo never writes through links: remove it")
    return UsageError(f"{path}: cannot {doing} ({e.strerror or e}); nothing was changed")
