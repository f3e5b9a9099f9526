"""Session-wide settings for the test suite."""
import os
import random


def pytest_configure(config):
    # one base for the fuzzers' fresh seeds per session: pytest-xdist workers inherit it and collect
    # the same parametrized ids (set TILEC_FUZZ_BASE to replay a session)
    os.environ.setdefault("TILEC_FUZZ_BASE", str(random.SystemRandom().randrange(2 ** 31)))
