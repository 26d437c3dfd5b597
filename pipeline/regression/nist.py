"""Reader for the NIST Statistical Reference Datasets (StRD), for tests and benchmarks.

Nonlinear problems come in NIST's original `.dat` format (model text, two start vectors, certified values and
standard deviations, certified residual sum of squares, data). `load_nonlinear(name)` parses one into a
`NonlinearProblem` whose `model` is the problem's function written by hand with torch ops, `f(x, b1, ..., bp)`.
Nelson's response is log(y): its `y` holds log(y) so that `y ≈ model(x, *b)` holds for every problem; its x is
(2, n) (x1, x2). Linear problems are JSON files of NIST's data and certified values, keys model, degree,
intercept, x (or X, a design without the intercept column), y, beta, sd, rsd, r2, rss, difficulty (`load_linear`).

The data directory is $NIST_STRD_DIR when set and present (the test suite points it at the copy it ships), else
`shared/data/nist_strd` in or beside the repository.
`lre(estimate, certified)` is the log relative error NIST scores with: -log10(|est - cert|/|cert|), capped at 11
(-log10(|est|) where the certified value is 0).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "LINEAR_NAMES",
    "NIST_MODELS",
    "NONLINEAR_NAMES",
    "LinearProblem",
    "NonlinearProblem",
    "data_dir",
    "load_linear",
    "load_nonlinear",
    "lre",
]

_PI = math.pi


def _gauss(x, b1, b2, b3, b4, b5, b6, b7, b8):
    return (b1 * torch.exp(-b2 * x) + b3 * torch.exp(-((x - b4) ** 2) / b5**2)
            + b6 * torch.exp(-((x - b7) ** 2) / b8**2))


def _lanczos(x, b1, b2, b3, b4, b5, b6):
    return b1 * torch.exp(-b2 * x) + b3 * torch.exp(-b4 * x) + b5 * torch.exp(-b6 * x)


def _chwirut(x, b1, b2, b3):
    return torch.exp(-b1 * x) / (b2 + b3 * x)


def _misra1a(x, b1, b2):
    return b1 * (1 - torch.exp(-b2 * x))


def _rat3(x, b1, b2, b3, b4, b5, b6, b7):
    return (b1 + b2 * x + b3 * x**2 + b4 * x**3) / (1 + b5 * x + b6 * x**2 + b7 * x**3)


def _enso(x, b1, b2, b3, b4, b5, b6, b7, b8, b9):
    w = 2 * _PI * x
    return (b1 + b2 * torch.cos(w / 12) + b3 * torch.sin(w / 12) + b5 * torch.cos(w / b4)
            + b6 * torch.sin(w / b4) + b8 * torch.cos(w / b7) + b9 * torch.sin(w / b7))


# The 27 models, transcribed by hand from the .dat files' "Model:" sections.
NIST_MODELS = {
    "Misra1a": _misra1a,
    "Chwirut2": _chwirut,
    "Chwirut1": _chwirut,
    "Lanczos3": _lanczos,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "DanWood": lambda x, b1, b2: b1 * x**b2,
    "Misra1b": lambda x, b1, b2: b1 * (1 - (1 + b2 * x / 2) ** (-2)),
    "Kirby2": lambda x, b1, b2, b3, b4, b5: (b1 + b2 * x + b3 * x**2) / (1 + b4 * x + b5 * x**2),
    "Hahn1": _rat3,
    "Nelson": lambda x, b1, b2, b3: b1 - b2 * x[0] * torch.exp(-b3 * x[1]),
    "MGH17": lambda x, b1, b2, b3, b4, b5: b1 + b2 * torch.exp(-x * b4) + b3 * torch.exp(-x * b5),
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Gauss3": _gauss,
    "Misra1c": lambda x, b1, b2: b1 * (1 - (1 + 2 * b2 * x) ** (-0.5)),
    "Misra1d": lambda x, b1, b2: b1 * b2 * x * ((1 + b2 * x) ** (-1)),
    "Roszman1": lambda x, b1, b2, b3, b4: b1 - b2 * x - torch.arctan(b3 / (x - b4)) / _PI,
    "ENSO": _enso,
    "MGH09": lambda x, b1, b2, b3, b4: b1 * (x**2 + x * b2) / (x**2 + x * b3 + b4),
    "Thurber": _rat3,
    "BoxBOD": lambda x, b1, b2: b1 * (1 - torch.exp(-b2 * x)),
    "Rat42": lambda x, b1, b2, b3: b1 / (1 + torch.exp(b2 - b3 * x)),
    "MGH10": lambda x, b1, b2, b3: b1 * torch.exp(b2 / (x + b3)),
    "Eckerle4": lambda x, b1, b2, b3: (b1 / b2) * torch.exp(-0.5 * ((x - b3) / b2) ** 2),
    "Rat43": lambda x, b1, b2, b3, b4: b1 / ((1 + torch.exp(b2 - b3 * x)) ** (1 / b4)),
    "Bennett5": lambda x, b1, b2, b3: b1 * (b2 + x) ** (-1 / b3),
}
NONLINEAR_NAMES = tuple(NIST_MODELS)
LINEAR_NAMES = ("Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley",
                "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5")


@dataclass(frozen=True)
class NonlinearProblem:
    name: str
    model_text: str
    model: object  # f(x, *params) with torch ops
    x: np.ndarray  # (n,) or (k, n)
    y: np.ndarray  # (n,); log(y) for Nelson
    start1: np.ndarray
    start2: np.ndarray
    certified: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float
    certified_rsd: float
    difficulty: str

    @property
    def n_params(self) -> int:
        return len(self.certified)


@dataclass(frozen=True)
class LinearProblem:
    name: str
    model_text: str
    degree: int | None  # polynomial degree, None for a general X (Longley)
    intercept: bool
    x: np.ndarray  # (n,) predictor of a polynomial model, or (n, k) design without the intercept column
    y: np.ndarray
    certified: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float
    certified_rsd: float
    certified_r2: float
    difficulty: str


def data_dir() -> Path:
    """Directory holding linear/ and nonlinear/; FileNotFoundError if none of the known places has it."""
    env = os.environ.get("NIST_STRD_DIR")
    repo = Path(__file__).resolve().parents[2]
    candidates = ([Path(env)] if env else []) + [
        repo / "shared" / "data" / "nist_strd", repo.parent / "shared" / "data" / "nist_strd"]
    for c in candidates:
        if (c / "nonlinear").is_dir() or (c / "linear").is_dir():
            return c
    raise FileNotFoundError(
        "NIST StRD data not found; set NIST_STRD_DIR or put it at " + ", ".join(map(str, candidates)))


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][-+]?\d+)?"


def _floats(text: str) -> list[float]:
    return [float(t.replace("D", "E").replace("d", "e")) for t in re.findall(_NUM, text)]


def _parse_dat(text: str):
    lines = text.splitlines()
    model = re.search(r"^\s*(y|log\[y\])\s*=\s*(.+?)\s*\+\s*e\s*$", text, re.MULTILINE | re.DOTALL)
    model_text = " ".join(f"{model.group(1)} = {model.group(2)}".split()) if model else ""
    rows = [m for m in (re.match(r"^\s*b(\d+)\s*=\s*(.*)$", ln) for ln in lines) if m]
    vals = np.array([_floats(m.group(2))[:4] for m in rows], dtype=np.float64)
    rss = _floats(re.search(r"Residual Sum of Squares:\s*(.*)", text).group(1))[0]
    rsd = _floats(re.search(r"Residual Standard Deviation:\s*(.*)", text).group(1))[0]
    difficulty = re.search(r"(Lower|Average|Higher) Level of Difficulty", text).group(1)
    head = next(i for i, ln in enumerate(lines) if re.match(r"^\s*Data:\s+y\b", ln))
    cols = lines[head].split()[1:]
    data = np.array([_floats(ln) for ln in lines[head + 1:] if ln.strip()], dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(cols):
        raise ValueError(f"malformed data block: columns {cols}, shape {data.shape}")
    return model_text, vals, rss, rsd, difficulty, data


def load_nonlinear(name: str) -> NonlinearProblem:
    """Parse nonlinear/<name>.dat (name as in NONLINEAR_NAMES, e.g. "MGH09")."""
    if name not in NIST_MODELS:
        raise KeyError(f"unknown NIST nonlinear problem {name!r}; known: {', '.join(NONLINEAR_NAMES)}")
    text = (data_dir() / "nonlinear" / f"{name}.dat").read_text()
    model_text, vals, rss, rsd, difficulty, data = _parse_dat(text)
    y = data[:, 0]
    x = data[:, 1] if data.shape[1] == 2 else np.ascontiguousarray(data[:, 1:].T)
    if model_text.startswith("log[y]"):
        y = np.log(y)
    return NonlinearProblem(
        name=name, model_text=model_text, model=NIST_MODELS[name], x=x, y=y,
        start1=vals[:, 0].copy(), start2=vals[:, 1].copy(), certified=vals[:, 2].copy(),
        certified_sd=vals[:, 3].copy(), certified_rss=rss, certified_rsd=rsd, difficulty=difficulty,
    )


def load_linear(name: str) -> LinearProblem:
    """Read linear/<name>.json (name as in LINEAR_NAMES)."""
    d = json.loads((data_dir() / "linear" / f"{name}.json").read_text())
    x = np.asarray(d["X"] if "X" in d else d["x"], dtype=np.float64)
    return LinearProblem(
        name=d.get("name", name), model_text=d["model"], degree=d.get("degree") if "X" not in d else None,
        intercept=bool(d["intercept"]), x=x, y=np.asarray(d["y"], dtype=np.float64),
        certified=np.asarray(d["beta"], dtype=np.float64), certified_sd=np.asarray(d["sd"], dtype=np.float64),
        certified_rss=float(d["rss"]), certified_rsd=float(d["rsd"]), certified_r2=float(d["r2"]),
        difficulty=d.get("difficulty", ""),
    )


def lre(estimate, certified, cap: float = 11.0) -> np.ndarray:
    """Log relative error per element, in [0, cap]; non-finite estimates score 0."""
    est = np.asarray(estimate.detach().cpu() if isinstance(estimate, torch.Tensor) else estimate, dtype=np.float64)
    cert = np.asarray(certified, dtype=np.float64)
    est, cert = np.broadcast_arrays(est, cert)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(cert == 0, np.abs(est), np.abs(est - cert) / np.abs(cert))
        out = -np.log10(err)
    out = np.where(np.isfinite(est), np.nan_to_num(out, nan=0.0, posinf=cap), 0.0)
    return np.clip(out, 0.0, cap)
