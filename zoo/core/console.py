"""What the `zoo` process says on the terminal when a command cannot finish: one line on
stderr, even while stdout is broken, and the exit code that goes with it.

Only the standard library is imported here.
"""

import contextlib
import errno
import functools
import os
import sys

from zoo.core.errors import ENVIRONMENT_ERRNOS, EnvironmentProblem, Interrupted, ZooError, io_error

# While zoo.core.backend points fd 2 at /dev/null (TensorFlow's C++ start-up lines), possibly on
# a background thread, the descriptor where stderr really goes: an error said meanwhile is not lost.
real_stderr_fd: int | None = None


def say(message: str, prefix="Error: ") -> None:
    """One line on stderr, even while stdout is broken or fd 2 is silenced; never raises."""
    line = f"{prefix}{message}\n"
    if real_stderr_fd is not None:
        sys.stderr.flush()
        try:
            os.write(real_stderr_fd, line.encode(errors="replace"))
            return
        except OSError:
            pass
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        try:
            os.write(2, line.encode(errors="replace"))
        except OSError:
            pass


def _kept(e: BaseException) -> str:
    """"; <what became of the run>" where zoo.core.aside put a fresh training's earlier artefacts back."""
    return f"; {e.kept}" if getattr(e, "kept", None) else ""


def note(message: str) -> None:
    """One line on stderr that is not an error: what zoo did on its own before the command's work."""
    say(message, prefix="zoo: ")


def interrupted_exit(e: KeyboardInterrupt) -> int:
    """Say why the process ends and return 130 (Ctrl-C) or 143 (SIGTERM). `e.kept`, when set, says what
    became of the run (a fresh training's earlier artefacts put back: zoo.core.aside)."""
    kept = getattr(e, "kept", None) or "completed checkpoints are kept (zoo train --resume continues)"
    if isinstance(e, Interrupted):
        say(f"terminated (SIGTERM); {kept}")
        return Interrupted.exit_code
    say(f"interrupted; {kept}")
    return 130


def stdout_error_exit(e: OSError) -> int:
    """A write to stdout failed: the reader went away (141) or the device is full (9)."""
    kept = _kept(e)
    if e.errno == errno.EPIPE or isinstance(e, BrokenPipeError):
        say(f"stdout was closed before zoo finished writing (the reader of the pipe exited); output was cut{kept}")
        code = 141
    else:
        say(f"cannot write to stdout ({e.strerror or e}); free space or redirect it elsewhere{kept}")
        code = 9
    detach_stdout()
    return code


def detach_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def say_each(message) -> None:
    """Every line of a message as its own `Error:` line (a spec's problems: one line each)."""
    for line in str(message).splitlines() or [""]:
        say(line)


def exit_code(fn, *args, tracebacks=False, **kwargs) -> int:
    """Run fn; 0, or the exit code of what stopped it, having said it in one line.

    A ZooError is the user's to fix (its own code); Ctrl-C and SIGTERM are 130 and 143; out
    of memory and a failed file operation are the environment's; a failed write to stdout
    is 141 or 9. Anything else is a bug in zoo: one line and exit 1, or the traceback with
    ZOO_DEBUG=1 (or `tracebacks`, for a log file).
    """
    try:
        fn(*args, **kwargs)
        return 0
    except ZooError as e:
        say_each(e)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Interrupted)
        return interrupted_exit(e)
    except MemoryError as e:  # the machine's limit, not a bug
        say("out of memory; lower --batch-size or use data.limit" + _kept(e))
        return EnvironmentProblem.exit_code
    except OSError as e:
        if e.filename is None:  # not a file of zoo's (those are wrapped where they are written): stdout
            return stdout_error_exit(e)
        say(f"{io_error(e.filename, e, 'read or write')}{_kept(e)}")
        return 9 if e.errno in ENVIRONMENT_ERRNOS else 2
    except Exception as e:  # a bug in zoo: say so in one line, traceback on request
        if tracebacks or os.environ.get("ZOO_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        kept = _kept(e)
        say(f"internal error {type(e).__name__}: {first} (a bug in zoo: rerun with ZOO_DEBUG=1 for the traceback "
            f"and report it){kept}")
        return 1


def finish(code: int):
    """End the process now with `code`: flush stdout and stderr, then os._exit.

    The interpreter's own teardown is skipped on purpose. With TensorFlow loaded it takes
    over a second (atexit hooks, module finalisation) while TensorFlow's threads still run,
    and a signal that arrives there is not zoo's any more: Python puts back the default
    handlers, so a Ctrl-C killed the process by the signal, with no message (and TensorFlow's
    threads outliving the interpreter's state can crash it). Every `finally` of zoo's has run
    by now (files renamed or removed, locks released); a signal during the flush still ends
    in 130 or 143. Never returns.
    """
    from zoo.core import signals

    received = signals.recorded()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    if received:
        code = interrupted_exit(Interrupted() if received[0] == signals.signal.SIGTERM else KeyboardInterrupt())
    os._exit(code)


def handled(fn):
    """A command that exits with exit_code(fn): never a traceback for an error of the user's."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        code = exit_code(fn, *args, **kwargs)
        if code:
            sys.exit(code)

    return wrapper
