"""USR2 (Slurm's warning before preemption or the time limit) waits for the
training step in flight to end, whichever thread the kernel hands it to."""
import os
import signal
import threading
import time

from synscale.runtime import preemption


def test_usr2_sent_during_a_step_runs_its_handler_after_the_step():
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(in_step[0]))
    # Threads that do not block USR2, as the loader's and gloo's do not: a
    # process-directed signal may be delivered to any of them.
    stop = threading.Event()
    others = [threading.Thread(target=stop.wait) for _ in range(4)]
    for t in others:
        t.start()
    in_step = [False]
    try:
        for _ in range(5):
            with preemption.deferred():
                in_step[0] = True
                os.kill(os.getpid(), signal.SIGUSR2)
                deadline = time.time() + 0.2
                while time.time() < deadline:  # bytecodes run: a handler would run here
                    pass
                in_step[0] = False
    finally:
        stop.set()
        for t in others:
            t.join()
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [False] * 5  # each signal handled once, and never inside a step


def test_a_step_without_a_signal_leaves_the_handler_as_it_was():
    def handler(s, f):
        pass
    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        with preemption.deferred():
            assert signal.getsignal(signal.SIGUSR2) is not handler
        assert signal.getsignal(signal.SIGUSR2) is handler
    finally:
        signal.signal(signal.SIGUSR2, previous)
