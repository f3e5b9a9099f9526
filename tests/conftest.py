"""Session-wide settings for the test suite."""
import os
import random


def pytest_configure(config):
    # one base for the fuzzers' fresh seeds per session: pytest-xdist workers inherit it and collect
    # the same parametrized ids (set TILEC_FUZZ_BASE to replay a session)
    os.environ.setdefault("TILEC_FUZZ_BASE", str(random.SystemRandom().randrange(2 ** 31)))
    # launches check only the last pass's IR; the suite checks every pass, so a pass that breaks the
    # IR is named (passes/manager.py run_pipeline verify="final")
    os.environ.setdefault("TILEC_VERIFY", "each")
