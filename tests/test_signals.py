"""zoo.core.signals: SIGINT and SIGTERM as exceptions, deferred around code that must not be cut."""

import os
import signal

import pytest

from zoo.core import signals
from zoo.core.errors import Interrupted


@pytest.fixture
def installed():
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}
    signals.install()
    yield
    for s, h in before.items():
        signal.signal(s, h)


def test_sigterm_raises_interrupted_and_sigint_keyboard_interrupt(installed):
    with pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


def test_held_defers_a_signal_to_the_end_of_the_block(installed):
    done = []
    with pytest.raises(Interrupted):
        with signals.held():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("the block finished first")
    assert done == ["the block finished first"]
    assert signal.getsignal(signal.SIGTERM) is signals._terminate  # the handler is back


def test_on_signal_runs_the_callers_handler_then_restores(installed):
    seen = []
    with signals.on_signal(lambda signum, frame: seen.append(signum)):
        os.kill(os.getpid(), signal.SIGINT)
    assert seen == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
