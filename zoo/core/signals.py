"""SIGINT and SIGTERM, handled in one place.

`install()` makes both exceptions from the first instruction on: Ctrl-C raises
KeyboardInterrupt, SIGTERM raises `Interrupted` (a KeyboardInterrupt), so either unwinds
through every `finally` (temporary files removed, locks released) and ends in one line and
exit 130 or 143. `held()` defers both for a few milliseconds around code that must not be
cut in half (starting the checkpoint writer's thread). `on_signal(handler)` runs a handler
of the caller's in their place for a block (the server's shutdown, a sweep's workers).

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from zoo.core.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _terminate(signum, frame):
    raise Interrupted()


def install() -> None:
    """Ctrl-C raises KeyboardInterrupt (also where a parent set SIG_IGN); SIGTERM raises Interrupted."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def on_signal(handler, signals=SIGNALS):
    """Run `handler(signum, frame)` for `signals` during the block, then put the old handlers back.

    Only the main thread handles signals; elsewhere this changes nothing.
    """
    if not _main_thread():
        yield
        return
    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def recorded() -> list:
    """From now on SIGINT and SIGTERM are only recorded, in the list returned (its first item is
    the first signal received): for a process's last moments, which nothing may cut short."""
    received = []
    if _main_thread():
        for sig in SIGNALS:
            signal.signal(sig, lambda signum, frame: received.append(signum))
    return received


@contextlib.contextmanager
def held():
    """SIGINT and SIGTERM received in the block are handled when it ends, by the handlers in
    place before it (the first one received; the process then unwinds as usual).

    A signal mask would not do: the kernel hands a process's signal to any thread that does
    not block it (TensorFlow's pool threads), and Python then runs the handler in the main
    thread regardless. Only the main thread handles signals; elsewhere this changes nothing.
    """
    if not _main_thread():
        yield
        return
    received, previous = [], {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])
