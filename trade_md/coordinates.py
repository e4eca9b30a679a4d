"""Internal coordinates: an exact Cartesian <-> internal-coordinate bijection with a
closed-form log-determinant, on a :class:`~trade_md.zmatrix.ZMatrix` built from the bond graph.

Conventions
-----------
- Cartesian positions ``x`` have shape ``(batch, n_atoms, 3)``, in nm.
- The bonds, angles and torsions of a Z-matrix are defined in
  :mod:`trade_md.zmatrix`; the 6 rigid-body degrees of freedom (position and
  orientation) are dropped by the transform.
- The modelled vector ``ic`` of :class:`InternalCoordinates` is laid out as
  ``[free bonds | angles | torsions]``; bonds held by constraints are left out;
  torsions given a half-width below pi are modelled on [0, 1] ("narrow").

This module imports neither OpenMM nor mdtraj: systems and constraint sets
are used through their attributes only.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import validators
from .zmatrix import DEFAULT_TORSION_STYLE, ZMatrix

__all__ = ["ZMatrix", "InternalCoordinates"]


# ------------------------------------------------------------------- geometry
def _norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis; the square is clamped at the dtype's
    smallest normal number, so zero vectors give finite values and gradients."""
    return (v * v).sum(-1).clamp_min(torch.finfo(v.dtype).tiny).sqrt()


def _wrap(t: torch.Tensor) -> torch.Tensor:
    """Map angles in [-pi, pi] to [-pi, pi)."""
    return torch.where(t >= math.pi, t - 2.0 * math.pi, t)


def _wrap_any(t: torch.Tensor) -> torch.Tensor:
    """Map any angle (radians) to [-pi, pi)."""
    return torch.remainder(t + math.pi, 2.0 * math.pi) - math.pi


class InternalCoordinates(torch.nn.Module):
    """Bijection between Cartesian positions (rigid-body motion removed) and
    scaled internal coordinates, with its exact log-determinant.

    Modelled coordinates ``ic`` (shape ``(batch, dim)``), layout
    ``[free bonds | angles | torsions]``:

    - bonds not fixed by a constraint, ``(b - lo) / (hi - lo)`` with
      ``[lo, hi] = [b_ref - w_b, b_ref + w_b]`` (nm) around the reference
      structure, so ``[lo, hi]`` maps affinely onto [0, 1];
    - angles, ``(a - lo) / (hi - lo)`` with
      ``[lo, hi] = [max(a_ref - w_a, 0), min(a_ref + w_a, pi)]`` (radians);
    - torsions, in radians on [-pi, pi) (circular, unscaled), except
    - narrow torsions (half-width ``w_t < pi``): ``(wrap(t - c) + w_t) / (2 w_t)``
      around a centre ``c``; the circle is cut open at ``c + pi``, so the map
      is exact for any torsion, and [0, 1] covers ``c +- w_t``.

    ``kinds[i]`` is ``"bond"``, ``"angle"``, ``"narrow_torsion"`` or
    ``"torsion"``: the first three live on the bounded interval [0, 1],
    torsions on the circle [-pi, pi). Values outside [0, 1] are mapped
    affinely as well (no clipping).

    The default half-widths ``w_b = 0.05`` nm and ``w_a = 1.0`` rad are about
    10 and 8 standard deviations of alanine dipeptide's bonds and angles at
    700 K (measured: largest deviation from the minimized structure in 2 ns
    of 700 K MD, 0.021 nm and 0.60 rad); 600 K MD frames map into [0.31, 0.70].
    The scaling bounds are saved buffers (``bond_lo``, ``bond_hi``,
    ``angle_lo``, ``angle_hi``, float64), so a loaded state dict restores them
    exactly even if the reference structure differs slightly.

    Constrained bonds: ``forward`` ignores any deviation of a constrained bond
    from its length; ``inverse`` places it at exactly that length.

    Log-determinant: ``forward`` returns ``ladj = log|det d ic / d x|`` on the
    manifold of Cartesian positions modulo rigid motion and constraints,

        ladj = -sum_bonds 2 log b - sum_angles log sin a - sum log(hi - lo),

    summed over all ``n_atoms - 1`` bonds (constrained ones at their fixed
    length) and ``n_atoms - 2`` angles, the last sum over the scaled
    coordinates. Thus ``log p_x(x) = log p_ic(ic) + ladj``. ``inverse``
    returns ``-ladj``. ``sin a`` is clamped at :attr:`min_sin`; angles with
    ``sin a < min_sin`` are counted in :attr:`n_degenerate`.

    Parameters
    ----------
    zmatrix : ZMatrix
    constraints : MolecularSystem, ConstrainedBonds or None
        Distance constraints (atom pairs ``(K, 2)``, lengths ``(K,)`` nm);
        every constrained pair must be a bond of ``zmatrix``. Given a
        MolecularSystem, its constraints are used and its reference structure
        is the default ``reference``.
    reference : (n_atoms, 3) float array, nm, optional
        Structure around which bonds and angles are scaled (e.g. an energy
        minimum). Required unless ``constraints`` is a MolecularSystem.
    bond_halfwidth : float or (n_atoms - 1,) array, nm
        ``w_b``, per bond of ``zmatrix.bonds`` (constrained entries unused).
    angle_halfwidth : float or (n_atoms - 2,) array, radians
        ``w_a``, per angle of ``zmatrix.angles``.
    torsion_halfwidth : float or (n_atoms - 3,) array, radians
        ``w_t``, per torsion of ``zmatrix.torsions``; torsions with
        ``w_t < pi`` are narrow, the others circular (default: all circular).
    torsion_center : (n_atoms - 3,) array, radians, optional
        ``c`` of the narrow torsions (default: the reference structure's torsions).

    Attributes
    ----------
    dim : int
        Number of modelled coordinates, ``3 n_atoms - 6 - n_constrained``.
    kinds : list of str
        ``"bond"``, ``"angle"``, ``"narrow_torsion"`` or ``"torsion"`` for each
        modelled coordinate.
    coordinate_atoms : list of tuple of int
        The 2, 3 or 4 atoms defining each modelled coordinate.
    n_free_bonds, n_constrained : int
        Modelled bonds (the first ``n_free_bonds`` entries of ``ic``) and bonds
        held fixed.
    n_degenerate : int
        Angles with ``sin a < min_sin`` in the last ``forward`` or ``inverse``
        call, counted over the batch.
    zmatrix : ZMatrix
    min_sin : float
        Clamp for ``sin a`` in the log-determinant.
    """

    min_sin: float = 1e-6

    def __init__(
        self,
        zmatrix: ZMatrix,
        constraints: Any = None,
        reference: np.ndarray | torch.Tensor | None = None,
        bond_halfwidth: float | np.ndarray = 0.05,
        angle_halfwidth: float | np.ndarray = 1.0,
        torsion_halfwidth: float | np.ndarray = math.pi,
        torsion_center: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(zmatrix, ZMatrix):
            raise TypeError(f"zmatrix must be a ZMatrix, got {type(zmatrix).__name__}")
        self.zmatrix = zmatrix
        n = zmatrix.n_atoms
        pairs, lengths, reference = _resolve_constraints(constraints, reference, n)
        ref = np.asarray(reference.detach().cpu() if torch.is_tensor(reference) else reference, np.float64)
        if ref.shape != (n, 3):
            raise ValueError(f"reference must have shape ({n}, 3) in nm, got {ref.shape}")
        if not np.all(np.isfinite(ref)):
            raise ValueError("reference contains NaN or infinite values")

        bonds = zmatrix.bonds
        bond_of = {frozenset(p): i for i, p in enumerate(bonds.tolist())}
        fixed: dict[int, float] = {}
        for (i, j), length in zip(pairs.tolist(), lengths.tolist()):
            if frozenset((i, j)) not in bond_of:
                raise ValueError(
                    f"constraint between atoms {i} and {j} ({length} nm) is not a bond coordinate "
                    "of the Z-matrix; only constrained bonds can be held fixed (use HBonds or "
                    "AllBonds constraints on an acyclic bond, not HAngles or ring closures)"
                )
            if not length > 0:
                raise ValueError(f"constraint between atoms {i} and {j} has length {length} nm")
            fixed[bond_of[frozenset((i, j))]] = length
        con_idx = np.array(sorted(fixed), dtype=np.int64)
        free_idx = np.setdiff1d(np.arange(n - 1), con_idx)

        # index buffers (not saved: they follow from the Z-matrix)
        gens = zmatrix.generations()
        order = np.concatenate(gens) if gens else np.zeros(0, np.int64)
        placement = np.concatenate([zmatrix.seeds, zmatrix.rows[order, 0]])
        slot = np.empty(n, dtype=np.int64)  # position of each atom in placement order
        slot[placement] = np.arange(n)
        self._gen_bounds = np.cumsum([0] + [len(g) for g in gens]).tolist()
        for name, value in {
            "_seeds": zmatrix.seeds,
            "_rows": zmatrix.rows,
            "_free_idx": free_idx,
            "_bond_perm": np.argsort(np.concatenate([free_idx, con_idx])),  # cat([free, fixed]) -> bonds
            "_gen_order": order,  # rows sorted by generation
            "_gen_refs": slot[zmatrix.rows[order, 1:]],  # (n-3, 3) reference slots
            "_unplace": slot,
        }.items():
            self.register_buffer(name, torch.tensor(np.asarray(value), dtype=torch.long), persistent=False)

        ref_b, ref_a, ref_t = (v[0].numpy() for v in self._raw(torch.as_tensor(ref)[None]))
        w_b = _halfwidth(bond_halfwidth, n - 1, "bond_halfwidth")[free_idx]
        too_wide = w_b >= ref_b[free_idx]
        if np.any(too_wide):
            k = free_idx[np.argmax(too_wide)]
            raise ValueError(
                f"bond_halfwidth must be below the reference bond length; bond {tuple(bonds[k].tolist())} "
                f"is {ref_b[k]:.4f} nm long"
            )
        w_a = _halfwidth(angle_halfwidth, n - 2, "angle_halfwidth")
        bond_lo, bond_hi = ref_b[free_idx] - w_b, ref_b[free_idx] + w_b
        angle_lo, angle_hi = np.maximum(ref_a - w_a, 0.0), np.minimum(ref_a + w_a, math.pi)
        w_t = _halfwidth(torsion_halfwidth, n - 3, "torsion_halfwidth")
        center = ref_t if torsion_center is None else np.asarray(torsion_center, dtype=np.float64)
        if center.shape != (n - 3,) or not np.all(np.isfinite(center)):
            raise ValueError(f"torsion_center must be {n - 3} finite angles in radians, got shape {center.shape}")
        narrow = np.flatnonzero(w_t < math.pi)
        fixed_lengths = np.array([fixed[i] for i in con_idx], dtype=np.float64)
        # constant part of the ladj: 2 sum log r0 (fixed bonds) + sum log(hi - lo) (scaled coordinates)
        constant = (
            2.0 * np.log(fixed_lengths).sum() + np.log(bond_hi - bond_lo).sum() + np.log(angle_hi - angle_lo).sum()
            + np.log(2.0 * w_t[narrow]).sum()
        )
        for name, value in {
            "bond_lo": bond_lo, "bond_hi": bond_hi, "angle_lo": angle_lo, "angle_hi": angle_hi,
            "fixed_lengths": fixed_lengths, "ladj_constant": constant,
        }.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64))
        # narrow torsions: set by the constructor's arguments (not saved: older
        # state dicts lack them; a saved model stores the arguments instead)
        self.register_buffer("_narrow", torch.as_tensor(narrow, dtype=torch.long), persistent=False)
        self.register_buffer("torsion_lo", torch.as_tensor(center[narrow] - w_t[narrow]), persistent=False)
        self.register_buffer("torsion_width", torch.as_tensor(2.0 * w_t[narrow]), persistent=False)

        self.n_free_bonds = len(free_idx)
        self.n_constrained = len(con_idx)
        self.dim = 3 * n - 6 - self.n_constrained
        torsion_kinds = np.full(n - 3, "torsion", dtype=object)
        torsion_kinds[narrow] = "narrow_torsion"
        self.kinds = ["bond"] * len(free_idx) + ["angle"] * (n - 2) + torsion_kinds.tolist()
        self.coordinate_atoms = (
            [tuple(p) for p in bonds[free_idx].tolist()]
            + [tuple(t) for t in zmatrix.angles.tolist()]
            + [tuple(q) for q in zmatrix.torsions.tolist()]
        )
        self._n_degenerate = torch.zeros((), dtype=torch.long)  # set by every forward/inverse

    # ---------------------------------------------------------------- builders
    @classmethod
    def for_system(cls, system: Any, torsion_style: str = DEFAULT_TORSION_STYLE,
                   **kwargs: Any) -> "InternalCoordinates":
        """Z-matrix from ``system.topology``, constraints and reference from ``system``.

        ``kwargs`` (``reference``, ``bond_halfwidth``, ``angle_halfwidth``) are
        passed to the constructor.
        """
        return cls(ZMatrix.from_topology(system.topology, torsion_style), system, **kwargs)

    # -------------------------------------------------------------- public API
    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return self.zmatrix.n_atoms

    @property
    def n_degenerate(self) -> int:
        """Number of (sample, angle) entries with ``sin a < min_sin`` in the last call."""
        return int(self._n_degenerate)

    def torsion_index(self, i: int, j: int, k: int, l: int) -> int:
        """Position in ``ic`` of the torsion ``i-j-k-l`` (either orientation).

        Raises
        ------
        KeyError
            If that torsion is not a coordinate of the Z-matrix.
        """
        return self.n_free_bonds + self.n_atoms - 2 + self.zmatrix.torsion_row(i, j, k, l)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cartesian positions to modelled internal coordinates.

        Parameters
        ----------
        x : (batch, n_atoms, 3) float tensor, nm

        Returns
        -------
        ic : (batch, dim) tensor, dtype of ``x``
            Scaled bonds, angles and narrow torsions (in [0, 1] within the
            half-widths), torsions in radians on [-pi, pi).
        ladj : (batch,) tensor
            ``log|det d ic / d x|`` on the manifold (see the class docstring).
        """
        _check_tensor(x, "x", "(batch, n_atoms, 3) in nm", ndim=3)
        if x.shape[2] != 3:
            raise ValueError(f"x must have shape (batch, n_atoms, 3) in nm, got {tuple(x.shape)}")
        if x.shape[1] != self.n_atoms:
            raise ValueError(f"x has {x.shape[1]} atoms but this transform has {self.n_atoms}")
        _check_finite(x, "x")
        bonds, angles, torsions = self._raw(x)
        free = bonds[:, self._free_idx]
        lo_b, hi_b, lo_a, hi_a, const, lo_t, width_t = self._constants(x)
        if self._narrow.numel():
            center = lo_t + 0.5 * width_t
            scaled = (_wrap_any(torsions[:, self._narrow] - center) + 0.5 * width_t) / width_t
            torsions = torsions.index_copy(1, self._narrow, scaled)
        ic = torch.cat([(free - lo_b) / (hi_b - lo_b), (angles - lo_a) / (hi_a - lo_a), torsions], dim=1)
        ladj = -(2.0 * torch.log(free).sum(1) + self._log_sin(angles).sum(1)) - const
        return ic, ladj

    def inverse(self, ic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Modelled internal coordinates to Cartesian positions in a canonical frame.

        Seed ``s0`` is placed at the origin, ``s1`` on the +x axis and ``s2``
        in the xy-plane (positive y); all other atoms follow from their rows,
        one vectorized step per generation (:meth:`ZMatrix.generations`).

        Parameters
        ----------
        ic : (batch, dim) float tensor
            As returned by :meth:`forward`.

        Returns
        -------
        x : (batch, n_atoms, 3) tensor, nm, dtype of ``ic``
        ladj : (batch,) tensor
            ``log|det d x / d ic| = -`` the forward ``ladj``.
        """
        _check_tensor(ic, "ic", "(batch, dim)", ndim=2)
        if ic.shape[1] != self.dim:
            raise ValueError(f"ic has {ic.shape[1]} coordinates but this transform has {self.dim}")
        _check_finite(ic, "ic")
        nb, na = self.n_free_bonds, self.n_atoms - 2
        lo_b, hi_b, lo_a, hi_a, const, lo_t, width_t = self._constants(ic)
        free = lo_b + (hi_b - lo_b) * ic[:, :nb]
        angles = lo_a + (hi_a - lo_a) * ic[:, nb:nb + na]
        torsions = ic[:, nb + na:]
        if self._narrow.numel():
            torsions = torsions.index_copy(1, self._narrow, lo_t + width_t * torsions[:, self._narrow])
        fixed = self.fixed_lengths.to(ic).expand(ic.shape[0], -1)
        bonds = torch.cat([free, fixed], dim=1)[:, self._bond_perm]
        ladj = 2.0 * torch.log(free).sum(1) + self._log_sin(angles).sum(1) + const
        return self._place(bonds, angles, torsions), ladj

    # --------------------------------------------------------------- internals
    def _raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All bonds (B, n-1) nm, angles (B, n-2) rad and torsions (B, n-3) rad in [-pi, pi)."""
        xs = x[:, self._seeds]                               # (B, 3, 3)
        xr = x[:, self._rows]                                # (B, M, 4, 3)
        r01 = xs[:, 1] - xs[:, 0]
        r21 = xs[:, 2] - xs[:, 1]
        r_ab = xr[:, :, 0] - xr[:, :, 1]
        r_cb = xr[:, :, 2] - xr[:, :, 1]
        r_dc = xr[:, :, 3] - xr[:, :, 2]
        bonds = torch.cat([_norm(r01)[:, None], _norm(r21)[:, None], _norm(r_ab)], 1)
        # angle at the vertex between u and v: atan2(|u x v|, u . v) is accurate near 0 and pi
        u = torch.cat([r21[:, None], r_ab], 1)
        v = torch.cat([-r01[:, None], r_cb], 1)
        angles = torch.atan2(_norm(torch.cross(u, v, dim=-1)), (u * v).sum(-1))
        # IUPAC dihedral of (a, b, c, d) as in mdtraj: b1 = b - a, b2 = c - b, b3 = d - c
        c1 = torch.cross(r_cb, r_dc, dim=-1)
        c2 = torch.cross(-r_ab, r_cb, dim=-1)
        y = -(r_ab * c1).sum(-1) * _norm(r_cb)
        torsions = _wrap(torch.atan2(y, (c1 * c2).sum(-1)))
        return bonds, angles, torsions

    def _place(self, bonds: torch.Tensor, angles: torch.Tensor, torsions: torch.Tensor) -> torch.Tensor:
        """Cartesian positions (B, n_atoms, 3) from all bonds, angles and torsions."""
        B = bonds.shape[0]
        # atoms in placement order: seeds, then rows by generation
        xp = bonds.new_zeros(B, self.n_atoms, 3)
        d01, d12, a012 = bonds[:, 0], bonds[:, 1], angles[:, 0]
        xp[:, 1, 0] = d01
        xp[:, 2, 0] = d01 - d12 * torch.cos(a012)
        xp[:, 2, 1] = d12 * torch.sin(a012)
        order = self._gen_order
        r = bonds[:, 2:][:, order, None]
        theta = angles[:, 1:][:, order, None]
        phi = torsions[:, order, None]
        # displacement of atom a from b in the local frame (u, m, n), all (B, M, 1)
        radial = -r * torch.cos(theta)
        across = r * torch.sin(theta)
        along_m, along_n = across * torch.cos(phi), across * torch.sin(phi)
        refs = self._gen_refs
        for g0, g1 in zip(self._gen_bounds[:-1], self._gen_bounds[1:]):
            x_ref = xp[:, refs[g0:g1].reshape(-1)].reshape(B, g1 - g0, 3, 3)
            xb, xc, xd = x_ref[:, :, 0], x_ref[:, :, 1], x_ref[:, :, 2]
            u = xb - xc
            u = u / _norm(u)[..., None]
            w = xd - xc
            m = w - (w * u).sum(-1, keepdim=True) * u
            m = m / _norm(m)[..., None]
            nvec = torch.cross(u, m, dim=-1)
            xp[:, 3 + g0:3 + g1] = xb + radial[:, g0:g1] * u + along_m[:, g0:g1] * m + along_n[:, g0:g1] * nvec
        return xp[:, self._unplace]

    def _log_sin(self, angles: torch.Tensor) -> torch.Tensor:
        """log sin a (B, n-2), with sin clamped at ``min_sin``; counts degenerate angles."""
        sin = torch.sin(angles)
        with torch.no_grad():
            self._n_degenerate = (sin < self.min_sin).sum()
        return torch.log(sin.clamp_min(self.min_sin))

    def _constants(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The scaling buffers in the dtype/device of ``like``: bond and angle bounds, the ladj
        constant, then the narrow torsions' lower bounds and widths."""
        return tuple(
            t.to(like) for t in (self.bond_lo, self.bond_hi, self.angle_lo, self.angle_hi, self.ladj_constant,
                                 self.torsion_lo, self.torsion_width)
        )

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, dim={self.dim}, n_constrained={self.n_constrained}"


def _check_tensor(t: Any, what: str, expected: str, ndim: int) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{what} must be a torch.Tensor of shape {expected}, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {t.dtype}")
    if t.ndim != ndim:
        raise ValueError(f"{what} must have shape {expected}, got {tuple(t.shape)}")


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or infinite values")


def _halfwidth(value: float | np.ndarray, size: int, what: str) -> np.ndarray:
    w = np.asarray(value, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(size, float(w))
    if w.shape != (size,):
        raise ValueError(f"{what} must be a scalar or have shape ({size},), got {w.shape}")
    return validators.positive_values(what, w)


def _resolve_constraints(constraints: Any, reference: Any, n_atoms: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """(pairs (K, 2) int64, lengths (K,) nm, reference) from a system, a constraint set or None."""
    if constraints is None:
        pairs, lengths = np.zeros((0, 2), np.int64), np.zeros(0)
    elif hasattr(constraints, "constraints") and hasattr(constraints, "reference_xyz"):
        if constraints.n_atoms != n_atoms:
            raise ValueError(
                f"the system has {constraints.n_atoms} atoms but the Z-matrix has {n_atoms}"
            )
        reference = constraints.reference_xyz if reference is None else reference
        return _resolve_constraints(constraints.constraints, reference, n_atoms)
    elif hasattr(constraints, "pairs") and hasattr(constraints, "lengths"):
        pairs = np.asarray(constraints.pairs, dtype=np.int64).reshape(-1, 2)
        lengths = np.asarray(constraints.lengths, dtype=np.float64).reshape(-1)
        if len(pairs) != len(lengths):
            raise ValueError(f"{len(pairs)} constrained pairs but {len(lengths)} lengths")
        if pairs.size and (pairs.min() < 0 or pairs.max() >= n_atoms):
            raise ValueError(f"constrained atom index out of range [0, {n_atoms})")
    else:
        raise TypeError(
            "constraints must be a MolecularSystem, a ConstrainedBonds (pairs, lengths) or None, "
            f"got {type(constraints).__name__}"
        )
    if reference is None:
        raise ValueError("a reference structure (n_atoms, 3) in nm is required to scale bonds and angles")
    return pairs, lengths, reference
