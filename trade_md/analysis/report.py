"""Evaluation reports: ``metrics.json`` and ``report.md`` in one folder.

``metrics`` is a mapping with string keys.  Values may be numbers (Python or
numpy), strings, booleans, ``None``, lists/arrays, nested mappings, or
objects with a ``to_dict()`` method (the metric dataclasses).

In ``report.md``
- an optional ``preamble`` (Markdown) comes first, right under the title;
- top-level entries that are not mappings form a "Summary" table;
- every top-level mapping (e.g. one temperature) becomes a section with a
  table ``metric | value | noise floor``; nested mappings are flattened to
  dotted names;
- an entry ``X_floor`` (:data:`FLOOR_SUFFIX`) next to ``X`` is shown in the
  noise-floor column of ``X``'s row, not as a row of its own;
- a mapping with ``value`` and ``stderr`` is shown as ``value ± stderr``
  (other fields of it get rows of their own);
- figures are embedded as Markdown images with paths relative to the folder.

``metrics.json`` is strict JSON: non-finite numbers (``inf``, ``nan``) are
written as ``null``.  Both files are written atomically.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .._io import PathLike, atomic_write_text

__all__ = ["FLOOR_SUFFIX", "ReportFiles", "write_report"]

#: Suffix of the key holding the noise floor of the metric named by the rest of the key.
FLOOR_SUFFIX: str = "_floor"


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files written by :func:`write_report`."""

    metrics_json: Path
    report_md: Path

    def to_dict(self) -> dict:
        """Plain ``dict`` of the paths as strings."""
        return {k: str(v) for k, v in asdict(self).items()}


def _plain(value: Any, where: str) -> Any:
    """Python primitives (dict/list/float/int/str/bool/None) from metrics values."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"metrics keys must be strings; {where} has key {key!r}")
            out[key] = _plain(item, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{k}]") for k, item in enumerate(value)]
    if value is None or isinstance(value, (str, bool, np.bool_)):
        return bool(value) if isinstance(value, np.bool_) else value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"metrics value at {where!r} has unsupported type {type(value).__name__}")


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` (strict JSON has no inf/nan)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        shown = ", ".join(_format(v) for v in value[:6])
        return f"[{shown}{', ...' if len(value) > 6 else ''}]"
    return str(value)


def _flatten(section: Dict[str, Any], prefix: str = "") -> List[Tuple[str, str]]:
    """``(dotted name, formatted value)`` rows; ``value``/``stderr`` pairs merged."""
    rows: List[Tuple[str, str]] = []
    if "value" in section and "stderr" in section:
        rows.append((prefix.rstrip(".") or "value", f"{_format(section['value'])} ± {_format(section['stderr'])}"))
        section = {k: v for k, v in section.items() if k not in ("value", "stderr")}
    for key, value in section.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", _format(value)))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _section_table(section: Dict[str, Any]) -> List[str]:
    rows = _flatten(section)
    values = dict(rows)
    floors = {name for name, _ in rows if name.endswith(FLOOR_SUFFIX) and name[: -len(FLOOR_SUFFIX)] in values}
    lines = ["| metric | value | noise floor |", "|---|---|---|"]
    for name, text in rows:
        if name in floors:
            continue
        floor = values.get(name + FLOOR_SUFFIX, "—")
        lines.append(f"| {_cell(name)} | {_cell(text)} | {_cell(floor)} |")
    return lines


def _markdown(title: str, metrics: Dict[str, Any], figures: Dict[str, str], preamble: Optional[str]) -> str:
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble.strip("\n"), ""]
    summary = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    if summary:
        lines += ["## Summary", "", "| metric | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(_format(v))} |" for k, v in summary.items()]
        lines.append("")
    for name, section in metrics.items():
        if isinstance(section, dict):
            lines += [f"## {name}", ""] + _section_table(section) + [""]
    if figures:
        lines += ["## Figures", ""]
        for name, link in figures.items():
            lines += [f"### {name}", "", f"![{name}]({link})", ""]
    return "\n".join(lines)


def write_report(
    out_dir: PathLike,
    metrics: Mapping[str, Any],
    figures: Optional[Mapping[str, PathLike]] = None,
    *,
    title: str = "trade_md evaluation",
    preamble: Optional[str] = None,
) -> ReportFiles:
    """Write ``metrics.json`` and ``report.md`` into ``out_dir`` (created if missing).

    Parameters
    ----------
    out_dir : str or Path
        Report folder.
    metrics : mapping with string keys
        The numbers, e.g. ``{"n_samples": 10000, "T=300 K": {"ramachandran":
        TorsionDivergences(...), "delta_f": FreeEnergyDifference(...), "ess": 812.0}}``;
        see the module docstring for the layout rules.  Units are the
        caller's (state them in the key names, e.g. ``"w1_energy_kJ_per_mol"``).
    figures : mapping of figure name to PNG path, optional
        Existing image files, embedded in order.
    title : str
        Heading of ``report.md``.
    preamble : str, optional
        Markdown placed right under the heading, before every table (e.g. the
        verdict summary of :func:`~trade_md.analysis.summary.summary_markdown`).

    Returns
    -------
    ReportFiles with the two paths.

    Raises
    ------
    TypeError
        For non-string keys or values of unsupported types.
    FileNotFoundError
        If a figure file does not exist.
    """
    out_dir = Path(out_dir)
    plain = _plain(metrics, "")
    if not isinstance(plain, dict):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
    links = {}
    for name, figure in (figures or {}).items():
        figure = Path(figure)
        if not figure.is_file():
            raise FileNotFoundError(f"figure {name!r} does not exist: {figure}")
        links[str(name)] = Path(os.path.relpath(figure.resolve(), out_dir.resolve())).as_posix()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(metrics_json=out_dir / "metrics.json", report_md=out_dir / "report.md")
    atomic_write_text(files.metrics_json, json.dumps(_json_safe(plain), indent=2, allow_nan=False) + "\n")
    atomic_write_text(files.report_md, _markdown(title, plain, links, preamble))
    return files
