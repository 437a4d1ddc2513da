"""Malformed and odd workflow definitions fail to load through the CLI with one clear line.

Each file in ``tests/data/malformed/`` is loaded the way a user loads it,
``streamtask pipeline check FILE``, through the console entry point (in-process, for speed;
a few also in a real subprocess). Each must end with exit code 1 and exactly one line on
stderr: ``error: ...`` saying what is wrong (``EXPECTED`` holds a piece of it), never a
traceback and never "unexpected ... (a bug)". A new file without an entry here fails the
suite, so the corpus and its expectations stay together.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamtask.cli import main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "malformed"

EXPECTED = {
    "bad_expression_deep_in_input": "'${workflow.input.q' opens an expression with '${' that "
                                    "is never closed",
    "bad_expression_empty_path": "expression '${.}' in '${.}' is not a path",
    "bad_expression_filter": "JsonPath filters and deep scans are not supported",
    "bad_expression_nested_unclosed": "'${a.output.${b}' opens an expression",
    "bad_expression_unclosed": "'${workflow.input.x' opens an expression",
    "concurrent_limit_float": "concurrentExecLimit must be a whole number >= 0, not 2.5",
    "deep_json": "nests its JSON too deeply to read",
    "deep_nesting_loop": "nests too deeply",
    "deep_nesting_switch": "nests tasks 201 levels deep (branches, cases, loops); at most 50",
    "do_while_body_object": "loopOver must be a non-empty list of tasks",
    "do_while_no_body": "loopOver must be a non-empty list of tasks",
    "do_while_no_condition": "needs a loopCondition (JavaScript) or items",
    "do_while_only_join": "JOIN 'j' (ref 'j_ref') does not follow a FORK_JOIN",
    "duplicate_refs": "taskReferenceName 'r' is used 2 times",
    "duplicate_refs_nested": "taskReferenceName 'r' is used 2 times",
    "empty_file": "is not valid JSON",
    "empty_tasks": "needs a non-empty 'tasks' list",
    "event_no_sink": "EVENT 'e' (ref 'e'): sink None is not supported: give kafka:<topic>",
    "event_sink_conductor": "sink 'conductor' is not supported: give kafka:<topic>",
    "exclusive_join_string_join_on": "joinOn must be a list of task references",
    "failure_workflow_number": "failureWorkflow 5",
    "failure_workflow_self": "failureWorkflow 'wf' is not given to the loader",
    "failure_workflow_unknown": "failureWorkflow 'nope' is not given to the loader",
    "fork_branch_not_list": "forkTasks must list two or more non-empty branches",
    "fork_empty_branch": "forkTasks must list two or more non-empty branches",
    "fork_one_branch": "forkTasks must list two or more non-empty branches",
    "fork_tasks_not_list": "forkTasks must list two or more non-empty branches",
    "inline_bad_evaluator": "evaluatorType 'cobol' is not supported",
    "input_parameters_list": "inputParameters must be an object",
    "input_parameters_string": "inputParameters must be an object",
    "input_template_string": "inputTemplate must be an object",
    "join_first": "does not follow a FORK_JOIN",
    "join_mode_bad": "joinMode 'LATER' is not SYNC or ASYNC",
    "join_on_string": "joinOn 'a_ref' must name tasks of the FORK_JOIN's branches",
    "join_on_unknown": "joinOn ['zzz'] must name tasks",
    "join_timeout_negative": "timeoutSeconds must be a number >= 0, not -3",
    "join_without_fork": "does not follow a FORK_JOIN",
    "json_array": "must be a JSON object with 'name' and 'tasks'",
    "json_null": "must be a JSON object with 'name' and 'tasks'",
    "json_string": "must be a JSON object with 'name' and 'tasks'",
    "lambda_no_script": "needs a scriptExpression",
    "missing_name": "the definition has no 'name'",
    "missing_tasks": "needs a non-empty 'tasks' list",
    "name_empty": "the definition has no 'name'",
    "name_number": "name must be text, not 12",
    "not_json": "is not valid JSON",
    "optional_string": "optional must be true or false, not 'yes'",
    "output_parameters_list": "outputParameters must be an object",
    "output_parameters_unclosed": "outputParameters: '${a.output' opens an expression",
    "rate_limit_string": "rateLimitPerFrequency must be a whole number >= 0, not 'lots'",
    "ref_not_string": "taskReferenceName ['r'] must be text",
    "retry_count_huge": "retryCount 1000000000000 is over 1000",
    "retry_count_huge_float": "retryCount must be a whole number >= 0",
    "retry_count_negative": "retryCount must be a whole number >= 0, not -1",
    "retry_count_string": "retryCount must be a whole number >= 0, not '3'",
    "schema_version_1": "schemaVersion 1 is not supported",
    "start_workflow_unknown": "workflow 'nope' is not given to the loader",
    "sub_workflow_by_name_no_candidates": "its name is given by '${workflow.input.child}', "
                                          "and no workflow given to the loader",
    "sub_workflow_inline_bad_tasks": "sub-workflow 'c' has no tasks",
    "sub_workflow_inline_cycle": "sub-workflow 'wf' would contain itself",
    "sub_workflow_inline_not_object": "sub-workflow 'c' is neither inline",
    "sub_workflow_param_string": "subWorkflowParam.name must be a workflow's name",
    "sub_workflow_self": "sub-workflow 'wf' is neither inline",
    "sub_workflow_unknown": "sub-workflow 'nowhere' is neither inline",
    "switch_case_not_list": "decisionCases must map values to task lists",
    "switch_cases_list": "decisionCases must map values to task lists",
    "switch_default_object": "defaultCase must be a list of tasks",
    "switch_no_expression": "needs an expression",
    "switch_unknown_evaluator": "evaluatorType 'cobol' is not supported",
    "task_definition_bad_logic": "retryLogic 'SOMETIMES' is not one of",
    "task_definition_list": "taskDefinition must be an object",
    "task_missing_name_and_ref": "is not an object with a name",
    "task_name_bad_chars": "task name 'a b/c' is not a valid stage name",
    "task_name_number": "is not an object with a name",
    "task_name_too_long": "is not a valid stage name",
    "task_not_object": "task '42' is not an object with a name",
    "task_null": "task 'None' is not an object with a name",
    "tasks_not_list": "needs a non-empty 'tasks' list",
    "tasks_string": "needs a non-empty 'tasks' list",
    "terminate_bad_status": "terminationStatus 'MAYBE' is not one of",
    "timeout_negative": "timeoutSeconds must be a number >= 0, not -1",
    "type_null": "unsupported task type(s): 'a' (ref 'a_ref') (None)",
    "type_number": "unsupported task type(s): 'a' (ref 'a_ref') (7)",
    "type_unknown": "unsupported task type(s): 'a' (ref 'a_ref') (TELEPORT)",
    "unknown_task_option": "unsupported option(s) teleport",
    "unknown_workflow_option": "unsupported workflow option(s) teleport",
    "variables_list": "variables must be an object",
    "version_bool": "version must be an integer of 1 or more, not True",
    "version_string": "version must be an integer of 1 or more, not 'one'",
    "version_zero": "version must be an integer of 1 or more, not 0",
    "wait_bad_duration": "duration 'soon' is not like '2d 3h 10m 5s'",
    "start_delay_negative": "startDelay must be a number of seconds >= 0, not -5",
    "wait_until_impossible_date": "until '2026-02-30 10:00' is not a real date and time",
    "wait_until_number": "until must be text like '2026-12-24 18:00', not 1767225600",
    "wait_negative_duration": "duration '-5 seconds' is not like",
    "wait_duration_and_until": "give one of until or duration, not both",
    "wait_duration_number": "duration must be text like '2d 3h', not 30",
    **{f"input_parameters_list_{kind}": "inputParameters must be an object" for kind in (
        "decision", "do_while", "exclusive_join", "fork_join_dynamic", "http", "human",
        "inline", "json_jq_transform", "lambda", "set_variable", "start_workflow",
        "sub_workflow", "switch", "terminate", "wait")},
}


def check(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
          *args: str) -> tuple[int, list[str]]:
    """Run ``streamtask pipeline check ARGS`` through the console entry point."""
    monkeypatch.setattr(sys, "argv", ["streamtask", "pipeline", "check", *args])
    with pytest.raises(SystemExit) as ended:
        main()
    out = capsys.readouterr()
    assert out.out.strip() in ("", "ok"), out.out
    code = ended.value.code
    return code if isinstance(code, int) else 1, [line for line in out.err.splitlines()
                                                   if line.strip()]


def test_every_corpus_file_has_an_expectation() -> None:
    files = {path.stem for path in CORPUS.glob("*.json")}
    assert files == set(EXPECTED), (sorted(files - set(EXPECTED)),
                                    sorted(set(EXPECTED) - files))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_malformed_definition_fails_with_one_clear_line(
        name: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, lines = check(capsys, monkeypatch, str(CORPUS / f"{name}.json"))
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "unexpected" not in lines[0], lines[0]
    assert EXPECTED[name] in lines[0], lines[0]


def test_sub_workflows_that_contain_each_other_are_refused(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = CORPUS / "cycle" / "cycle_a.json", CORPUS / "cycle" / "cycle_b.json"
    code, lines = check(capsys, monkeypatch, str(a), "--sub-workflow", str(a),
                        "--sub-workflow", str(b))
    assert code == 1 and len(lines) == 1, lines
    assert "sub-workflow 'cycle_a' would contain itself" in lines[0]


@pytest.mark.parametrize("name", ["not_json", "deep_nesting_loop", "ref_not_string"])
def test_in_a_real_process_too(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "streamtask", "pipeline", "check",
                           str(CORPUS / f"{name}.json")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(lines) == 1 and EXPECTED[name] in lines[0], done.stderr
