"""The shipped model gives the same samples for the same seed, whatever the code around it.

``tests/data/shipped_samples.npz`` holds samples of the shipped model
(``datasets.path("ala2")``, ``trade_md/data/models/ala2_trade.pt``) drawn by :func:`draw_reference_samples`; this test draws them again and
compares.  A redesign of the model classes that keeps the model must keep
these numbers.  Regenerate the file only when a change of the samples is
intended (a new shipped model, a deliberate change of the sampler):

    .venv/bin/python -c "from tests.test_shipped_samples import write_reference; write_reference()"
"""
from pathlib import Path

import numpy as np
import torch

from trade_md import datasets
from trade_md.generator import BoltzmannGenerator

MODEL = datasets.path("ala2")
REFERENCE = Path(__file__).resolve().parent / "data" / "shipped_samples.npz"

#: (seed, temperature in K) of each reference batch.
BATCHES = ((0, 300.0), (1, 700.0))
#: Samples per batch.
N = 64
#: Tolerances: positions in nm, log-densities in nats.
XYZ_TOL = 1e-6
LOG_PROB_TOL = 1e-6


def draw_reference_samples() -> dict[str, np.ndarray]:
    """Draw the reference batches from the shipped model, in float64 on one CPU thread.

    For every ``(seed, T)`` in :data:`BATCHES`: ``torch.manual_seed(seed)``,
    then ``N`` samples at ``T`` without energies.

    Returns
    -------
    dict of str to numpy array
        ``xyz_<T>`` ``(N, 22, 3)`` float32 nm, ``log_prob_<T>`` ``(N,)``
        float64 (the sampler's model log-density, nats) and
        ``density_<T>`` ``(N,)`` float64 (``log_prob`` of the stored float32
        positions, evaluated again), with ``<T>`` the temperature in K as an
        integer.
    """
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        model = BoltzmannGenerator.load(MODEL)
        out = {}
        for seed, temperature in BATCHES:
            torch.manual_seed(seed)
            samples = model.sample(N, temperature, energies=False)
            with torch.no_grad():
                density = model.log_prob(samples.xyz.astype(np.float64), temperature)
            key = f"{temperature:.0f}"
            out[f"xyz_{key}"] = samples.xyz
            out[f"log_prob_{key}"] = samples.log_prob
            out[f"density_{key}"] = density.numpy()
        return out
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


def write_reference(path: Path = REFERENCE) -> None:
    """Overwrite ``path`` with :func:`draw_reference_samples` (only for an intended change)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **draw_reference_samples())


def test_shipped_model_gives_the_reference_samples():
    reference = np.load(REFERENCE)
    now = draw_reference_samples()
    assert sorted(now) == sorted(reference.files)
    for key, value in now.items():
        tol = XYZ_TOL if key.startswith("xyz") else LOG_PROB_TOL
        assert value.shape == reference[key].shape, key
        np.testing.assert_allclose(value, reference[key], rtol=0, atol=tol, err_msg=key)
