"""trade-md sample / evaluate end to end on small real files."""
import json

import numpy as np
import pytest
import torch

from trade_md.cli import main
from trade_md.data import ReferenceData
from trade_md.generator import BoltzmannGenerator, Samples


@pytest.fixture(scope="module")
def files(tmp_path_factory, ala2, ala2_frames):
    d = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    model = BoltzmannGenerator.for_system(ala2, 600.0, reference_frames=ala2_frames, flow={"hidden": [16], "bins": 4})
    model.save(d / "m.pt")
    from trade_md.energy import OpenMMEnergy

    e = OpenMMEnergy(ala2).energy(ala2_frames.astype(np.float32).astype(np.float64))
    for t, part in ((600.0, slice(0, 100)), (450.0, slice(100, 200))):
        ReferenceData(ala2_frames[part], e[part], t, np.arange(100.0), ala2.topology).save(d / f"md_{t:g}.h5")
    return d


def test_sample_then_evaluate_writes_every_file(files):
    d = files
    assert main(["sample", "--model", str(d / "m.pt"), "--temperature", "450,600", "--n", "64",
                 "--out", str(d / "s.h5")]) == 0
    s = Samples.load(d / "s.h5")
    assert len(s) == 128 and sorted(set(s.temperature)) == [450.0, 600.0]
    assert main(["evaluate", "--samples", str(d / "s.h5"), "--reference", str(d / "md_600.h5"),
                 str(d / "md_450.h5"), "--out", str(d / "report"), "--model", str(d / "m.pt"),
                 "--training-temperature", "600"]) == 0
    report = d / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == {"450 K", "600 K"}
    for key in ("js", "js_floor", "kl_md_model", "relative_ess", "nll_md", "energy_w1_model"):
        assert key in metrics["600 K"]
    assert 0 <= metrics["600 K"]["js"] <= np.log(2) + 1e-12
    # NLL of the MD frames is minus the mean model log-density (lower is better)
    model = BoltzmannGenerator.load(d / "m.pt")
    ref = ReferenceData.load(d / "md_600.h5")
    with torch.no_grad():
        expected = -float(model.log_prob(torch.as_tensor(ref.xyz, dtype=torch.float64), 600.0).mean())
    assert metrics["600 K"]["nll_md"]["value"] == pytest.approx(expected, rel=1e-5)
    pngs = ["ramachandran_600K.png", "phi_600K.png", "energies_600K.png", "ramachandran_450K.png",
            "metrics_vs_temperature.png"]
    for name in pngs:
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    text = (report / "report.md").read_text()
    assert "600 K" in text and "ramachandran_600K.png" in text


def test_unknown_temperature_is_a_clear_error(files, capsys):
    d = files
    main(["sample", "--model", str(d / "m.pt"), "--temperature", "300", "--n", "16", "--out", str(d / "s300.h5")])
    assert main(["evaluate", "--samples", str(d / "s300.h5"), "--reference", str(d / "md_600.h5"),
                 "--out", str(d / "r2")]) == 2
    assert "no reference at 300 K" in capsys.readouterr().err


def test_other_molecule_and_empty_files(files, capsys, tmp_path):
    from tests.test_simulate import harmonic_oscillators

    d = files
    osc = harmonic_oscillators()
    ReferenceData(np.zeros((10, 8, 3)), np.zeros(10), 300.0, np.arange(10.0), osc.topology).save(tmp_path / "osc.h5")
    assert main(["evaluate", "--samples", str(d / "s300.h5"), "--reference", str(tmp_path / "osc.h5"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "different molecule" in capsys.readouterr().err
    (tmp_path / "empty.h5").write_bytes(b"")
    assert main(["evaluate", "--samples", str(tmp_path / "empty.h5"), "--reference", str(d / "md_600.h5"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "empty.h5" in capsys.readouterr().err


def test_sample_refuses_to_overwrite(files, capsys):
    d = files
    (d / "keep.h5").write_bytes(b"keep")
    assert main(["sample", "--model", str(d / "m.pt"), "--temperature", "300", "--n", "8",
                 "--out", str(d / "keep.h5")]) == 2
    assert (d / "keep.h5").read_bytes() == b"keep"


def test_missing_model_file(files, capsys):
    assert main(["sample", "--model", str(files / "nope.pt"), "--temperature", "300", "--n", "8",
                 "--out", str(files / "x.h5")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_reference_frames_outside_the_models_support_are_counted_not_fatal(files, ala2):
    """A reference frame the model gives log p = -inf (outside its coordinate windows) is reported as
    outside_support; the NLL is over the others; a NaN log-density is an error."""
    from trade_md.analysis.evaluate import evaluate

    d = files
    model = BoltzmannGenerator.load(d / "m.pt")
    ref = ReferenceData.load(d / "md_600.h5")
    samples = model.sample(64, 600.0)
    with torch.no_grad():
        log_p = model.log_prob(torch.as_tensor(ref.xyz, dtype=torch.float64), 600.0)
    original = model.log_prob

    def holed(x, t):  # the first 10 frames lie outside the support
        out = original(x, t).clone()
        if x.shape[0] == len(ref):
            out[:10] = -np.inf
        return out

    model.log_prob = holed
    metrics = evaluate([samples], {600.0: ref}, d / "report_holed", model=model).metrics
    nll = metrics["600 K"]["nll_md"]
    assert nll["outside_support"] == pytest.approx(0.1)
    assert nll["value"] == pytest.approx(-float(log_p[10:].mean()), rel=1e-5)
    model.log_prob = lambda x, t: torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        evaluate([samples], {600.0: ref}, d / "report_nan", model=model)
