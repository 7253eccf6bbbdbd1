"""What the `zoo` process says on the terminal when a command cannot finish: one line on
stderr, even while stdout is broken, and the exit code that goes with it.

Only the standard library is imported here.
"""

import errno
import os
import sys

from zoo.core.errors import Interrupted


def say(message: str) -> None:
    """One line on stderr, even while stdout is broken; never raises."""
    line = f"Error: {message}\n"
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        try:
            os.write(2, line.encode(errors="replace"))
        except OSError:
            pass


def interrupted_exit(e: KeyboardInterrupt) -> int:
    if isinstance(e, Interrupted):
        say("terminated (SIGTERM); completed checkpoints are kept (zoo train --resume continues)")
        return Interrupted.exit_code
    say("interrupted; completed checkpoints are kept (zoo train --resume continues)")
    return 130


def stdout_error_exit(e: OSError) -> int:
    """A write to stdout failed: the reader went away (141) or the device is full (9)."""
    if e.errno == errno.EPIPE or isinstance(e, BrokenPipeError):
        say("stdout was closed before zoo finished writing (the reader of the pipe exited); output was cut")
        code = 141
    else:
        say(f"cannot write to stdout ({e.strerror or e}); free space or redirect it elsewhere")
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
