"""Which errors the `moe-ts` command reports in one line: every package of the project counts as ours."""
from __future__ import annotations

from pathlib import Path

from moe_ts.errors import OUR_PACKAGES, is_user_error

ROOT = Path(__file__).resolve().parents[2]


def test_every_top_level_package_of_the_project_is_ours():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk == set(OUR_PACKAGES)


def test_an_error_type_defined_in_a_workflow_package_is_the_users():
    class WorkflowError(RuntimeError):  # a RuntimeError: not one of the library error types counted anyway
        pass

    for package in ("distill", "finetune", "cli"):
        WorkflowError.__module__ = f"{package}.data"
        assert is_user_error(WorkflowError("bad input"))
    WorkflowError.__module__ = "somewhere_else"
    assert not is_user_error(WorkflowError("a bug"))
