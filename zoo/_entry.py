"""The `zoo` process's first lines: signals, warnings and stdout, before anything heavy loads.

Ctrl-C (SIGINT) and SIGTERM become exceptions from the first instruction on, so either
one, at any moment (the imports of click, Keras and TensorFlow included), ends in one
line and a documented exit code: 130 for SIGINT, 143 for SIGTERM. Inside a command the
exception unwinds through the run's `finally` blocks (temporary files removed, the lock
released), so `zoo train --resume` continues from the last completed epoch.

Warnings from numpy, Keras or Pillow never reach the terminal unless ZOO_DEBUG=1.
A closed stdout (`zoo list | head -1`) exits 141; a full one (`> /dev/full`) exits 9; so does
a stdout that was never open (`zoo train RUN >&-`, as under some daemons): that is checked
before any command starts, so nothing is removed or written (and no file zoo opens can take
file descriptor 1 and receive its report).
Only the standard library is imported here.
"""

import errno
import os
import sys

from zoo.core import signals
from zoo.core.backend import own_process
from zoo.core.console import finish, interrupted_exit, say, stdout_error_exit
from zoo.core.errors import EnvironmentProblem


def quiet_warnings() -> None:
    if os.environ.get("ZOO_DEBUG"):
        return
    import warnings

    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # child processes (an export under TensorFlow) too


def stdout_missing() -> bool:
    """stdout was closed before zoo started: Python then sets sys.stdout to None."""
    if sys.stdout is None:
        return True
    try:
        os.fstat(1)
    except OSError:
        return True
    return False


def main() -> None:
    signals.install()
    own_process()  # Keras loads without the extras zoo never uses (zoo.core.backend)
    if stdout_missing():
        say("stdout (file descriptor 1) is closed; zoo writes its report there: redirect it to a file or "
            "/dev/null instead of closing it")
        sys.exit(EnvironmentProblem.exit_code)
    try:
        quiet_warnings()
        import click

        from zoo.cli import main as cli

        try:
            cli.main(prog_name="zoo", standalone_mode=False)
            code = 0
        except SystemExit as e:  # a command's exit code; or click's own exit on a broken pipe
            if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
                raise BrokenPipeError(errno.EPIPE, "Broken pipe") from None
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.exceptions.Abort as e:  # click turns a KeyboardInterrupt outside a command into Abort
            code = interrupted_exit(e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else KeyboardInterrupt())
        except click.exceptions.ClickException as e:  # bad options: click's usage message, exit 2
            e.show()
            code = e.exit_code
        sys.stdout.flush()
    except KeyboardInterrupt as e:
        code = interrupted_exit(e)
    except OSError as e:  # stdout failed outside a command (help text, the final flush)
        code = stdout_error_exit(e)
    finish(code)  # os._exit: no interpreter teardown for a late signal to land in
