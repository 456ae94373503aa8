"""HeapTrim: once per backlog, only after a large one, never while it is still held."""

from __future__ import annotations

from koji_messagebus.delivery.heaptrim import HeapTrim, _malloc_trim


def trimmer() -> tuple[HeapTrim, list[int]]:
    calls: list[int] = []
    return HeapTrim(trim=lambda pad: calls.append(pad) or 1, after=1000, low=64), calls


def test_trims_once_when_a_large_backlog_is_gone():
    heap, calls = trimmer()
    for held in (10, 500, 3000, 2000, 65):
        heap.note(held)
    assert calls == []  # still above LOW
    heap.note(64)
    heap.note(0)
    heap.note(0)
    assert calls == [0]
    assert heap.trims == 1


def test_a_small_backlog_is_not_worth_a_trim():
    heap, calls = trimmer()
    for held in (10, 999, 0, 5, 0):
        heap.note(held)
    assert calls == []


def test_each_large_backlog_gets_its_own_trim():
    heap, calls = trimmer()
    for held in (5000, 0, 20, 1200, 30):
        heap.note(held)
    assert calls == [0, 0]


def test_without_malloc_trim_it_only_counts():
    heap = HeapTrim(trim=None, after=1)
    heap._trim = None  # a C library without malloc_trim
    heap.note(5)
    heap.note(0)
    assert heap.trims == 0


def test_glibc_malloc_trim_is_found_and_callable():
    trim = _malloc_trim()
    assert trim is not None  # Debian's glibc has it
    assert trim(0) in (0, 1)
