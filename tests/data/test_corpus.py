import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from redraft.data import corpus_id, iter_document_paths, iter_documents
from redraft.errors import RedraftError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "corpus"
    _write(root / "b.txt", "second\r\nline")  # newlines kept as in the file
    _write(root / "a.md", "# first")
    _write(root / "sub" / "c.py", "x = 'ü'\n")
    _write(root / "sub" / "d.jsonl", '{"text": "row one"}\n\n{"text": "row two", "n": 1}\n')
    _write(root / "empty.txt", "")
    _write(root / "image.bin", "not text")
    _write(root / ".hidden" / "e.txt", "hidden")
    return root


def test_file(folder):
    assert list(iter_documents(str(folder / "b.txt"))) == ["second\r\nline"]


def test_folder_is_sorted_recursive_and_filtered(folder):
    docs = list(iter_documents(str(folder)))
    assert docs == ["# first", "second\r\nline", "x = 'ü'\n", "row one", "row two"]


def test_glob(folder):
    pattern = str(folder / "**" / "*.[tp]*")
    names = [p.name for p in iter_document_paths(pattern)]
    assert names == ["b.txt", "empty.txt", "c.py"]
    assert list(iter_documents(str(folder / "*.txt"))) == ["second\r\nline"]


def test_jsonl_field(tmp_path):
    path = _write(tmp_path / "x.jsonl", '{"body": "a"}\n{"body": "b"}\n')
    assert list(iter_documents(str(path), text_field="body")) == ["a", "b"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "line 2 is not valid JSON"),
        ('{"other": "x"}', "line 2 has no field 'text'"),
        ('["text"]', "line 2 has no field 'text'"),
        ('{"text": 3}', "line 2: field 'text' is int, expected a string"),
    ],
)
def test_jsonl_bad_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", '{"text": "ok"}\n' + line + "\n")
    with pytest.raises(RedraftError, match="bad.jsonl") as err:
        list(iter_documents(str(path)))
    assert message in str(err.value)


def test_missing_and_empty(tmp_path):
    with pytest.raises(RedraftError, match="not found"):
        list(iter_documents(str(tmp_path / "nope.txt")))
    with pytest.raises(RedraftError, match="is empty"):
        list(iter_documents(str(tmp_path)))  # a folder with no text files
    with pytest.raises(RedraftError, match="glob matches no files"):
        list(iter_documents(str(tmp_path / "*.txt")))
    _write(tmp_path / "blank.txt", "")
    with pytest.raises(RedraftError, match="is empty"):
        list(iter_documents(str(tmp_path / "blank.txt")))


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9")
    with pytest.raises(RedraftError, match="not UTF-8"):
        list(iter_documents(str(path)))


def test_stdlib():
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = iter_document_paths("stdlib")
    assert len(paths) > 300 and paths == sorted(paths)
    assert root / "os.py" in paths
    for path in paths:
        folders = path.relative_to(root).parts[:-1]
        assert not {"test", "tests", "idle_test", "site-packages"}.intersection(folders), path
    docs = iter_documents("stdlib")
    assert "import" in next(docs)


def test_corpus_id(folder):
    spec = str(folder)
    first = corpus_id(spec)
    assert corpus_id(spec) == first
    assert corpus_id(spec, text_field="body") != first
    target = folder / "a.md"
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 10**9))
    assert corpus_id(spec) != first
    assert corpus_id("stdlib") == corpus_id("stdlib")


@pytest.fixture()
def datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    # The env vars are read at import time; patch too in case datasets was imported earlier.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


def test_hf_local_file(datasets, tmp_path):
    rows = [{"text": "alpha", "id": 1}, {"text": "beta", "id": 2}]
    path = _write(tmp_path / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert list(iter_documents(f"hf:{path}")) == ["alpha", "beta"]
    with pytest.raises(RedraftError, match="no column 'body'"):
        list(iter_documents(f"hf:{path}", text_field="body"))
    assert corpus_id(f"hf:{path}").startswith("hf:")


def test_hf_save_to_disk(datasets, tmp_path):
    train = datasets.Dataset.from_dict({"content": ["one", "two", "three"]})
    valid = datasets.Dataset.from_dict({"content": ["four"]})
    datasets.DatasetDict({"train": train, "validation": valid}).save_to_disk(tmp_path / "dd")
    train.save_to_disk(tmp_path / "ds")
    assert list(iter_documents(f"hf:{tmp_path / 'ds'}", text_field="content")) == [
        "one",
        "two",
        "three",
    ]
    spec = f"hf:{tmp_path / 'dd'}#validation"
    assert list(iter_documents(spec, text_field="content")) == ["four"]
    with pytest.raises(RedraftError, match="no split 'test'"):
        list(iter_documents(f"hf:{tmp_path / 'dd'}#test", text_field="content"))


def test_hf_corpus_without_datasets_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    path = _write(tmp_path / "rows.jsonl", json.dumps({"text": "alpha"}) + "\n")
    with pytest.raises(RedraftError, match=r"needs the Hugging Face `datasets` package: "
                                           r"pip install 'redraft\[hf-data\]'"):
        list(iter_documents(f"hf:{path}"))


def test_base_paths_do_not_import_optional_packages():
    """The base install has no `datasets` (nor its pyarrow / pandas): nothing but an hf:
    corpus may import it, so training, sampling and evaluation on a file or stdlib work."""
    code = ("import sys, redraft.cli, redraft.train, redraft.demo, redraft.likelihood, "
            "redraft.data; from redraft.data.corpus import iter_documents; "
            "next(iter_documents('stdlib')); "
            "print(sorted(m for m in ('datasets', 'pyarrow', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_missing_known_corpus_says_how_to_fetch_it(tmp_path):
    spec = str(tmp_path / "data" / "tinyshakespeare" / "input.txt")
    with pytest.raises(RedraftError, match=r"not found: .*; fetch it with: mkdir -p \S+ && "
                                           r"curl -fL -o \S+input.txt https://raw\."
                                           r"githubusercontent\.com/karpathy/char-rnn/"):
        iter_document_paths(spec)
    with pytest.raises(RedraftError, match=r"not found: expected[^;]*$"):
        iter_document_paths(str(tmp_path / "other.txt"))  # no hint for unknown files
