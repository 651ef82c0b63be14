"""`make test-week11` must pass with every other week deleted (weeks depend only on shared/)."""

import pytest

from shared.testing import ISOLATION_TIMEOUT_S, run_week_tests_alone


@pytest.mark.slow
@pytest.mark.timeout(ISOLATION_TIMEOUT_S + 120)  # the child pytest has its own, generous limit
def test_the_week_s_tests_pass_with_every_other_week_deleted(tmp_path):
    proc = run_week_tests_alone("week11_inference", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
