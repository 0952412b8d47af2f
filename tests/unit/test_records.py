"""A stored report's one record (`store.bundle_record`): the parsed report and the original
input in one plaintext, encrypted once; read back whole or refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.store import bundle_record, unbundle_record

REPORTS = st.dictionaries(st.text(max_size=10), st.text() | st.integers() | st.none(), max_size=5)


@given(REPORTS, st.binary(max_size=2000))
def test_a_record_gives_back_its_report_and_original_byte_for_byte(
    report: dict[str, object], original: bytes
) -> None:
    assert unbundle_record(bundle_record(report, original)) == (report, original)


@given(REPORTS, st.binary(min_size=1, max_size=2000), st.data())
def test_a_record_cut_short_is_refused(
    report: dict[str, object], original: bytes, data: st.DataObject
) -> None:
    whole = bundle_record(report, original)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    with pytest.raises(ValueError):
        unbundle_record(whole[:cut])


def test_the_first_line_is_the_report_for_a_keyholder_with_gpg_alone() -> None:
    record = bundle_record({"body": "text\nwith lines"}, b"From: x\r\n\r\nbody\r\n")
    first, _, rest = record.partition(b"\n")
    assert b'"format": "report-intake record v2"' in first and b"with lines" in first
    assert rest == b"From: x\r\n\r\nbody\r\n"


def test_other_data_is_not_taken_for_a_record() -> None:
    with pytest.raises(ValueError, match="not a report-intake record"):
        unbundle_record(b'{"body": "an old parsed report"}')
