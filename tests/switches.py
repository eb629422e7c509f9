"""The kernels' on/off switches in tests: a fixture that turns one on for a test and restores it afterwards."""

import pytest


def switch_fixture(use, is_on):
    """A pytest fixture: ``use(True)`` through the test, then the switch as ``is_on()`` said before it."""
    @pytest.fixture
    def fixture():
        before = is_on()
        use(True)
        yield
        use(before)
    return fixture
