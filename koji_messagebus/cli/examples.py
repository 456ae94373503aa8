"""Realistic hub callback kwargs for every event type, and a build's life from task to repo.

Shaped like what a Koji 1.35 hub passes (recorded in tests/data/hub-callbacks): dicts as
getBuild/getTag/getUser/getTaskInfo return them, timezone-aware datetimes for `*_time`, floats
for `*_ts`, the task request as a tuple (an XML-RPC string when the task is created).  The story:
alice builds hello-2.12.1-3.fc44 for the target f44-candidate; the build lands in
f44-updates-candidate and the f44-build repo is regenerated.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 3, 2, 10, 15, 0, 120331, tzinfo=UTC)


def _at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def _ts(seconds: float) -> float:
    return _at(seconds).timestamp()


ALICE = {"id": 2, "krb_principals": ["alice@EXAMPLE.COM"], "name": "alice", "status": 0, "usertype": 0}
ADMIN = {"id": 1, "krb_principals": [], "name": "kojiadmin", "status": 0, "usertype": 0}
PACKAGE = {"id": 412, "name": "hello"}
BUILD_TAG = {"arches": "x86_64 aarch64", "extra": {"mock.package_manager": "dnf"}, "id": 1200, "locked": False,
             "maven_include_all": False, "maven_support": False, "name": "f44-build", "perm": None, "perm_id": None}
DEST_TAG: dict[str, Any] = {"arches": None, "extra": {}, "id": 1201, "locked": False, "maven_include_all": False,
                            "maven_support": False, "name": "f44-updates-candidate", "perm": None, "perm_id": None}
STABLE_TAG: dict[str, Any] = {"arches": None, "extra": {}, "id": 1198, "locked": False,
                              "maven_include_all": False, "maven_support": False, "name": "f44", "perm": "admin",
                              "perm_id": 1}

TASK_ID = 81234
ARCH_TASK_ID = 81235
REPO_TASK_ID = 81240
BUILD_ID = 2417
REPO_ID = 9021
SRPM = "cli-build/1772446499.8410532.KzJbQpYe/hello-2.12.1-3.fc44.src.rpm"
WORKDIR = f"tasks/{ARCH_TASK_ID % 10000}/{ARCH_TASK_ID}"

#: koji.BUILD_STATES
BUILDING, COMPLETE, DELETED, FAILED, CANCELED = 0, 1, 2, 3, 4


def _request_xml() -> str:
    return ("<?xml version='1.0'?>\n<methodCall>\n<methodName>build</methodName>\n<params>\n"
            f"<param>\n<value><string>{SRPM}</string></value>\n</param>\n"
            "<param>\n<value><string>f44-candidate</string></value>\n</param>\n"
            "<param>\n<value><struct>\n</struct></value>\n</param>\n</params>\n</methodCall>\n")


def task_info(state: str) -> dict[str, Any]:
    """The build task as getTaskInfo returns it in the given state ('FREE' on creation gives the
    creation options instead, as the hub passes them)."""
    if state == "FREE":
        return {"arch": "noarch", "channel_id": 1, "id": TASK_ID, "label": None, "method": "build", "owner": 2,
                "parent": None, "priority": 20, "request": _request_xml(), "state": 0}
    closed = state in ("CLOSED", "FAILED", "CANCELED")
    return {
        "arch": "noarch", "awaited": None, "channel_id": 1,
        "completion_time": _at(412.5) if closed else None, "completion_ts": _ts(412.5) if closed else None,
        "create_time": _at(0), "create_ts": _ts(0), "host_id": 3, "id": TASK_ID, "label": None,
        "method": "build", "owner": 2, "parent": None, "priority": 20,
        "request": (SRPM, "f44-candidate", {}),
        **({"result": None} if closed else {}),
        "start_time": _at(4.2), "start_ts": _ts(4.2),
        "state": {"OPEN": 1, "CLOSED": 2, "CANCELED": 3, "FAILED": 5}[state],
        "waiting": False if closed else None, "weight": 0.2,
    }


def task_state(old: str | None, new: str) -> dict[str, Any]:
    """postTaskStateChange kwargs for the build task."""
    return {"attribute": "state", "old": old, "new": new, "info": task_info(new)}


def build_info(state: int, draft: bool = False) -> dict[str, Any]:
    """The build as getBuild returns it."""
    done = state != BUILDING
    release = f"3.fc44,draft_{BUILD_ID}" if draft else "3.fc44"
    return {
        "build_id": BUILD_ID, "cg_id": None, "cg_name": None,
        "completion_time": _at(398.7) if done else None, "completion_ts": _ts(398.7) if done else None,
        "creation_event_id": 5120933, "creation_time": _at(9.1), "creation_ts": _ts(9.1),
        "draft": draft, "epoch": None, "extra": {"source": {"original_url": "git+https://src.fedoraproject.org/"
                                                            "rpms/hello.git#4f2c1a9"}},
        "id": BUILD_ID, "name": "hello", "nvr": f"hello-2.12.1-{release}", "owner_id": 2, "owner_name": "alice",
        "package_id": PACKAGE["id"], "package_name": "hello", "promoter_id": None, "promoter_name": None,
        "promotion_time": None, "promotion_ts": None, "release": release,
        "source": "git+https://src.fedoraproject.org/rpms/hello.git#4f2c1a9",
        "start_time": _at(9.0), "start_ts": _ts(9.0), "state": state, "task_id": TASK_ID,
        "version": "2.12.1", "volume_id": 0, "volume_name": "DEFAULT",
    }


def build_state(old: int | None, new: int) -> dict[str, Any]:
    """postBuildStateChange kwargs (state values as koji.BUILD_STATES)."""
    return {"attribute": "state", "old": old, "new": new, "info": build_info(new)}


def _rpm(arch: str, rpm_id: int, size: int) -> dict[str, Any]:
    return {"arch": arch, "build_id": BUILD_ID, "buildroot_id": 771203, "buildtime": int(_ts(250)),
            "draft": False, "epoch": None, "external_repo_id": 0, "external_repo_name": "INTERNAL", "extra": None,
            "id": rpm_id, "metadata_only": False, "name": "hello", "payloadhash": "6b9e0c2b3f1d4a5e8c7d9f0a1b2c3d4e",
            "release": "3.fc44", "size": size, "version": "2.12.1"}


def import_build() -> dict[str, Any]:
    """postImport of type build (host.completeBuild)."""
    rpms = [f"{WORKDIR}/hello-2.12.1-3.fc44.x86_64.rpm", f"{WORKDIR}/hello-debuginfo-2.12.1-3.fc44.x86_64.rpm"]
    return {
        "type": "build", "srpm": f"{WORKDIR}/hello-2.12.1-3.fc44.src.rpm", "rpms": rpms,
        "brmap": {path: 771203 for path in [f"{WORKDIR}/hello-2.12.1-3.fc44.src.rpm", *rpms]},
        "task_id": TASK_ID, "build_id": BUILD_ID, "build": build_info(COMPLETE),
        "logs": {"x86_64": [f"{WORKDIR}/build.log", f"{WORKDIR}/root.log", f"{WORKDIR}/state.log"]},
    }


def tag(tag_info: dict | None = None) -> dict[str, Any]:
    """postTag: the build tagged into f44-updates-candidate by the build task (alice's build)."""
    return {"tag": copy.deepcopy(tag_info or DEST_TAG), "build": build_info(COMPLETE), "user": dict(ALICE),
            "force": False}


def untag() -> dict[str, Any]:
    return {"tag": copy.deepcopy(DEST_TAG), "build": build_info(COMPLETE), "user": dict(ADMIN), "force": False,
            "strict": True}


def repo_init() -> dict[str, Any]:
    """postRepoInit of a regular repo as Koji 1.35 passes it (task_id and opts)."""
    return {"tag": copy.deepcopy(BUILD_TAG), "event": None, "repo_id": REPO_ID, "task_id": REPO_TASK_ID,
            "opts": {"debuginfo": False, "maven": False, "separate_src": False, "src": False}}


def repo_done() -> dict[str, Any]:
    files = ["2b1f0c7e5d9a4c3b8e6f1a2d3c4b5a69-primary.xml.zst", "3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f-filelists.xml.zst",
             "4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a-other.xml.zst", "5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b-comps.xml",
             "repomd.xml"]
    return {
        "repo": {"begin_event": 5121001, "begin_ts": _ts(430.0), "create_event": 5121009, "create_ts": _ts(433.1),
                 "creation_time": _at(433.1), "creation_ts": _ts(433.1), "custom_opts": {}, "dist": False,
                 "end_event": None, "end_ts": None, "id": REPO_ID,
                 "opts": {"debuginfo": False, "maven": False, "separate_src": False, "src": False}, "state": 0,
                 "state_time": _at(433.1), "state_ts": _ts(433.1), "tag_id": BUILD_TAG["id"],
                 "tag_name": BUILD_TAG["name"], "task_id": REPO_TASK_ID, "task_state": 1},
        "data": {"x86_64": [f"tasks/{REPO_TASK_ID % 10000 + 1}/{REPO_TASK_ID + 1}", files],
                 "aarch64": [f"tasks/{REPO_TASK_ID % 10000 + 2}/{REPO_TASK_ID + 2}", files]},
        "expire": False,
    }


def package_list_change() -> dict[str, Any]:
    return {"action": "add", "tag": copy.deepcopy(STABLE_TAG), "package": dict(PACKAGE), "owner": 2, "block": False,
            "extra_arches": None, "force": False, "update": False, "user": dict(ADMIN)}


def rpm_sign() -> dict[str, Any]:
    return {"sigkey": "31645531", "sighash": "a1f3c5e7b9d2f4a6c8e0b2d4f6a8c0e2", "build": build_info(COMPLETE),
            "rpm": _rpm("x86_64", 39417701, 48213)}


def build_promote() -> dict[str, Any]:
    promoted = build_info(COMPLETE)
    promoted.update(promoter_id=2, promoter_name="alice", promotion_time=_at(600.0), promotion_ts=_ts(600.0))
    return {"draft_release": f"3.fc44,draft_{BUILD_ID}", "target_release": "3.fc44", "build": promoted,
            "user": dict(ALICE)}


#: one realistic example per message type (a function: every call returns fresh data)
EXAMPLES = {
    "PackageListChange": package_list_change,
    "TaskStateChange": lambda: task_state("OPEN", "CLOSED"),
    "BuildStateChange": lambda: build_state(BUILDING, COMPLETE),
    "Import": import_build,
    "RPMSign": rpm_sign,
    "Tag": tag,
    "Untag": untag,
    "RepoInit": repo_init,
    "RepoDone": repo_done,
    "BuildPromote": build_promote,
}


def example(msg_type: str) -> dict[str, Any]:
    """Fresh kwargs of the example for a message type (KeyError for an unknown one)."""
    return EXAMPLES[msg_type]()


def build_story() -> list[tuple[str, str, list[tuple[str, dict[str, Any]]]]]:
    """A build from task to tag to repo as the hub's requests: (API method, what happens,
    [(callback type, kwargs), ...]) in the order a Koji 1.35 hub runs them."""
    nvr = "hello-2.12.1-3.fc44"
    return [
        ("build", f"alice submits the build of {SRPM.rsplit('/', 1)[1]} for f44-candidate",
         [("postTaskStateChange", task_state(None, "FREE"))]),
        ("host.openTask", "builder01 takes the build task", [("postTaskStateChange", task_state("FREE", "OPEN"))]),
        ("host.initBuild", f"the hub creates the build {nvr}",
         [("postBuildStateChange", build_state(None, BUILDING))]),
        ("host.completeBuild", "the rpms and logs are imported, the build is complete",
         [("postBuildStateChange", build_state(BUILDING, COMPLETE)), ("postImport", import_build())]),
        ("host.tagBuild", f"{nvr} is tagged into {DEST_TAG['name']}", [("postTag", tag())]),
        ("host.closeTask", "the build task is closed", [("postTaskStateChange", task_state("OPEN", "CLOSED"))]),
        ("host.repoInit", f"a new repo of {BUILD_TAG['name']} is started", [("postRepoInit", repo_init())]),
        ("host.repoDone", f"the {BUILD_TAG['name']} repo is ready", [("postRepoDone", repo_done())]),
    ]
