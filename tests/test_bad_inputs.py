"""Every case of tests/bad_inputs.py ends clear (a typed error that says what to do, or the promised
warning) or accepted (good input, right answer): none in a traceback, a vague message or a silent wrong
answer."""

from __future__ import annotations

import pytest

from bad_inputs import CASES, build_workspace, run_case


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case, workspace):
    outcome = run_case(case, workspace)
    expected = {"clear"} if case.expect in ("error", "warning") else {"accepted"}
    assert outcome.verdict in expected, f"{outcome.verdict}: {outcome.detail}"


def test_cases_cover_issue_13():
    groups = [case.group for case in CASES]
    assert groups.count("silent") >= 8 and groups.count("traceback") >= 6 and groups.count("misleading") >= 5
