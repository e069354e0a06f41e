"""Ray Data's read of a JSONL corpus, with the single-process scorer's line reader.

Ray Data's own `read_json` (pandas' ujson in Ray 2.60) reads a line the project's
reader refuses differently: it silently drops an unpaired surrogate escape (the text
`"a\\ud800b"` is scored as `"ab"`), and fails the whole file on a line nested too
deeply or not valid JSON, so `--skip-bad-rows` could not skip it. Here each file is
read with `training.data.readers` (`decoded_lines`, `json_objects`), as `bert-mts-score`
reads it without Ray: such a line stops the job as `file:line: reason`, or with
`skip_bad_rows` comes out as a row that holds only its reason in `BAD_ROW_COLUMN`,
which the scoring actor passes on and the sink leaves out and reports.
"""

from __future__ import annotations

from collections.abc import Iterator

from training.data.examples import DataError
from training.data.readers import BadRow, decoded_lines, json_objects

BAD_ROW_COLUMN = "__bert_mts_bad_row"  # a row's reason for being skipped; never written
_READ_BYTES = 1 << 20


def _byte_lines(stream) -> Iterator[bytes]:
    """The lines of a binary stream (pyarrow's NativeFile), each with its b"\\n"."""
    rest = b""
    while block := stream.read(_READ_BYTES):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def _table(records: list[dict]):
    """Records as an Arrow table: every key of any record a column (pyarrow's
    `from_pylist` would keep only the first record's keys), missing values null."""
    import pyarrow as pa

    names = list(dict.fromkeys(name for record in records for name in record))
    return pa.table({name: [record.get(name) for record in records] for name in names})


def _block(path: str, records: list[dict], lines: tuple[int, int]):
    """`_table`, or one DataError line where Arrow cannot hold the values: a key whose
    values differ in type (a number here, a string there). Ray Data needs Arrow; the
    single-process run writes such rows to JSONL as they are."""
    import pyarrow as pa

    try:
        return _table(records)
    except pa.ArrowException as err:
        detail = " ".join(str(err).split())
        raise DataError(
            path,
            None,
            f"lines {lines[0]}-{lines[1]}: values of one key differ in type ({detail}); "
            "Ray Data needs one type per column: score the file without --ray",
        ) from None


def jsonl_rows(path: str, stream, skip_bad_rows: bool, rows_per_block: int) -> Iterator:
    """Arrow tables of up to `rows_per_block` rows of one JSONL file, in line order."""
    records: list[dict] = []
    first = 0
    for line, item in json_objects(decoded_lines(path, _byte_lines(stream))):
        if isinstance(item, BadRow):
            if not skip_bad_rows:
                raise DataError(path, line, item.reason)
            item = {BAD_ROW_COLUMN: str(DataError(path, line, item.reason))}
        elif BAD_ROW_COLUMN in item:
            raise DataError(path, line, f"the key {BAD_ROW_COLUMN!r} is the scorer's own")
        first = first or line
        records.append(item)
        if len(records) == rows_per_block:
            yield _block(path, records, (first, line))
            records, first = [], 0
    if records:
        yield _block(path, records, (first, line))


def jsonl_datasource(files: list[str], skip_bad_rows: bool, rows_per_block: int):
    """A Ray Data datasource of the JSONL `files` (for `ray.data.read_datasource`)."""
    from ray.data.datasource import FileBasedDatasource

    class ScorerJSONL(FileBasedDatasource):
        def _read_stream(self, f, path: str):
            yield from jsonl_rows(path, f, skip_bad_rows, rows_per_block)

        def get_name(self) -> str:
            return "ScorerJSONL"

    return ScorerJSONL(files)
