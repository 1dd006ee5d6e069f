"""Corpora: a spec string -> documents (one string each), in a deterministic order.

Specs:

    stdlib                 this interpreter's standard-library *.py files (about 12 MB of
                           code, on every machine), without test folders or site-packages
    path/to/file.txt       one document: the whole file
    path/to/file.jsonl     one document per line: record[text_field]
    path/to/folder         every file under it with a suffix in TEXT_SUFFIXES, recursively
                           (hidden files and folders skipped); .jsonl files are read as JSONL
    data/*.txt             a glob (`*`, `?`, `[`; `**` recurses): the matching files
    hf:NAME_OR_PATH[#SPLIT]
                           a Hugging Face `datasets` dataset, column text_field, split
                           "train" by default. Works offline for local data: a folder written
                           by `Dataset.save_to_disk`, a data file (.json .jsonl .csv .parquet
                           .txt .arrow), or a folder of such files; other names go to the hub.

Files are read as UTF-8 without newline translation, so byte counts match the files.
Empty documents are skipped; a corpus with no non-empty document is an error.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import shlex
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from redraft.errors import RedraftError

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".rst", ".py", ".jsonl"})
_STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages"})
_HF_FILE_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
}


def iter_documents(spec: str, text_field: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of corpus `spec` (see the module docstring)."""
    any_text = False
    for doc in _iter_raw(spec, text_field):
        if doc:
            any_text = True
            yield doc
    if not any_text:
        raise RedraftError(f"corpus {spec!r} is empty: it has no non-empty document")


def iter_document_paths(spec: str) -> list[Path]:
    """The files a file-based spec reads, in order (not for "hf:" specs)."""
    if spec.startswith("hf:"):
        raise RedraftError(f"corpus {spec!r} is a Hugging Face dataset, not a set of files")
    if spec == "stdlib":
        return _stdlib_paths()
    path = Path(spec)
    if not path.exists() and any(ch in spec for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not paths:
            raise RedraftError(f"corpus {spec!r} is empty: the glob matches no files")
        return paths
    if path.is_file():
        return [path]
    if path.is_dir():
        paths = sorted(
            p
            for p in path.rglob("*")
            if p.suffix in TEXT_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not paths:
            raise RedraftError(
                f"corpus {spec!r} is empty: the folder has no file with a suffix in "
                f"{sorted(TEXT_SUFFIXES)}"
            )
        return paths
    raise RedraftError(
        f"corpus {spec!r} not found: expected 'stdlib', an existing file or folder, a glob, "
        "or 'hf:NAME_OR_PATH[#SPLIT]'" + _download_hint(path)
    )


# Corpora the shipped configs name, and where to fetch each (docs/training.md's one-line download).
DOWNLOADS = {
    "tinyshakespeare/input.txt":
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
}


def _download_hint(path: Path) -> str:
    for tail, url in DOWNLOADS.items():
        if path.as_posix().endswith(tail):
            folder, file = shlex.quote(str(path.parent)), shlex.quote(str(path))
            return f"; fetch it with: mkdir -p {folder} && curl -fL -o {file} {url}"
    return ""


def corpus_id(spec: str, text_field: str = "text") -> str:
    """A string that changes when the corpus content may have changed (a cache key part).

    Files are identified by absolute path, size and modification time, the standard library
    by its location and the Python version; a hub dataset only by its spec.
    """
    if spec == "stdlib":
        stdlib = sysconfig.get_paths()["stdlib"]
        return f"stdlib:{platform.python_version()}:{_digest([stdlib])}"
    if spec.startswith("hf:"):
        name, split = _parse_hf(spec)
        local = Path(name)
        files = sorted(local.rglob("*")) if local.is_dir() else [local]
        stats = [_file_stat(p) for p in files if p.is_file()]
        return f"hf:{_digest([name, split, text_field, stats])}"
    paths = iter_document_paths(spec)
    return f"files:{len(paths)}:{_digest([text_field, [_file_stat(p) for p in paths]])}"


def _iter_raw(spec: str, text_field: str) -> Iterator[str]:
    if spec.startswith("hf:"):
        yield from _iter_hf(spec, text_field)
        return
    skip_undecodable = spec == "stdlib"
    for path in iter_document_paths(spec):
        if path.suffix == ".jsonl":
            yield from _iter_jsonl(path, text_field)
            continue
        try:
            yield path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            if skip_undecodable:
                continue  # a few stdlib files are deliberately in other encodings
            raise RedraftError(
                f"corpus file {str(path)!r} is not UTF-8 (byte {err.start}): expected UTF-8 text"
            ) from err


def _iter_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{str(path)!r} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RedraftError(f"{where} is not valid JSON: {err.msg}") from err
            if not isinstance(record, dict) or text_field not in record:
                raise RedraftError(
                    f"{where} has no field {text_field!r}: expected a JSON object with it"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise RedraftError(
                    f"{where}: field {text_field!r} is {type(text).__name__}, expected a string"
                )
            yield text


def _stdlib_paths() -> list[Path]:
    paths = []
    for folder, subfolders, files in os.walk(sysconfig.get_paths()["stdlib"]):
        # Pruning in place keeps os.walk out of the (large) test suites entirely.
        subfolders[:] = [name for name in subfolders if name not in _STDLIB_SKIP]
        paths.extend(Path(folder, name) for name in files if name.endswith(".py"))
    return sorted(p for p in paths if p.is_file())


def _parse_hf(spec: str) -> tuple[str, str]:
    name, _, split = spec[len("hf:") :].partition("#")
    if not name:
        raise RedraftError(f"corpus {spec!r} names no dataset: expected 'hf:NAME_OR_PATH[#SPLIT]'")
    return name, split or "train"


def _iter_hf(spec: str, text_field: str) -> Iterator[str]:
    name, split = _parse_hf(spec)
    dataset = _load_hf(spec, name, split)
    if text_field not in dataset.column_names:
        raise RedraftError(
            f"dataset {spec!r} has no column {text_field!r}: its columns are {dataset.column_names}"
        )
    # Column batches avoid building one Python dict per row.
    for batch in dataset.select_columns([text_field]).iter(batch_size=1024):
        for text in batch[text_field]:
            if not isinstance(text, str):
                raise RedraftError(
                    f"dataset {spec!r} column {text_field!r} holds {type(text).__name__}, "
                    "expected strings"
                )
            yield text


def _load_hf(spec: str, name: str, split: str):
    try:
        import datasets  # an optional extra, slow to import: only when an hf corpus is used
    except ImportError:
        raise RedraftError(f"corpus {spec!r} needs the Hugging Face `datasets` package: "
                           "pip install 'redraft[hf-data]'") from None

    local = Path(name)
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise RedraftError(
                        f"dataset {spec!r} has no split {split!r}: it has {list(loaded)}"
                    )
                loaded = loaded[split]
            return loaded
        if local.is_file():
            builder = _HF_FILE_BUILDERS.get(local.suffix)
            if builder is None:
                raise RedraftError(
                    f"dataset file {name!r} has an unknown suffix: expected one of "
                    f"{sorted(_HF_FILE_BUILDERS)}"
                )
            return datasets.load_dataset(builder, data_files=str(local), split=split)
        return datasets.load_dataset(name, split=split)
    except RedraftError:
        raise
    except Exception as err:  # datasets raises many types; all mean "cannot load this spec"
        raise RedraftError(f"cannot load dataset {spec!r}: {type(err).__name__}: {err}") from err


def _file_stat(path: Path) -> list:
    stat = path.stat()
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
