"""Models that know themselves: the record in model files, `trade-md info`, the out-of-range warning."""
import warnings

import numpy as np
import pytest
import torch

from trade_md import datasets
from trade_md.cli import main
from trade_md.generator import BoltzmannGenerator, ModelFileError
from trade_md.provenance import ModelRecord, OutOfRangeWarning, current_versions


@pytest.fixture(scope="module")
def bg(ala2, ala2_frames):
    torch.manual_seed(0)
    model = BoltzmannGenerator.for_system(ala2, 600.0, reference_frames=ala2_frames, flow={"hidden": [16], "bins": 4})
    model.record = ModelRecord((450.0, 700.0), "trade_grid", "md_600K.h5", "ab" * 32)
    return model


def test_record_round_trips_with_the_versions_of_the_saving_run(bg, tmp_path):
    bg.save(tmp_path / "m.pt")
    again = BoltzmannGenerator.load(tmp_path / "m.pt")
    assert again.record.temperature_range == (450.0, 700.0) and again.record.method == "trade_grid"
    assert again.record.training_data == "md_600K.h5" and again.record.training_data_sha256 == "ab" * 32
    assert again.record.versions == current_versions() and again.record.versions["torch"] == torch.__version__
    # a loaded model keeps the versions that made it when saved again
    again.record.versions = {"trade_md": "0.0.1", "torch": None}
    again.save(tmp_path / "m2.pt")
    assert BoltzmannGenerator.load(tmp_path / "m2.pt").record.versions == {"trade_md": "0.0.1", "torch": None}
    assert "trained 450-700 K" in repr(again) and "\n" not in repr(again)


def test_old_model_files_without_a_record_still_load(bg, tmp_path):
    bg.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    del state["record"]
    torch.save(state, tmp_path / "old.pt")
    old = BoltzmannGenerator.load(tmp_path / "old.pt")
    assert old.record.temperature_range is None and old.record.versions == {"trade_md": state["trade_md_version"]}
    assert "saved before model files recorded" in old.record.note
    x = torch.as_tensor(bg.system.reference_xyz)[None]
    assert torch.allclose(old.log_prob(x, 600.0), bg.log_prob(x, 600.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no range recorded: no warning anywhere
        old.sample(4, 900.0, energies=False)
    state["record"] = {"temperature_range": [700.0, 450.0]}
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="bad.pt has a damaged model record: .*temperature_range must be"):
        BoltzmannGenerator.load(tmp_path / "bad.pt")


def test_sampling_outside_the_trained_range_warns_with_range_and_ess(bg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.sample(8, np.array([450.0] * 4 + [700.0] * 4))  # the range's ends: no warning
    with pytest.warns(OutOfRangeWarning) as caught:
        s = bg.sample(16, np.array([300.0] * 8 + [600.0] * 8))
    (w,) = caught.list
    text = str(w.message)
    expected = s.select(s.temperature == 300.0).relative_ess()
    assert text.startswith("300 K is outside the temperature range 450-700 K this model was trained for")
    assert f"relative ESS of these 8 samples: {expected:.2%}" in text
    with pytest.warns(OutOfRangeWarning, match="800 K .* relative ESS unknown"):
        bg.sample(4, 800.0, energies=False)


def test_info_prints_the_record(bg, tmp_path, capsys):
    bg.save(tmp_path / "m.pt")
    assert main(["info", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr().out
    for line in ("system: alanine-dipeptide (22 atoms", "reference temperature T0: 600 K",
                 "trained temperature range: 450-700 K", "training method: trade_grid",
                 f"training data: md_600K.h5 (sha256 {'ab' * 32})", f"torch {torch.__version__}"):
        assert line in out, line
    assert main(["info", str(tmp_path / "none.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_shipped_model_records_what_is_known(capsys):
    assert main(["info", "ala2"]) == 0
    out = capsys.readouterr().out
    assert str(datasets.path("ala2")) in out
    assert "trained temperature range: 250-1000 K" in out and "training method: trade_grid" in out
    assert "training data: data/ala2_600K.h5 (sha256 48a1e67c" in out
    assert "made with: trade_md 0.1.0, torch 2.13.0+cpu, openmm 8.6.1" in out  # recorded by the training run
