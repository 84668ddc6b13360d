"""The retry policy: which failed stages a relaunch resubmits, and with what."""
from synscale.backends.decide import retry_resources
from synscale.backends.profile import Profile
from synscale.study.schema import Resources, RetryPolicy

PROFILE = Profile(max_mem_gb=32, max_time_min=600)


def test_out_of_memory_doubles_memory_up_to_the_cap():
    r, why = retry_resources("out of memory", 1, Resources(mem_gb=8), RetryPolicy(), PROFILE)
    assert r.mem_gb == 16 and why == ""
    r, _ = retry_resources("out of memory", 2, Resources(mem_gb=24), RetryPolicy(), PROFILE)
    assert r.mem_gb == 32  # the profile's node has no more
    r, why = retry_resources("out of memory", 2, Resources(mem_gb=32), RetryPolicy(), PROFILE)
    assert r is None and "cap" in why


def test_timeout_asks_for_more_time():
    r, _ = retry_resources("timeout", 1, Resources(time_min=100), RetryPolicy(), PROFILE)
    assert r.time_min == 200
    r, why = retry_resources("timeout", 1, Resources(time_min=600), RetryPolicy(), PROFILE)
    assert r is None and "600 min" in why


def test_python_exceptions_are_not_retried_unless_asked():
    r, why = retry_resources("python exception", 1, Resources(), RetryPolicy(), PROFILE)
    assert r is None and "python_exceptions" in why
    r, _ = retry_resources("python exception", 1, Resources(),
                           RetryPolicy(python_exceptions=True), PROFILE)
    assert r == Resources()


def test_other_failures_retry_unchanged_until_attempts_run_out():
    for klass in ("cancelled", "node failure", "preemption", "unknown"):
        assert retry_resources(klass, 1, Resources(), RetryPolicy(), PROFILE) == (Resources(), "")
    r, why = retry_resources("node failure", 3, Resources(), RetryPolicy(attempts=3), PROFILE)
    assert r is None and "retry.attempts = 3" in why
