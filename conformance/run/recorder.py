"""Each suite test's outcome, recorded in the report as pytest reports it, and the report files rewritten.

The report is rewritten after each test, so a run that is killed still leaves the tests it finished.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.report.record import TestRecord
from conformance.run.session import RUN

SuiteTest = Callable[[pytest.Item], tuple[str, str] | None]
"""The case's name and the profile's value of a suite test; None for any other test."""


class OutcomeRecorder:
    """Records each suite test's outcome as its reports arrive and rewrites the report files.

    Registered per config by the plugin (the log-report hook sees node ids, not items or the config), so two pytest
    sessions in one process never share state.
    """

    def __init__(self, config: pytest.Config, suite_test: SuiteTest) -> None:
        self.config = config
        self.suite_test = suite_test
        self.items: dict[str, tuple[str, str]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Remember which node ids are suite tests."""
        self.items = {item.nodeid: test for item in session.items if (test := self.suite_test(item)) is not None}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A skip in setup, a failure in any phase, or a pass of the call phase is the test's outcome."""
        session = self.config.stash.get(RUN, None)
        info = self.items.get(report.nodeid)
        if session is None or info is None:
            return
        case_name, profile = info
        outcome = None
        reason = ""
        if report.when == "setup" and report.skipped:
            outcome = "skipped"
            longrepr = report.longrepr
            reason = str(longrepr[2]).removeprefix("Skipped: ") if isinstance(longrepr, tuple) else str(longrepr)
        elif report.failed:
            outcome = "failed"
        elif report.when == "call" and report.passed:
            outcome = "passed"
        if outcome is None:
            return
        session.report.record_test(TestRecord(report.nodeid, case_name, profile, outcome, reason))
        session.report.write(progress=True)
