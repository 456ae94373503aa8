"""The built-in examples (koji_messagebus.cli.examples) have the shape of what a real hub passes."""

from __future__ import annotations

import datetime

import pytest
from koji.util import encode_datetime_recurse

from devkit.recorded import entries
from koji_messagebus.cli import examples
from koji_messagebus.format.messages import CALLBACK_TYPES, MESSAGE_TYPES, format_event

CALLBACK_OF = {t: cb for cb, t in CALLBACK_TYPES.items()}
#: nested maps whose keys vary between calls by design (free-form data)
FREE_FORM = {"extra", "opts", "brmap", "logs", "data", "custom_opts", "request"}


def shape_problems(example: dict, recorded: dict, path: str) -> list[str]:
    """Differences in keys and value types (recursively; None matches any type)."""
    problems = []
    if set(example) != set(recorded):
        problems.append(f"{path}: keys +{sorted(set(example) - set(recorded))} -{sorted(set(recorded) - set(example))}")
    for key in set(example) & set(recorded):
        mine, real = example[key], recorded[key]
        if mine is None or real is None:
            continue
        if type(mine) is not type(real):
            problems.append(f"{path}.{key}: {type(mine).__name__}, recorded {type(real).__name__}")
        elif isinstance(mine, dict) and key not in FREE_FORM:
            problems += shape_problems(mine, real, f"{path}.{key}")
    return problems


def closest(cbtype: str, kwargs: dict) -> list[str]:
    """The problems against the recorded call of that callback that fits best."""
    return min((shape_problems(kwargs, e["kwargs"], cbtype) for e in entries(cbtype)), key=len)


def test_every_message_type_has_an_example():
    assert set(examples.EXAMPLES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES)
def test_example_is_shaped_like_a_recorded_hub_call(msg_type):
    assert closest(CALLBACK_OF[msg_type], examples.example(msg_type)) == []


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES)
def test_example_makes_a_message_without_lossy_conversion(msg_type):
    event = format_event(msg_type, encode_datetime_recurse(examples.example(msg_type)), "koji.event")
    assert event.conversions.lossy == []
    assert event.routing_key.startswith(f"koji.event.{msg_type}.")
    assert None not in event.headers.values() or msg_type == "TaskStateChange"


def test_examples_are_fresh_copies():
    first = examples.example("Tag")
    first["build"]["name"] = "changed"
    assert examples.example("Tag")["build"]["name"] == "hello"


def test_examples_carry_the_hubs_python_types():
    task = examples.task_state("FREE", "OPEN")["info"]
    assert isinstance(task["request"], tuple)
    assert isinstance(task["create_time"], datetime.datetime) and task["create_time"].tzinfo is not None
    assert isinstance(task["create_ts"], float)
    assert isinstance(examples.task_state(None, "FREE")["info"]["request"], str)  # creation: XML-RPC text


def test_build_story_goes_from_task_to_tag_to_repo_in_hub_order():
    story = examples.build_story()
    fired = [(cb, kw.get("old"), kw.get("new")) for _, _, events in story for cb, kw in events]
    assert fired == [
        ("postTaskStateChange", None, "FREE"),
        ("postTaskStateChange", "FREE", "OPEN"),
        ("postBuildStateChange", None, examples.BUILDING),
        ("postBuildStateChange", examples.BUILDING, examples.COMPLETE),
        ("postImport", None, None),
        ("postTag", None, None),
        ("postTaskStateChange", "OPEN", "CLOSED"),
        ("postRepoInit", None, None),
        ("postRepoDone", None, None),
    ]
    methods = [method for method, _, _ in story]
    assert methods == ["build", "host.openTask", "host.initBuild", "host.completeBuild", "host.tagBuild",
                       "host.closeTask", "host.repoInit", "host.repoDone"]
    for _, _, events in story:
        for cbtype, kwargs in events:
            assert closest(cbtype, kwargs) == []


def test_story_is_consistent():
    """One build, one task, one tag and one repo throughout."""
    story = [kw for _, _, events in examples.build_story() for _, kw in events]
    task_ids = {kw["info"]["id"] for kw in story if "attribute" in kw and "method" in kw["info"]}
    build_ids = {kw["info"]["id"] for kw in story if "attribute" in kw and "nvr" in kw["info"]}
    build_ids |= {kw["build"]["id"] for kw in story if "build" in kw}
    assert task_ids == {examples.TASK_ID} and build_ids == {examples.BUILD_ID}
    repo_init, repo_done = story[-2], story[-1]
    assert repo_init["repo_id"] == repo_done["repo"]["id"]
    assert repo_init["tag"]["name"] == repo_done["repo"]["tag_name"]
