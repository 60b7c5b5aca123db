"""The CI skip policy itself: with EDGE_REQUIRE_INTEGRATION=1 any skip fails the run,
however the test skipped (at collection too), except a documented platform skip; on a
laptop all of them skip."""

import pytest

pytest_plugins = ["pytester"]

TESTS = '''
import pytest
from edge.testing.requirements import PLATFORM_SKIP

def test_needs_a_missing_program():
    pytest.skip("frobnicator is not installed")

def test_imports_a_missing_module():
    pytest.importorskip("no_such_module_here")

@pytest.mark.skipif(True, reason=f"needs a Raspberry Pi {PLATFORM_SKIP}")
def test_runs_only_on_a_pi():
    pass
'''


MODULE_SKIP = '''
import pytest
pytest.importorskip("no_such_module_at_import")

def test_never_collected():
    pass
'''


def run(pytester):
    pytester.makeconftest('pytest_plugins = ["edge.testing.pytest_plugin"]')
    pytester.makepyfile(test_skips=TESTS, test_module_skip=MODULE_SKIP)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "--continue-on-collection-errors")


def test_in_ci_only_a_platform_skip_is_allowed(pytester, monkeypatch):
    monkeypatch.setenv("EDGE_REQUIRE_INTEGRATION", "1")
    result = run(pytester)
    result.assert_outcomes(failed=2, skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*allows only platform skips: *no_such_module_at_import*"])
    result.stdout.fnmatch_lines(["*allows only platform skips: *frobnicator is not installed*",
                                 "*allows only platform skips: *no_such_module_here*"])


@pytest.mark.parametrize("value", ["", "0"])
def test_on_a_laptop_every_skip_stays_a_skip(pytester, monkeypatch, value):
    monkeypatch.setenv("EDGE_REQUIRE_INTEGRATION", value)
    run(pytester).assert_outcomes(skipped=4)
