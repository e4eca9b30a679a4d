"""The Z-matrix of a molecule: which atoms define its internal coordinates.

A :class:`ZMatrix` has three *seed* atoms ``(s0, s1, s2)`` and one *row*
``(atom, bond partner, angle partner, torsion partner)`` for every other atom.
Its coordinates are
bonds   ``|x_s0 - x_s1|``, ``|x_s1 - x_s2|``, then ``|x_atom - x_bond|`` per row (n_atoms - 1);
angles  ``angle(s0, s1, s2)``, then ``angle(atom, bond, angle)`` per row (n_atoms - 2),
        the angle at the middle atom, in (0, pi) radians;
torsions ``dihedral(atom, bond, angle, torsion)`` per row (n_atoms - 3), in [-pi, pi)
        radians with the IUPAC / mdtraj sign convention (the same value for
        the reversed atom order).
These are 3 n_atoms - 6 numbers; the remaining 6 (position and orientation)
are the rigid-body degrees of freedom.  :class:`ZMatrix.from_topology` builds
one from the bond graph; :mod:`trade_md.coordinates` turns it into the
Cartesian <-> internal-coordinate transform.

This module imports neither OpenMM nor mdtraj: topologies are used through
their attributes only.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import validators

if TYPE_CHECKING:  # pragma: no cover - typing only
    import mdtraj

__all__ = ["ZMatrix", "TORSION_STYLES", "DEFAULT_TORSION_STYLE"]

#: How torsion partners are chosen (see :meth:`ZMatrix.from_topology`).
TORSION_STYLES = ("relative", "proper")
#: The style of every builder (ZMatrix, InternalCoordinates, BoltzmannGenerator, workflows).
DEFAULT_TORSION_STYLE = "relative"


# --------------------------------------------------------------------------- Z-matrix
def _as_index_array(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must contain integer atom indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _validate_zmatrix(seeds: np.ndarray, rows: np.ndarray, n_atoms: int) -> None:
    """Raise ``ValueError`` naming the offending row/atom unless the Z-matrix is valid."""
    if n_atoms < 4:
        raise ValueError(f"a Z-matrix needs at least 4 atoms, got {n_atoms}")
    if seeds.shape != (3,):
        raise ValueError(f"seeds must be 3 atom indices, got shape {seeds.shape}")
    if rows.shape != (n_atoms - 3, 4):
        raise ValueError(
            f"rows must have shape (n_atoms - 3, 4) = ({n_atoms - 3}, 4), got {rows.shape}"
        )
    placed_by: dict[int, str] = {}
    for k, s in enumerate(seeds.tolist()):
        if not 0 <= s < n_atoms:
            raise ValueError(f"seed {k}: atom index {s} out of range [0, {n_atoms})")
        if s in placed_by:
            raise ValueError(f"seed {k}: atom {s} is already {placed_by[s]}")
        placed_by[s] = f"seed {k}"
    roles = ("bond partner", "angle partner", "torsion partner")
    for r, (a, *refs) in enumerate(rows.tolist()):
        if not 0 <= a < n_atoms:
            raise ValueError(f"row {r}: atom index {a} out of range [0, {n_atoms})")
        if a in placed_by:
            raise ValueError(f"row {r} places atom {a}, which is already placed as {placed_by[a]}")
        if len({a, *refs}) != 4:
            raise ValueError(
                f"row {r} (atom {a}): atom and references {tuple(refs)} must be four distinct atoms"
            )
        for role, ref in zip(roles, refs):
            if not 0 <= ref < n_atoms:
                raise ValueError(f"row {r} (atom {a}): {role} {ref} out of range [0, {n_atoms})")
            if ref not in placed_by:
                raise ValueError(
                    f"row {r} (atom {a}): {role} {ref} is not placed before row {r} "
                    "(references must be seeds or atoms of earlier rows)"
                )
        placed_by[a] = f"row {r}"


@dataclass(frozen=True, eq=False)
class ZMatrix:
    """Which atoms define the internal coordinates of a molecule.

    Parameters
    ----------
    seeds : (3,) int array
        Seed atoms ``(s0, s1, s2)``. Their coordinates are the bonds s0-s1,
        s1-s2 and the angle s0-s1-s2 (at s1); they fix the rigid-body frame.
    rows : (n_atoms - 3, 4) int array
        ``(atom, bond partner, angle partner, torsion partner)``, in placement
        order; every reference is a seed or an atom of an earlier row.

    Raises
    ------
    ValueError
        If an atom is placed twice or never, a reference is not placed
        earlier, a row repeats an atom, or an index is out of range.
    """

    seeds: np.ndarray
    rows: np.ndarray

    def __post_init__(self) -> None:
        seeds = _as_index_array(self.seeds, "seeds")
        rows = _as_index_array(self.rows, "rows")
        if rows.ndim != 2 or rows.shape[1:] != (4,):
            raise ValueError(f"rows must have shape (n_atoms - 3, 4), got {rows.shape}")
        _validate_zmatrix(seeds, rows, rows.shape[0] + 3)
        seeds.setflags(write=False)
        rows.setflags(write=False)
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "rows", rows)

    # ----------------------------------------------------------------- builders
    @classmethod
    def from_rows(cls, seeds: Sequence[int], rows: Sequence[Sequence[int]], n_atoms: int) -> "ZMatrix":
        """A user-written Z-matrix, validated.

        Parameters
        ----------
        seeds : 3 atom indices ``(s0, s1, s2)``.
        rows : ``n_atoms - 3`` rows ``(atom, bond partner, angle partner, torsion partner)``.
        n_atoms : number of atoms of the molecule.

        Raises
        ------
        ValueError
            With the offending row and atom named (see :class:`ZMatrix`).
        """
        rows_arr = _as_index_array(rows, "rows")
        if rows_arr.ndim != 2 or rows_arr.shape[1:] != (4,):
            raise ValueError(f"rows must have shape (n_atoms - 3, 4), got {rows_arr.shape}")
        if n_atoms < 4:
            raise ValueError(f"a Z-matrix needs at least 4 atoms, got n_atoms={n_atoms}")
        if rows_arr.shape[0] != n_atoms - 3:
            raise ValueError(
                f"a molecule of {n_atoms} atoms needs {n_atoms - 3} rows besides the 3 seeds, "
                f"got {rows_arr.shape[0]}"
            )
        return cls(np.asarray(seeds), rows_arr)

    @classmethod
    def from_topology(cls, topology: "mdtraj.Topology", torsion_style: str = DEFAULT_TORSION_STYLE) -> "ZMatrix":
        """Build a Z-matrix from the bond graph of a connected molecule.

        The seeds are a central heavy atom ``s1`` (near the middle of a longest
        path in the bond graph) and its two best-ranked neighbours ``s0 < s2``
        (heavy, backbone, non-terminal first; for peptides N, CA, C). The remaining atoms are
        placed one at a time from the frontier of placed atoms, heavy backbone
        chain atoms first, then backbone leaves (O), then other heavy atoms,
        then hydrogens. Each atom's bond partner is bonded to it, its angle
        partner is bonded to the bond partner, and references prefer heavy,
        backbone, non-terminal atoms. For peptides this makes every backbone
        phi (C-N-CA-C) and psi (N-CA-C-N) a single torsion coordinate.

        Parameters
        ----------
        topology : mdtraj.Topology
            Or any object with iterable ``atoms`` (each with ``index``,
            ``element`` and optionally ``is_backbone``) and ``bonds`` (atom pairs).
        torsion_style : {"relative", "proper"}
            ``"relative"`` (the default, :data:`DEFAULT_TORSION_STYLE`) or ``"proper"``.
            ``"proper"``: the torsion partner is bonded to the angle partner
            whenever possible (every torsion is a chain dihedral).
            ``"relative"``: when the bond partner already has another placed
            neighbour, that neighbour is the torsion partner (an improper
            torsion). Branch atoms (methyl hydrogens, C-beta, amide H and O)
            then get nearly rigid torsions relative to their siblings, and the
            chirality at C-alpha is a single narrow coordinate. Backbone phi
            and psi remain single torsions in both styles.

        Raises
        ------
        ValueError
            Fewer than 4 atoms, a disconnected bond graph, or an unknown style.
        """
        validators.choice("torsion_style", torsion_style, TORSION_STYLES)
        atoms = list(topology.atoms)
        n = len(atoms)
        if n < 4:
            raise ValueError(f"internal coordinates need a molecule of at least 4 atoms, got {n}")
        nbrs: list[set[int]] = [set() for _ in range(n)]
        for a1, a2 in topology.bonds:
            nbrs[a1.index].add(a2.index)
            nbrs[a2.index].add(a1.index)
        unreached = sorted(set(range(n)) - set(_bfs(nbrs, 0)[0]))
        if unreached:
            names = ", ".join(f"{i} ({atoms[i]})" for i in unreached[:5])
            raise ValueError(
                f"the bond graph is disconnected: {len(unreached)} of {n} atoms are not bonded "
                f"to atom 0 ({atoms[0]}) through any path, e.g. {names}. A Z-matrix needs one "
                "connected molecule (missing bonds in the topology? several molecules?)"
            )
        heavy = [a.element is None or a.element.atomic_number != 1 for a in atoms]
        backbone = [bool(getattr(a, "is_backbone", False)) for a in atoms]
        # smaller rank = preferred: heavy, backbone, non-terminal, low index
        rank = [(not heavy[i], not backbone[i], len(nbrs[i]) == 1, i) for i in range(n)]

        s1 = _central_atom(nbrs, heavy, rank)
        s0, s2 = sorted(sorted(nbrs[s1], key=rank.__getitem__)[:2])
        placed = {s0: True, s1: True, s2: True}
        frontier: list[tuple] = []
        for s in (s0, s1, s2):
            for j in nbrs[s]:
                if j not in placed:
                    heapq.heappush(frontier, rank[j])
        rows = []
        while frontier:
            a = heapq.heappop(frontier)[-1]
            if a in placed:
                continue
            rows.append(_choose_references(a, nbrs, placed, rank, torsion_style))
            placed[a] = True
            for j in nbrs[a]:
                if j not in placed:
                    heapq.heappush(frontier, rank[j])
        return cls(np.array([s0, s1, s2]), np.array(rows, dtype=np.int64).reshape(-1, 4))

    # --------------------------------------------------------------- properties
    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return self.rows.shape[0] + 3

    @property
    def bonds(self) -> np.ndarray:
        """(n_atoms - 1, 2) int64: atom pairs of the bond coordinates, in order."""
        s0, s1, s2 = self.seeds
        return np.concatenate([[[s1, s0], [s2, s1]], self.rows[:, :2]]).astype(np.int64)

    @property
    def angles(self) -> np.ndarray:
        """(n_atoms - 2, 3) int64: atom triples of the angle coordinates (vertex in the middle)."""
        s0, s1, s2 = self.seeds
        return np.concatenate([[[s2, s1, s0]], self.rows[:, :3]]).astype(np.int64)

    @property
    def torsions(self) -> np.ndarray:
        """(n_atoms - 3, 4) int64: atom quadruples of the torsion coordinates."""
        return self.rows.copy()

    def torsion_row(self, i: int, j: int, k: int, l: int) -> int:
        """Row of the torsion ``i-j-k-l`` (either orientation).

        Raises
        ------
        KeyError
            If no row defines this torsion.
        """
        want = (int(i), int(j), int(k), int(l))
        for r, row in enumerate(self.rows.tolist()):
            if tuple(row) in (want, want[::-1]):
                return r
        raise KeyError(f"torsion {want} is not a coordinate of this Z-matrix")

    def generations(self) -> list[np.ndarray]:
        """Rows grouped into placement generations.

        Returns
        -------
        list of (k_g,) int64 arrays
            Generation ``g`` holds the rows whose three references are all
            placed by seeds and generations ``< g``, so the atoms of one
            generation can be placed together.
        """
        gen = np.zeros(self.n_atoms, dtype=np.int64)
        row_gen = np.empty(len(self.rows), dtype=np.int64)
        for r, (a, b, c, d) in enumerate(self.rows.tolist()):
            row_gen[r] = gen[a] = 1 + max(gen[b], gen[c], gen[d])
        return [np.flatnonzero(row_gen == g) for g in range(1, int(row_gen.max(initial=0)) + 1)]


def _bfs(nbrs: list[set[int]], start: int) -> tuple[list[int], dict[int, int]]:
    """Breadth-first order from ``start`` and the parent of each reached atom."""
    order, parent = [start], {start: -1}
    for i in order:
        for j in sorted(nbrs[i]):
            if j not in parent:
                parent[j] = i
                order.append(j)
    return order, parent


def _central_atom(nbrs: list[set[int]], heavy: list[bool], rank: list[tuple]) -> int:
    """A heavy atom with >= 2 neighbours near the middle of a longest path.

    The path is found by a double breadth-first sweep (exact for trees, a
    good approximation with rings).
    """
    u = _bfs(nbrs, 0)[0][-1]
    order, parent = _bfs(nbrs, u)
    path = [order[-1]]
    while parent[path[-1]] != -1:
        path.append(parent[path[-1]])
    mid = (len(path) - 1) / 2
    # any connected graph with >= 3 atoms has an atom with >= 2 neighbours on its longest path
    candidates = [p for p in path if len(nbrs[p]) >= 2]

    def score(p: int) -> tuple:
        n_heavy = sum(heavy[j] for j in nbrs[p])
        return (not heavy[p], n_heavy < 2, abs(path.index(p) - mid), rank[p])

    return min(candidates, key=score)


def _choose_references(
    a: int, nbrs: list[set[int]], placed: dict, rank: list[tuple], style: str
) -> tuple[int, int, int, int]:
    """Row ``(a, bond, angle, torsion)`` for atom ``a`` from already-placed atoms."""
    def best(candidates: list[int]) -> int:
        return min(candidates, key=rank.__getitem__)

    b = best([j for j in nbrs[a] if j in placed])

    def proper(c: int) -> list[int]:
        return [j for j in nbrs[c] if j in placed and j not in (a, b)]

    cs = [j for j in nbrs[b] if j in placed and j != a]
    if style == "proper":
        c = min(cs, key=lambda j: (not proper(j), rank[j]))
    else:
        c = best(cs)
    siblings = [j for j in nbrs[b] if j in placed and j not in (a, c)]
    first, second = (proper(c), siblings) if style == "proper" else (siblings, proper(c))
    # the placed atoms form a connected graph of >= 3 atoms, so b has a sibling or c a proper partner
    d = best(first or second)
    return a, b, c, d
