"""``BoltzmannGenerator``: a temperature-conditioned density of a molecule plus its Boltzmann target.

Two levels, each with one contract:

:class:`CartesianFlow`
    The model, a :class:`~trade_md.density.ConditionalDensity` with condition
    ``"temperature"``: ``log_prob(x, T) -> (B,)`` and
    ``sample(n, T) -> (x, log_prob)``, tensors in and out, ``x``
    ``(B, n_atoms, 3)`` in nm, ``T`` scalar or ``(B,)`` in K. Its density is

        log p(x | T) = log p_flow(ic(x) | log(T / T0)) + log|det d ic / d x|,

    defined up to the constant of the six rigid-body degrees of freedom, which
    cancels in every importance weight. This is what training takes
    (``trade_md.train.train(bg.density, ...)``).
:class:`BoltzmannGenerator`
    The user's object, built from a density and a target (like bgflow's
    ``BoltzmannGenerator(prior, flow, target)``) plus the molecular system:
    ``sample(n, T)`` returns numpy :class:`Samples` with energies (kJ/mol)
    and log importance weights ``-U / (k_B T) - log p``; ``log_prob(x, T)``
    takes numpy or torch positions and returns a tensor; ``save``/``load``
    write and read one model file.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import mdtraj
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import units
from ._io import atomic_path
from ._version import __version__
from .config import from_dict, to_dict
from .coordinates import InternalCoordinates, ZMatrix
from .density import ConditionLike
from .distributed import World, rank_seed
from .energy import OpenMMEnergy
from .flows import ConditionalFlow, ConditionedFlow, FlowConfig
from .provenance import ModelRecord, OutOfRangeWarning, current_versions
from .system import ConstrainedBonds, MolecularSystem
from .targets import BoltzmannTarget
from .trajectory import (TrajectoryFile, check_same_molecule, file_sha256, read_frames, read_kind, read_sidecar,
                         sidecar_path, write_frames, write_sidecar, write_trajectory)
from .units import check_temperature
from .zmatrix import DEFAULT_TORSION_STYLE
from .weights import kish_ess, pareto_k, relative_ess, self_normalized_weights

__all__ = ["BoltzmannGenerator", "CartesianFlow", "Samples", "ModelFileError", "sample_sharded"]

_FORMAT = "trade_md.BoltzmannGenerator"
_FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing pieces, corrupt, or does not match."""


_HDF5 = (".h5", ".hdf5")
#: side-car columns of samples in other formats: attribute of Samples -> column name (with unit)
_SIDECAR_COLUMNS = {"temperature": "temperature_K", "log_weights": "log_weight", "energies": "energy_kJ_per_mol",
                    "log_prob": "log_prob"}


# --------------------------------------------------------------------------- samples
@dataclass
class Samples:
    """Configurations drawn from a Boltzmann generator.

    Attributes
    ----------
    xyz : (n, n_atoms, 3) float32, nm
    log_prob : (n,) float64, model log-density log p(x | T) (Cartesian, with the IC log-det)
    temperature : (n,) float64, K
    topology : mdtraj.Topology
    energies : (n,) float64 kJ/mol or None; +inf for clashing configurations
    log_weights : (n,) float64 or None, ``-U / (k_B T) - log p`` (unnormalized)
    """

    xyz: np.ndarray
    log_prob: np.ndarray
    temperature: np.ndarray
    topology: mdtraj.Topology
    energies: Optional[np.ndarray] = None
    log_weights: Optional[np.ndarray] = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float32)
        n = len(self.xyz)
        self.log_prob = np.asarray(self.log_prob, dtype=np.float64)
        self.temperature = np.broadcast_to(np.asarray(self.temperature, dtype=np.float64), (n,)).copy()
        check_temperature(self.temperature)
        for name in ("energies", "log_weights"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.float64))
        for name in ("log_prob", "energies", "log_weights"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {value.shape}")
        if self.xyz.ndim != 3 or self.xyz.shape[1:] != (self.topology.n_atoms, 3):
            raise ValueError(f"xyz must have shape (n, {self.topology.n_atoms}, 3), got {self.xyz.shape}")

    def __len__(self) -> int:
        return len(self.xyz)

    def __repr__(self) -> str:
        usable = self.log_weights is not None and bool(np.isfinite(self.log_weights).any())
        ess = f", relative ESS={self.relative_ess():.3g}" if usable else ""
        temps = np.unique(self.temperature)
        t = f"{temps[0]:g} K" if len(temps) == 1 else f"{len(temps)} temperatures"
        return f"Samples(n={len(self)}, T={t}{ess})"

    def _need_weights(self) -> np.ndarray:
        if self.log_weights is None:
            raise ValueError("these samples have no importance weights (sample with an energy)")
        return self.log_weights

    def ess(self) -> float:
        """Kish effective sample size of the importance weights."""
        return kish_ess(self._need_weights())

    def relative_ess(self) -> float:
        """Kish ESS divided by the number of samples (0..1)."""
        return relative_ess(self._need_weights())

    def pareto_k(self) -> float:
        """Pareto k-hat of the importance weights: reweighted estimates are reliable when it is at most
        :func:`~trade_md.weights.pareto_k_limit` (0.7 for more than about 2,150 samples); see
        :func:`~trade_md.weights.pareto_k`. Raises ValueError for fewer than about 25 non-zero weights."""
        return pareto_k(self._need_weights())

    def weights(self) -> np.ndarray:
        """Self-normalized importance weights ``(n,)`` (zero for clashing samples, log weight -inf)."""
        return self_normalized_weights(self._need_weights())

    def select(self, index) -> "Samples":
        """Samples at ``index`` (integer array, slice or mask)."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return dataclasses.replace(self, xyz=self.xyz[index], log_prob=self.log_prob[index],
                                   temperature=self.temperature[index], energies=pick(self.energies),
                                   log_weights=pick(self.log_weights))

    @classmethod
    def concatenate(cls, parts: Sequence["Samples"]) -> "Samples":
        """The samples of ``parts`` in order (one molecule; energies and weights in all parts or in none);
        the metadata of the first part."""
        parts = list(parts)
        if not parts:
            raise ValueError("concatenate needs at least one Samples")
        first = parts[0]
        for part in parts[1:]:
            check_same_molecule(first.topology, part.topology, what="samples to join")
        joined = {}
        for name in ("energies", "log_weights"):
            present = [getattr(p, name) is not None for p in parts]
            if any(present) and not all(present):
                raise ValueError(f"some samples to join have {name} and some do not")
            joined[name] = np.concatenate([getattr(p, name) for p in parts]) if all(present) else None
        return cls(np.concatenate([p.xyz for p in parts]), np.concatenate([p.log_prob for p in parts]),
                   np.concatenate([p.temperature for p in parts]), first.topology, metadata=dict(first.metadata),
                   **joined)

    def resample(self, n: Optional[int] = None, seed: int = 0) -> "Samples":
        """Multinomial resampling by importance weight: approximately unbiased Boltzmann samples."""
        n = len(self) if n is None else int(n)
        idx = np.random.default_rng(seed).choice(len(self), size=n, replace=True, p=self.weights())
        out = self.select(idx)
        out.log_weights = np.zeros(n)
        return out

    def to_mdtraj(self) -> mdtraj.Trajectory:
        """The configurations as an ``mdtraj.Trajectory``."""
        return mdtraj.Trajectory(self.xyz, self.topology)

    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> None:
        """Write the samples atomically, in the format of ``path``'s suffix.

        ``.h5`` / ``.hdf5``: one mdtraj-readable HDF5 file with everything
        (positions nm, energies kJ/mol, log p, log weights, temperatures K).
        ``.dcd``, ``.xtc``, ``.trr``, ``.nc``, ``.pdb``: the positions, plus the
        side-car :func:`~trade_md.trajectory.sidecar_path` (``<stem>.weights.csv``) holding per frame
        the temperature (K), log weight, energy (kJ/mol) and model log-density,
        and the SHA-256 of the frames file it belongs to.  Refuses to replace
        an existing file (FileExistsError) unless ``overwrite=True``.
        """
        path = Path(path)
        meta = dict(self.metadata, kind="samples")
        if path.suffix.lower() in _HDF5:
            arrays = {"log_prob": self.log_prob, "temperature": self.temperature}
            if self.log_weights is not None:
                arrays["log_weights"] = self.log_weights
            write_trajectory(path, TrajectoryFile(self.xyz, self.topology, np.arange(len(self), dtype=np.float64),
                                                  self.energies, arrays, meta), overwrite=overwrite)
            return
        sidecar = sidecar_path(path)
        for p in (path, sidecar):
            if p.exists() and not overwrite:
                raise FileExistsError(f"{p} exists; refusing to overwrite it (pass overwrite=True / --overwrite)")
        write_frames(path, self.xyz, self.topology)
        columns = {column: getattr(self, name) for name, column in _SIDECAR_COLUMNS.items()
                   if getattr(self, name) is not None}
        write_sidecar(sidecar, columns, {"frames_file": path.name, "frames_sha256": file_sha256(path),
                                         "n_frames": len(self), "metadata": meta})

    @classmethod
    def load(cls, path: Union[str, os.PathLike], system: Optional[MolecularSystem] = None,
             top: Optional[Union[str, os.PathLike, mdtraj.Topology]] = None) -> "Samples":
        """Read a file written by :meth:`save` (checks the molecule against ``system`` if given).

        Formats other than HDF5 need their side-car ``<stem>.weights.csv``;
        DCD, XTC, TRR and NetCDF also a topology: ``top`` (PDB file or
        ``mdtraj.Topology``), else the topology of ``system``.

        Raises
        ------
        FileNotFoundError
            If ``path`` or its side-car does not exist.
        ValueError
            Naming ``path``: a damaged or foreign file
            (:class:`~trade_md.trajectory.TrajectoryFileError`), an MD
            reference instead of samples, another molecule, missing arrays,
            a side-car written for other frames.
        """
        path = Path(path)
        if path.suffix.lower() in _HDF5:
            f = read_kind(path, "samples", None if system is None else system.topology)
            for key in ("log_prob", "temperature"):
                if key not in f.arrays:
                    raise ValueError(f"{path} lacks the per-sample {key!r} array")
            meta = {k: v for k, v in f.metadata.items() if k != "kind"}
            return cls(f.xyz, f.arrays["log_prob"], f.arrays["temperature"], f.topology, f.potential_energy,
                       f.arrays.get("log_weights"), meta)
        sidecar = sidecar_path(path)
        if path.is_file() and not sidecar.is_file():
            raise FileNotFoundError(f"{path} has no side-car {sidecar} with its weights (written beside it by "
                                    "'trade-md sample')")
        traj = read_frames(path, top if top is not None else (None if system is None else system.topology))
        columns, info = read_sidecar(sidecar)
        if info.get("frames_sha256") != file_sha256(path):
            raise ValueError(f"{sidecar} does not belong to {path}: it was written for other frames (SHA-256 differs)")
        missing = [c for c in ("temperature_K", "log_prob") if c not in columns]
        if missing:
            raise ValueError(f"{sidecar} lacks the column(s) {', '.join(missing)}")
        if len(traj) != len(columns["log_prob"]):
            raise ValueError(f"{sidecar} has {len(columns['log_prob'])} rows for the {len(traj)} frames of {path}")
        if system is not None:
            check_same_molecule(system.topology, traj.topology, what=str(path))
        meta = {k: v for k, v in dict(info.get("metadata", {})).items() if k != "kind"}
        return cls(traj.xyz, columns["log_prob"], columns["temperature_K"], traj.topology,
                   columns.get("energy_kJ_per_mol"), columns.get("log_weight"), meta)


# --------------------------------------------------------------------------- model
class CartesianFlow(nn.Module):
    """Density over Cartesian positions at temperature ``T``: IC transform + conditioned flow.

    A :class:`~trade_md.density.ConditionalDensity` with condition
    ``"temperature"``: ``log_prob(x, T) -> (B,)`` and
    ``sample(n, T) -> (x, log_prob)``, with ``x`` ``(B, n_atoms, 3)`` nm and
    ``T`` scalar or ``(B,)`` K; tensors in and out.

    Parameters
    ----------
    ic : InternalCoordinates
    flow : ConditionalFlow
        Over ``ic.kinds``, context ``log(T / T0)``.
    reference_temperature : float
        ``T0`` in K.
    ic_options : dict, optional
        The half-widths ``ic`` was built with (``bond_halfwidth``,
        ``angle_halfwidth``: floats or lists), recorded in model files.
    """

    condition = "temperature"

    def __init__(self, ic: InternalCoordinates, flow: ConditionalFlow, reference_temperature: float,
                 ic_options: Optional[dict] = None) -> None:
        super().__init__()
        if list(ic.kinds) != list(flow.kinds):
            raise ValueError("the flow's kinds must equal the internal coordinates' kinds")
        check_temperature(reference_temperature, "reference_temperature")
        self.ic = ic
        self.conditioned = ConditionedFlow(flow, float(reference_temperature), condition="temperature")
        self.ic_options = dict(ic_options or {})

    @property
    def flow(self) -> ConditionalFlow:
        """The flow over internal coordinates."""
        return self.conditioned.flow

    @property
    def reference_temperature(self) -> float:
        """``T0`` in K."""
        return self.conditioned.reference

    def log_prob(self, x: torch.Tensor, temperature: ConditionLike) -> torch.Tensor:
        """``log p(x | T)``, ``(B,)``, for ``x`` ``(B, n_atoms, 3)`` nm and ``T`` scalar or ``(B,)`` K."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
        if x.ndim != 3 or x.shape[1:] != (self.ic.n_atoms, 3):
            raise ValueError(f"x must have shape (batch, {self.ic.n_atoms}, 3) in nm, got {tuple(x.shape)}")
        ic, ladj = self.ic(x)
        return self.conditioned.log_prob(ic, temperature) + ladj

    def sample(self, n: int, temperature: ConditionLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` configurations (differentiable): ``x`` ``(n, n_atoms, 3)`` nm and ``log p`` ``(n,)``."""
        ic, log_p = self.conditioned.sample(n, temperature)
        x, ladj_inverse = self.ic.inverse(ic)  # log|det dx/d ic| = -log|det d ic/dx|
        return x, log_p - ladj_inverse


class BoltzmannGenerator(nn.Module):
    """A temperature-conditioned Boltzmann generator for one molecule: a density and a target.

    Parameters
    ----------
    density : CartesianFlow
        The model (tensors in and out); what training takes.
    target : BoltzmannTarget, optional
        Potential energies (kJ/mol) of positions ``(B, n_atoms, 3)`` nm, for
        the energies and importance weights of :meth:`sample`. Defaults to
        the OpenMM energies of ``system`` (created on first use).
    system : MolecularSystem, optional
        Needed for the default target, for the topology of samples and for
        saving.
    record : ModelRecord, optional
        How the model was made (trained temperature range, data, versions),
        saved with it; :meth:`sample` warns outside the trained range.
    """

    def __init__(self, density: CartesianFlow, target: Optional[BoltzmannTarget] = None,
                 system: Optional[MolecularSystem] = None, record: Optional[ModelRecord] = None) -> None:
        super().__init__()
        self.density = density
        self.system = system
        self._target = target
        self.record = record if record is not None else ModelRecord()

    def __repr__(self) -> str:
        """One line: molecule, atoms, modelled dimensions, T0, trained range (nn.Module would print every layer)."""
        name = "?" if self.system is None else self.system.name
        rng = self.record.temperature_range
        trained = "" if rng is None else f", trained {rng[0]:g}-{rng[1]:g} K"
        return (f"BoltzmannGenerator(system={name!r}, n_atoms={self.density.ic.n_atoms}, "
                f"dims={self.density.ic.dim}, T0={self.density.reference_temperature:g} K{trained})")

    def describe(self) -> str:
        """Several lines: the molecule, its size, T0 and the :class:`ModelRecord` (``trade-md info``)."""
        name = "unknown" if self.system is None else self.system.name
        head = [f"system: {name} ({self.ic.n_atoms} atoms, {self.ic.dim} modelled coordinates)",
                f"reference temperature T0: {self.reference_temperature:g} K",
                f"parameters: {sum(p.numel() for p in self.parameters())}"]
        return "\n".join(head + self.record.lines())

    # ------------------------------------------------------------ construction
    @classmethod
    def for_system(cls, system: MolecularSystem, reference_temperature: float = 300.0,
                   reference_frames: Optional[np.ndarray] = None, flow: Optional[FlowConfig | dict] = None,
                   bond_halfwidth: Optional[float] = None, angle_halfwidth: Optional[float] = None,
                   torsion_style: str = DEFAULT_TORSION_STYLE,
                   energy: Optional[OpenMMEnergy] = None) -> "BoltzmannGenerator":
        """Default IC transform (Z-matrix from the bond graph) and flow for ``system``.

        Parameters
        ----------
        reference_temperature : T0, K (use the temperature of the training data).
        reference_frames : (n, n_atoms, 3) nm, optional MD frames; if given, the
            bond/angle scaling half-widths are 1.5x the largest deviation from
            the reference structure seen in them (at least the defaults' 40 %),
            so that the flow's [0, 1] domain is used efficiently. Torsions that
            place an atom against a sibling (``a-b-c-d`` with ``d`` bonded to
            ``b``: set by the geometry around ``b``, they cannot rotate) are
            modelled on [0, 1] as well (``"narrow_torsion"``), with half-width
            1.5x their largest deviation from their circular mean, if that is
            below :data:`NARROW_TORSION_LIMIT`. Torsions about a bond stay
            circular whatever the frames show (short data would not tell a
            slow rotation from none).
        flow : FlowConfig or mapping of its fields.
        bond_halfwidth, angle_halfwidth : explicit half-widths (nm, rad).
        torsion_style : ``"relative"`` (the default,
            :data:`~trade_md.zmatrix.DEFAULT_TORSION_STYLE`) places branch
            atoms against an already placed sibling, so most torsions are
            narrow (on 600 K alanine dipeptide MD 14 of 19 have circular std
            < 0.3 rad, against 5 with ``"proper"``), including the one that
            fixes the CA chirality; backbone phi/psi stay single torsions in
            both styles.
        energy : OpenMMEnergy, optional; the target's energy (default: one for ``system``).
        """
        zmatrix = ZMatrix.from_topology(system.topology, torsion_style)
        options = {}
        if reference_frames is not None:
            options.update(_halfwidths_from_frames(zmatrix, system, np.asarray(reference_frames)))
        if bond_halfwidth is not None:
            options["bond_halfwidth"] = float(bond_halfwidth)
        if angle_halfwidth is not None:
            options["angle_halfwidth"] = float(angle_halfwidth)
        ic = InternalCoordinates(zmatrix, system, **options)
        cfg = flow if isinstance(flow, FlowConfig) else from_dict(FlowConfig, flow or {}, where="flow.")
        model = ConditionalFlow(ic.kinds, context_dim=1, config=cfg)
        density = CartesianFlow(ic, model, reference_temperature,
                                ic_options={k: np.asarray(v).tolist() for k, v in options.items()})
        return cls(density, _energy_target(energy), system)

    @property
    def ic(self) -> InternalCoordinates:
        """The internal-coordinate transform of :attr:`density`."""
        return self.density.ic

    @property
    def flow(self) -> ConditionalFlow:
        """The flow of :attr:`density`."""
        return self.density.flow

    @property
    def reference_temperature(self) -> float:
        """``T0`` in K."""
        return self.density.reference_temperature

    @property
    def target(self) -> BoltzmannTarget:
        """The Boltzmann target: the one given, else OpenMM energies of ``system`` (created on first use)."""
        if self._target is None:
            if self.system is None:
                raise ValueError("this generator has no target and no MolecularSystem, so no energies")
            self._target = BoltzmannTarget(OpenMMEnergy(self.system).energy)
        return self._target

    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    # ---------------------------------------------------------------- density
    def log_prob(self, x, temperature) -> torch.Tensor:
        """``log p(x | T)`` ``(B,)`` tensor for ``x`` ``(B, n_atoms, 3)`` nm (numpy or torch, any floating dtype:
        converted to the model's dtype and device); T scalar or (B,) K."""
        p = self._param()
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.to(dtype=p.dtype, device=p.device)
        elif not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=p.dtype, device=p.device)
        if isinstance(temperature, np.ndarray):
            temperature = torch.as_tensor(temperature, dtype=x.dtype, device=x.device)
        return self.density.log_prob(x, temperature)

    @torch.no_grad()
    def sample(self, n: int, temperature, batch_size: int = 4096, energies: bool = True,
               progress: bool = False) -> Samples:
        """Draw ``n`` configurations at ``temperature`` (K; scalar or (n,)).

        With ``energies=True``, the target's energies (kJ/mol) and log
        importance weights ``-U/(k_B T) - log p`` are attached.  Sampling runs
        in batches of ``batch_size`` to bound memory.

        Returns
        -------
        Samples
            numpy arrays: positions float32 nm, log-densities float64.
        """
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        n = int(n)
        temps = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (n,)) if np.ndim(temperature) == 0 \
            else np.asarray(temperature, dtype=np.float64)
        if temps.shape != (n,):
            raise ValueError(f"temperature must be a scalar or have shape ({n},), got {temps.shape}")
        check_temperature(temps)
        if energies and self._target is None and self.system is None:
            raise ValueError("energies=True needs a generator built with a target or a MolecularSystem")
        p = self._param()
        xs, lps, us = [], [], []
        bar = tqdm(total=n, unit="sample", desc="sampling", disable=not progress)
        for start in range(0, n, batch_size):
            t = torch.tensor(temps[start:start + batch_size], dtype=p.dtype, device=p.device)
            x, lp = self.density.sample(len(t), t)
            xs.append(x.cpu().numpy().astype(np.float32))  # energies of the stored coordinates
            lps.append(lp.cpu().numpy())
            if energies:
                us.append(self.target.energy(torch.as_tensor(xs[-1], dtype=torch.float64)).numpy())
            bar.update(len(t))
        bar.close()
        xyz = np.concatenate(xs)
        log_p = np.concatenate(lps).astype(np.float64)
        u = np.concatenate(us) if energies else None
        log_w = (-units.reduced_energy(u, temps) - log_p) if energies else None
        topology = self.system.topology if self.system is not None else _anonymous_topology(self.ic.n_atoms)
        samples = Samples(xyz, log_p, temps, topology, u, log_w, {"reference_temperature": self.reference_temperature})
        for t in sorted(t for t in set(temps.tolist()) if not self.record.covers(t)):
            low, high = self.record.temperature_range
            at = samples.select(temps == t)
            if not energies:
                ess = "relative ESS unknown (sampled without energies)"
            elif np.isfinite(at.log_weights).any():
                ess = f"relative ESS of these {len(at)} samples: {at.relative_ess():.2%}"
            else:
                ess = f"none of these {len(at)} samples has a finite weight"
            warnings.warn(f"{t:g} K is outside the temperature range {low:g}-{high:g} K this model was trained for; "
                          f"{ess}", OutOfRangeWarning, stacklevel=3)  # past no_grad's wrapper
        return samples

    # -------------------------------------------------------------- save/load
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write configuration + weights + the molecular system + :attr:`record` to one file, atomically.

        The record's versions are those of this installation unless it holds
        some already (a loaded model keeps the versions that made it).
        """
        if self.system is None:
            raise ValueError("saving needs a generator built with a MolecularSystem")
        z = self.ic.zmatrix
        state = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "trade_md_version": __version__,
            "reference_temperature": self.reference_temperature,
            "zmatrix": {"seeds": z.seeds.tolist(), "rows": z.rows.tolist(), "n_atoms": z.n_atoms},
            "ic_options": self.density.ic_options,
            "flow_config": to_dict(self.flow.config),
            "kinds": list(self.ic.kinds),
            "system": self.system.to_state(),
            "record": to_dict(dataclasses.replace(self.record, versions=self.record.versions or current_versions())),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], system: Optional[MolecularSystem] = None,
             energy: Optional[OpenMMEnergy] = None) -> "BoltzmannGenerator":
        """Read a file written by :meth:`save`; clear errors for missing/corrupt/mismatching files.

        ``system`` (checked against the stored molecule) replaces the stored
        one; ``energy`` is the target's energy (default: OpenMM energies of the system). The model
        comes back on the CPU whatever device saved it; ``.to(device)`` moves it.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many kinds for damaged files
            raise ModelFileError(f"{path} is not a readable trade_md model (truncated or corrupt?): {err}") from err
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ModelFileError(f"{path} is not a trade_md BoltzmannGenerator file")
        if state.get("format_version") != _FORMAT_VERSION:
            raise ModelFileError(f"{path} has model format version {state.get('format_version')}, "
                                 f"this trade_md reads version {_FORMAT_VERSION}")
        try:
            stored = MolecularSystem.from_state(state["system"])
            if system is not None:
                check_same_molecule(system.topology, stored.topology, what=str(path))
            else:
                system = stored
            zm = state["zmatrix"]
            zmatrix = ZMatrix.from_rows(zm["seeds"], zm["rows"], zm["n_atoms"])
            constraints = ConstrainedBonds(stored.constraints.pairs, stored.constraints.lengths)
            ic = InternalCoordinates(zmatrix, constraints, reference=stored.reference_xyz,
                                     **{k: np.asarray(v) for k, v in state["ic_options"].items()})
            flow = ConditionalFlow(state["kinds"], context_dim=1,
                                   config=from_dict(FlowConfig, state["flow_config"], where="flow_config."))
            density = CartesianFlow(ic, flow, state["reference_temperature"], ic_options=state["ic_options"])
            model = cls(density, _energy_target(energy), system, _record(state, path))
            model.load_state_dict(state["state_dict"])
        except KeyError as err:
            raise ModelFileError(f"{path} lacks the entry {err}") from err
        except RuntimeError as err:  # load_state_dict mismatch
            raise ModelFileError(f"{path} does not match the model it describes: {err}") from err
        return model


def _record(state: dict, path: Path) -> ModelRecord:
    """The file's :class:`ModelRecord`; for files from before records, what they say (trade_md's version)."""
    if "record" not in state:
        return ModelRecord(versions={"trade_md": state.get("trade_md_version")},
                           note="saved before model files recorded their training range, data and versions")
    try:
        return from_dict(ModelRecord, state["record"], where="record.")
    except ValueError as err:
        raise ModelFileError(f"{path} has a damaged model record: {err}") from err


def _energy_target(energy: Optional[OpenMMEnergy]) -> Optional[BoltzmannTarget]:
    """The Boltzmann target of ``energy`` (None: the generator makes one from its system when needed)."""
    return None if energy is None else BoltzmannTarget(energy.energy)


#: Torsions whose scaled spread (1.5x the largest deviation from their circular
#: mean in the reference frames, radians) is below this are modelled on [0, 1];
#: the margin to the cut opposite the mean is then at least pi - 2/1.5 = 1.8 rad.
NARROW_TORSION_LIMIT = 2.0


def _halfwidths_from_frames(zmatrix: ZMatrix, system: MolecularSystem, frames: np.ndarray) -> dict:
    """Per-coordinate half-widths: 1.5x the largest deviation seen in ``frames``, from the
    reference structure (bonds, angles) or from the circular mean (sibling torsions;
    those above :data:`NARROW_TORSION_LIMIT` and all torsions about a bond stay
    circular: half-width pi)."""
    if frames.ndim != 3 or frames.shape[1:] != (system.n_atoms, 3):
        raise ValueError(f"reference_frames must have shape (n, {system.n_atoms}, 3) nm, got {frames.shape}")
    probe = InternalCoordinates(zmatrix, system)
    b, a, t = (v.numpy() for v in probe._raw(torch.as_tensor(frames, dtype=torch.float64)))
    b0, a0, _ = (v[0].numpy() for v in probe._raw(torch.as_tensor(system.reference_xyz, dtype=torch.float64)[None]))
    bond = np.clip(1.5 * np.abs(b - b0).max(0), 0.02, 0.9 * b0)
    angle = np.clip(1.5 * np.abs(a - a0).max(0), 0.4, np.pi / 2)
    center = np.arctan2(np.sin(t).mean(0), np.cos(t).mean(0))
    dev_t = np.abs(np.angle(np.exp(1j * (t - center)))).max(0)
    bonded = {frozenset(pair) for pair in zmatrix.bonds.tolist()}
    sibling = np.array([frozenset((q[1], q[3])) in bonded for q in zmatrix.torsions.tolist()], dtype=bool)
    torsion = np.where(sibling & (1.5 * dev_t < NARROW_TORSION_LIMIT), np.maximum(1.5 * dev_t, 0.4), np.pi)
    return {"bond_halfwidth": bond, "angle_halfwidth": angle, "torsion_halfwidth": torsion, "torsion_center": center}


def sample_sharded(model: BoltzmannGenerator, n: int, temperature, world: World, seed: int = 0,
                   **kwargs) -> Optional[Samples]:
    """``n`` samples at ``temperature`` (K; scalar or ``(n,)``) drawn by the processes of a torchrun run.

    Rank ``r`` of ``N`` draws the contiguous share ``[r n / N, (r + 1) n / N)``
    of the ``n`` samples (and of per-sample temperatures) with its own random
    stream, ``torch.manual_seed(rank_seed(seed, r))``, and its own energies;
    rank 0 gathers them in rank order.  With one process this is exactly
    ``torch.manual_seed(seed); model.sample(n, temperature, **kwargs)``.
    ``world`` must have started (:meth:`World.start`); ``kwargs`` go to
    :meth:`BoltzmannGenerator.sample`.

    Returns
    -------
    Samples on rank 0, None on the other ranks.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    temps = np.asarray(temperature, dtype=np.float64)
    if temps.ndim and temps.shape != (n,):
        raise ValueError(f"temperature must be a scalar or have shape ({n},), got {temps.shape}")
    lo, hi = world.rank * n // world.size, (world.rank + 1) * n // world.size
    torch.manual_seed(rank_seed(seed, world.rank))
    part = None
    if hi > lo:
        part = model.sample(hi - lo, temps if not temps.ndim else temps[lo:hi], **kwargs)
    parts = world.collect(part)
    if parts is None:
        return None
    samples = Samples.concatenate([p for p in parts if p is not None])
    if world.distributed:
        samples.metadata["ranks"] = world.size
    return samples


def _anonymous_topology(n_atoms: int) -> mdtraj.Topology:
    top = mdtraj.Topology()
    res = top.add_residue("UNK", top.add_chain())
    for i in range(n_atoms):
        top.add_atom(f"X{i}", mdtraj.element.virtual, res)
    return top
