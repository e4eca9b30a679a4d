"""Damaged, truncated and foreign files: one clear error naming the file, or recovery where possible.

Every error case asserts that the message names the file, is one line, and
carries no HDF5 / torch back trace; every recovery case asserts a warning
naming the damaged file and the same result as an undamaged run.
"""
import re
import shutil
import traceback

import mdtraj
import numpy as np
import pytest
import torch

from trade_md.checkpoints import load_checkpoint, previous_checkpoint
from trade_md.data import ReferenceData
from trade_md.generator import Samples
from trade_md.simulate import _Checkpoint, simulate
from trade_md.system import MolecularSystem
from trade_md.testsystems import build_problem
from trade_md.train import train
from trade_md.trajectory import TrajectoryFileError, read_trajectory

from tests.test_simulate import harmonic_oscillators
from tests.test_train import Crash, CrashingTarget, make_config, read_log, run


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def scribble(path, offset=None, n=64, seed=0):
    """Overwrite ``n`` bytes at ``offset`` (default: the middle) with random bytes."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset:offset + n] = np.random.default_rng(seed).bytes(n)
    path.write_bytes(bytes(data))


def assert_names_file(err: BaseException, path):
    text = str(err)
    assert str(path) in text, text
    assert "\n" not in text, text
    formatted = "".join(traceback.format_exception(err))
    for raw in ("HDF5 error back trace", "H5F.c", "PytorchStreamReader", "HDF5ExtError:"):
        assert raw not in formatted.replace(text, ""), formatted


# ------------------------------------------------------------------ HDF5 trajectories
def _topology(n_atoms=8):
    top = mdtraj.Topology()
    res = top.add_residue("OSC", top.add_chain())
    for i in range(n_atoms):
        top.add_atom(f"C{i}", mdtraj.element.carbon, res)
    return top


def _write(kind, path):
    rng = np.random.default_rng(0)
    n = 300
    xyz = rng.normal(size=(n, 8, 3))
    if kind == "reference":
        ReferenceData(xyz, rng.normal(size=n), 300.0, np.arange(1, n + 1) * 0.5, _topology()).save(path)
        return np.arange(1, n + 1) * 0.5  # bytes of a float64 array stored uncompressed
    log_prob = rng.normal(size=n)
    Samples(xyz, log_prob, 300.0, _topology(), rng.normal(size=n), rng.normal(size=n)).save(path)
    return log_prob


def _in_coordinates(path, _):
    import tables

    with tables.open_file(str(path)) as h5:
        info = h5.root.coordinates.chunk_info((0, 0, 0))
    scribble(path, info.offset + info.size // 2)


def _in_a_float64_array(path, values):
    offset = path.read_bytes().find(np.asarray(values, dtype=np.float64).tobytes()[:64])
    assert offset > 0
    scribble(path, offset + 40, n=8)  # HDF5 itself does not notice: trade_md's checksums must


def _in_the_object_headers(path, _):
    scribble(path, 2000, n=400)


HDF5_DAMAGE = {
    "empty": lambda p, _: p.write_bytes(b""),
    "truncated": lambda p, _: truncate(p),
    "superblock only": lambda p, _: truncate(p, keep=0.02),
    "text": lambda p, _: p.write_text("hello, I am not an HDF5 file\n" * 20),
    "random bytes in the coordinates": _in_coordinates,
    "random bytes in a float64 array": _in_a_float64_array,
    "random bytes in the object headers": _in_the_object_headers,
}

LOADERS = {
    "ReferenceData.load": ("reference", ReferenceData.load),
    "Samples.load": ("samples", Samples.load),
    "read_trajectory": ("reference", read_trajectory),
}


@pytest.mark.parametrize("damage", list(HDF5_DAMAGE))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_damaged_hdf5_gives_one_line_naming_the_file(tmp_path, capfd, loader, damage):
    kind, load = LOADERS[loader]
    path = tmp_path / "traj.h5"
    values = _write(kind, path)
    load(path)  # undamaged: fine
    HDF5_DAMAGE[damage](path, values)
    with pytest.raises(TrajectoryFileError) as info:
        load(path)
    assert isinstance(info.value, ValueError)
    assert f"{path} is damaged or not an HDF5 trajectory: " in str(info.value)
    assert_names_file(info.value, path)
    err = capfd.readouterr().err
    assert "HDF5-DIAG" not in err and "H5F.c" not in err and "Traceback" not in err, err


# ------------------------------------------------------------------ PDB files
PDBS = {
    "empty": "",
    "random text": "lorem ipsum dolor sit amet\n\x01\x02 12.5 nonsense\n" * 5,
    "no ATOM records": "REMARK   1 nothing here\n"
                       "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1\nEND\n",
    "cut-off ATOM record": "ATOM      1  N   ALA A   1      11.104   6.134  -6.504  1.00  0.00           N\n"
                           "ATOM      2  CA  ALA A   1      11.639   6.071\n",
}


@pytest.mark.parametrize("case", list(PDBS))
def test_garbage_pdb_is_a_value_error_naming_the_file(tmp_path, case):
    path = tmp_path / "molecule.pdb"
    path.write_text(PDBS[case])
    with pytest.raises(ValueError) as info:
        MolecularSystem.from_pdb(path)
    assert not isinstance(info.value, IndexError)
    assert str(path) in str(info.value)


def test_binary_pdb_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "molecule.pdb"
    path.write_bytes(b"\x00\x01\x02 binary \xff\xfe" * 10)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        MolecularSystem.from_pdb(path)


# ------------------------------------------------------------------ training checkpoints
@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A finished 20-step run with checkpoints at steps 10 (last.prev.pt) and 20 (last.pt)."""
    config = make_config("trade_grid", steps=20, curriculum=5)
    config.run.checkpoint_every = 10
    out = tmp_path_factory.mktemp("train") / "run"
    run(config, out)
    return config, out


CHECKPOINT_DAMAGE = {
    "truncated": lambda p: truncate(p),
    "cut to a few bytes": lambda p: truncate(p, keep=0.001),
    "empty": lambda p: p.write_bytes(b""),
    "random bytes inside": lambda p: scribble(p),
    "missing": lambda p: p.unlink(),
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_damaged_last_checkpoint_falls_back_to_the_previous_one(short_run, tmp_path, damage):
    _, original = short_run
    out = shutil.copytree(original, tmp_path / "run")
    last = out / "last.pt"
    assert previous_checkpoint(last) == out / "last.prev.pt"
    assert load_checkpoint(last)["step"] == 20
    CHECKPOINT_DAMAGE[damage](last)
    with pytest.warns(UserWarning, match=re.escape(str(last))):
        state = load_checkpoint(last)
    assert state["step"] == 10
    # the good checkpoint now stands at last.pt, so the next save keeps a good previous one
    assert load_checkpoint(last)["step"] == 10


@pytest.mark.parametrize("damage", ["truncated", "random bytes inside"])
def test_no_good_checkpoint_is_an_error_naming_the_files(short_run, tmp_path, damage):
    config, original = short_run
    out = shutil.copytree(original, tmp_path / "run")
    for path in (out / "last.pt", out / "last.prev.pt"):
        CHECKPOINT_DAMAGE[damage](path)
    problem = build_problem(config.problem, config.flow)
    with pytest.raises(ValueError) as info:
        train(problem.model, problem.target, problem.data, config, out, resume=True)
    assert_names_file(info.value, out / "last.pt")
    assert str(out / "last.prev.pt") in str(info.value)


def test_resume_after_the_fallback_equals_an_uninterrupted_run(tmp_path):
    config = make_config("trade_grid", steps=40, curriculum=10, refresh_every=1)
    config.run.checkpoint_every = 10
    _, full = run(config, tmp_path / "full")
    problem = build_problem(config.problem, config.flow)
    # the target is evaluated once per step after the 10 warm-up steps: die in step 35,
    # after the checkpoints of steps 30 (last.pt) and 20 (last.prev.pt)
    with pytest.raises(Crash):
        train(problem.model, CrashingTarget(problem.target, 24), problem.data, config, tmp_path / "killed")
    last = tmp_path / "killed" / "last.pt"
    truncate(last)
    with pytest.warns(UserWarning, match=re.escape(str(last)) + ".*step 20"):
        _, resumed = run(config, tmp_path / "killed", resume=True)
    assert resumed.step == full.step == 40
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    b = torch.load(last, weights_only=False)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    log_a, log_b = read_log(tmp_path / "full" / "log.csv"), read_log(tmp_path / "killed" / "log.csv")
    assert [int(r["step"]) for r in log_b] == list(range(1, 41))
    assert log_a == log_b


def test_fresh_run_refuses_a_folder_with_only_a_previous_checkpoint(short_run, tmp_path):
    config, original = short_run
    out = shutil.copytree(original, tmp_path / "run")
    (out / "last.pt").unlink()
    problem = build_problem(config.problem, config.flow)
    with pytest.raises(FileExistsError, match="resume=True"):
        train(problem.model, problem.target, problem.data, config, out)


# ------------------------------------------------------------------ resumable MD
MD = dict(temperature=300.0, nanoseconds=0.005, report_interval_ps=0.1, timestep_fs=2.0, seed=3,
          equilibration_ps=1.0, checkpoint_frames=10, platform="Reference", progress=False)  # 5 chunks


@pytest.fixture(scope="module")
def oscillators():
    return harmonic_oscillators()


@pytest.fixture(scope="module")
def uninterrupted(oscillators, tmp_path_factory):
    return simulate(oscillators, out=tmp_path_factory.mktemp("md") / "full.h5", **MD).xyz


def interrupted(system, out, monkeypatch, chunks_done=3):
    """Run until ``chunks_done`` chunks are checkpointed, then die writing the next one."""
    write = _Checkpoint.write_chunk

    def dying(self, k, *args):
        if k == chunks_done:
            raise Crash("killed")
        return write(self, k, *args)

    with monkeypatch.context() as m:
        m.setattr(_Checkpoint, "write_chunk", dying)
        with pytest.raises(Crash):
            simulate(system, out=out, **MD)
    partial = out.with_name(out.name + ".partial")
    assert (partial / "checkpoint.json").exists()
    return partial


RECOVERABLE = {  # file of the partial folder (3 chunks done) -> damage; the last chunk is recomputed
    "truncated checkpoint.json": ("checkpoint.json", truncate),
    "empty checkpoint.json": ("checkpoint.json", lambda p: p.write_bytes(b"")),
    "random bytes in checkpoint.json": ("checkpoint.json", lambda p: scribble(p, n=16)),
    "missing checkpoint.json": ("checkpoint.json", lambda p: p.unlink()),
    "truncated last chunk": ("chunk_000002.npz", truncate),
    "random bytes in the last chunk": ("chunk_000002.npz", scribble),
    "missing last chunk": ("chunk_000002.npz", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", list(RECOVERABLE))
def test_md_recomputes_a_damaged_last_chunk_or_checkpoint(oscillators, uninterrupted, tmp_path, monkeypatch, case):
    name, damage = RECOVERABLE[case]
    out = tmp_path / "md.h5"
    partial = interrupted(oscillators, out, monkeypatch)
    damage(partial / name)
    with pytest.warns(UserWarning, match=re.escape(str(partial / name))):
        data = simulate(oscillators, out=out, **MD)
    np.testing.assert_array_equal(data.xyz, uninterrupted)
    np.testing.assert_array_equal(ReferenceData.load(out).xyz, uninterrupted)
    assert not partial.exists()


def test_md_restarts_when_only_the_equilibration_checkpoint_is_damaged(oscillators, uninterrupted, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "md.h5"
    partial = interrupted(oscillators, out, monkeypatch, chunks_done=0)
    assert not (partial / "checkpoint.prev.json").exists()
    truncate(partial / "checkpoint.json")
    with pytest.warns(UserWarning, match=re.escape(str(partial / "checkpoint.json"))):
        data = simulate(oscillators, out=out, **MD)
    np.testing.assert_array_equal(data.xyz, uninterrupted)


UNRECOVERABLE = {  # damage -> the file the error must name
    "truncated first chunk": (lambda d: truncate(d / "chunk_000000.npz"), "chunk_000000.npz"),
    "random bytes in a middle chunk": (lambda d: scribble(d / "chunk_000001.npz"), "chunk_000001.npz"),
    "both checkpoints truncated": (lambda d: [truncate(d / n) for n in ("checkpoint.json", "checkpoint.prev.json")],
                                   "checkpoint.json"),
    "truncated settings.json": (lambda d: truncate(d / "settings.json"), "settings.json"),
}


@pytest.mark.parametrize("case", list(UNRECOVERABLE))
def test_md_damage_that_cannot_be_recomputed_names_the_file(oscillators, uninterrupted, tmp_path, monkeypatch,
                                                           case):
    damage, name = UNRECOVERABLE[case]
    out = tmp_path / "md.h5"
    partial = interrupted(oscillators, out, monkeypatch)
    damage(partial)
    with pytest.raises(ValueError) as info:
        simulate(oscillators, out=out, **MD)
    assert_names_file(info.value, partial / name)
    assert "overwrite" in str(info.value)
    data = simulate(oscillators, out=out, overwrite=True, **MD)
    np.testing.assert_array_equal(data.xyz, uninterrupted)
