"""llem/faults.py: which signals stop a single run, in this process with real signals."""

from __future__ import annotations

import os
import signal

import pytest

from llem.faults import Interrupted, stop_signals_interrupt


@pytest.fixture
def hup_and_term():
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_each_stop_signal_raises_interrupted_with_its_exit_code(hup_and_term) -> None:
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        with pytest.raises(Interrupted) as e, stop_signals_interrupt():
            os.kill(os.getpid(), sig)
        assert e.value.signum == sig and e.value.exit_code == code


def test_a_signal_started_ignored_stays_ignored(hup_and_term) -> None:
    # `nohup python -m llem ...`: SIGHUP is ignored on entry, so closing the terminal must not stop the job
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with stop_signals_interrupt():
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)  # nothing happens
        with pytest.raises(Interrupted):  # SIGTERM still stops it
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def test_the_launcher_keeps_an_ignored_sighup_too(hup_and_term) -> None:
    from llem.launch.supervisor import Supervisor, _Terminated

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with Supervisor._signals(Supervisor.__new__(Supervisor)):  # no state used
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)
        with pytest.raises(_Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
