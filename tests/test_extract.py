"""Base_de_datos.csv: every flight, the joins, the raw encodings, a byte-identical rebuild."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from build_extract import EXTRACT_COLUMNS, FLIGHT_COLUMNS, build_extract, default_source_dir, write_extract
from conftest import RAW_CSV


@pytest.fixture(scope="module")
def source_flight_lines() -> list[str]:
    with zipfile.ZipFile(default_source_dir() / "flights.csv.zip") as archive:
        return archive.read("flights.csv").decode().splitlines()


def test_every_flight_is_there(raw_lines: list[str]) -> None:
    assert len(raw_lines) - 1 == 336_776


def test_columns(raw_lines: list[str]) -> None:
    header = raw_lines[0].rstrip("\n").split(",")
    assert header == EXTRACT_COLUMNS
    assert "plane_year" in header and header.count("year") == 1
    for column in ["temp", "wind_speed", "type", "manufacturer", "model", "engines", "seats", "engine"]:
        assert column in header
    assert header[-1] == "airline_name"


def test_flight_fields_are_the_source_text_in_source_order(
    raw_lines: list[str], source_flight_lines: list[str]
) -> None:
    """The first 19 fields of every extract line are the source flights.csv line, byte for byte."""
    width = len(FLIGHT_COLUMNS)
    assert len(source_flight_lines) == len(raw_lines)
    mismatched = [
        i
        for i, (ours, source) in enumerate(zip(raw_lines, source_flight_lines))
        if ",".join(ours.rstrip("\n").split(",")[:width]) != source
    ]
    assert not mismatched, f"{len(mismatched)} lines differ from flights.csv, first at line {mismatched[0]}"


def test_raw_encodings_kept(raw_lines: list[str]) -> None:
    rows = [line.rstrip("\n").split(",") for line in raw_lines[1:]]
    col = {name: i for i, name in enumerate(EXTRACT_COLUMNS)}
    dep_times = {r[col["dep_time"]] for r in rows}
    assert "2400" in dep_times, "HHMM times must stay as written (2400 included)"
    assert not any(":" in t for t in dep_times), "times must stay HHMM integers"
    # cancelled flights keep NA in every post-departure column
    assert sum(r[col["dep_time"]] == "NA" for r in rows) == 8_255
    assert sum(r[col["arr_delay"]] == "NA" for r in rows) == 9_430
    # flights with no plane row and no weather hour keep NA from the left join
    assert sum(r[col["type"]] == "NA" for r in rows) == 52_606
    assert sum(r[col["visib"]] == "NA" for r in rows) == 1_556
    # no empty field: NA is the only null marker, float spellings are the source's
    assert not any("" in r for r in rows)
    assert "12.658579999999999" in raw_lines[1]


def test_rebuild_is_byte_identical(tmp_path) -> None:
    rebuilt = tmp_path / "Base_de_datos.csv"
    digest = write_extract(build_extract(default_source_dir()), rebuilt)
    assert digest == hashlib.sha256(RAW_CSV.read_bytes()).hexdigest()
