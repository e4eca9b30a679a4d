"""trade_md._io: atomic writes and the kept previous file."""
import pytest

from trade_md._io import atomic_path, atomic_write_text, keep_previous


def _save(path, previous, text):
    """How checkpoints are written: the new file replaces ``path``, the old one becomes ``previous``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        keep_previous(path, previous)


def test_previous_file_holds_the_replaced_contents(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    _save(path, previous, "one")
    assert path.read_text() == "one" and not previous.exists()
    _save(path, previous, "two")
    assert path.read_text() == "two" and previous.read_text() == "one"
    _save(path, previous, "three")
    assert path.read_text() == "three" and previous.read_text() == "two"


def test_a_failed_write_keeps_both_files(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    _save(path, previous, "one")
    _save(path, previous, "two")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "two" and previous.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "text")
    assert (tmp_path / "a.txt").read_text() == "text"
