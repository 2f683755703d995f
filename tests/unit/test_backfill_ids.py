"""Backfill message ids are a promise across versions: the same line (or row key) must give
the same id in every release, or a re-import after an upgrade would duplicate events."""

from __future__ import annotations

import uuid

from koala_async.backfill import line_id, row_id

LINE = b'{"kind": "track"}'


def test_a_line_id_is_fixed_forever_and_ignores_the_line_ending() -> None:
    golden = "96e71dd7-adb7-85c7-af37-c7cd89e31b04"
    assert line_id(1, LINE + b"\n") == line_id(1, LINE + b"\r\n") == line_id(1, LINE) == golden
    assert uuid.UUID(golden).version == 8


def test_the_same_line_elsewhere_in_the_file_is_another_event() -> None:
    assert line_id(2, LINE) == "d9ca2b9a-fa61-87b9-b5a5-ff4ef6e4beaa"
    assert line_id(2, LINE) != line_id(1, LINE)


def test_a_row_id_is_fixed_forever_and_keys_of_several_parts_do_not_collide() -> None:
    assert row_id("order-1") == "b8dcf543-338d-8c6b-a13f-d35db6413608"
    assert row_id("u", 3) == "e968f168-0ca1-8e50-8f0b-bbb7434860fa"
    assert row_id("u", 3) != row_id("u3") != row_id("u", "3", "")
