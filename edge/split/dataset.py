"""Frames worth splitting: the Panda table scene rendered with pybullet, with labels.

Each frame shows Ark's Panda table scene (``sim_assets/table.urdf``, the Franka Panda of
``pybullet_data`` in a randomly perturbed pose, the floor) from a fixed camera above the
task area, under random lighting and table colour. Most frames hold one object whose
shape (cube, sphere, cylinder), colour (red, green, blue, yellow, each jittered), size,
position and yaw are random; ``empty_fraction`` of them hold none (the frame filter's
negatives). Labels per frame:

========= ======= ===============================================================
key       dtype   meaning
========= ======= ===============================================================
images    uint8   (N, S, S, 3) RGB
present   bool    (N,) an object is in the frame
shape     int64   (N,) index into :data:`~edge.split.config.SHAPES` (-1 if empty)
colour    int64   (N,) index into :data:`~edge.split.config.COLOURS` (-1 if empty)
position  float32 (N, 2) object centre x, y on the table (m, world frame; 0 if empty)
========= ======= ===============================================================

Frame ``i`` of split ``s`` is drawn from ``np.random.default_rng([seed, s, i])`` alone, so a
split is reproducible and a larger dataset starts with the frames of a smaller one. Splits
are stored as ``train.npz``, ``val.npz``, ``test.npz`` (loaded with ``allow_pickle=False``)
and ``dataset.json`` (the data config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.split.config import COLOURS, SHAPES, DataConfig
from edge.split.errors import SplitError

SPLITS = ("train", "val", "test")
#: The task area (x, y in metres) objects are placed in; also the regression's normalisation.
AREA_LOW = np.array([-0.22, -0.17], dtype=np.float32)
AREA_HIGH = np.array([0.12, 0.17], dtype=np.float32)
CAMERA = {"position": [0.32, 0.0, 0.42], "target": [-0.05, 0.0, 0.0], "up": [0.0, 0.0, 1.0], "fov": 48.0}
_BASE_RGB = {"red": (0.85, 0.12, 0.1), "green": (0.15, 0.7, 0.2), "blue": (0.12, 0.25, 0.85), "yellow": (0.9, 0.8, 0.12)}
_TABLES = ((0.55, 0.5, 0.45), (0.7, 0.7, 0.7), (0.35, 0.3, 0.28), (0.6, 0.55, 0.6), (0.45, 0.5, 0.55))
_SIZES = (0.045, 0.055, 0.065)
_HOME = (0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79)


@dataclass
class Split:
    """One split of frames and labels (arrays as in the module docstring)."""

    images: np.ndarray
    present: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    position: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "Split":
        return Split(self.images[index], self.present[index], self.shape[index], self.colour[index], self.position[index])

    def objects(self) -> "Split":
        """The frames that hold an object (what the task networks learn from)."""
        return self.subset(np.flatnonzero(self.present))


class SceneRenderer:
    """A headless pybullet world with the Panda table scene and one body per object shape and size."""

    def __init__(self, size: int) -> None:
        import pybullet as pb

        from envs.config import SIM_ASSETS
        from envs.sim.world import BulletWorld

        self.size = size
        self.pb = pb
        self.world = w = BulletWorld(240)
        c = self.c = w.client
        w.load("plane.urdf", (0.0, 0.0, -0.4))
        self.table = w.load(str(SIM_ASSETS / "table.urdf"), useFixedBase=True)
        self.robot = w.load("franka_panda/panda.urdf", (-0.6, 0.0, 0.0), useFixedBase=True)
        self.bodies: dict[tuple[int, int], int] = {}
        for s, name in enumerate(SHAPES):
            for k, side in enumerate(_SIZES):
                if name == "cube":
                    vs = c.createVisualShape(pb.GEOM_BOX, halfExtents=[side / 2] * 3)
                elif name == "sphere":
                    vs = c.createVisualShape(pb.GEOM_SPHERE, radius=side / 2)
                else:
                    vs = c.createVisualShape(pb.GEOM_CYLINDER, radius=side / 2, length=side)
                self.bodies[s, k] = c.createMultiBody(0.0, -1, vs, [0.0, 0.0, -5.0])
        self.view = c.computeViewMatrix(CAMERA["position"], CAMERA["target"], CAMERA["up"])
        self.proj = c.computeProjectionMatrixFOV(CAMERA["fov"], 1.0, 0.05, 3.0)

    def render(self, rng: np.random.Generator, empty: bool) -> tuple[np.ndarray, int, int, np.ndarray]:
        """One random frame: (rgb, shape index, colour index, xy); shape = colour = -1 when ``empty``."""
        c, pb = self.c, self.pb
        # The arm swings to one side of the task area: in view as a distractor, rarely over the object.
        for j, q in enumerate(_HOME):
            c.resetJointState(self.robot, j, q + rng.uniform(-0.25, 0.25))
        c.resetJointState(self.robot, 0, float(rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.4)))
        table = np.clip(np.array(_TABLES[rng.integers(len(_TABLES))]) + rng.uniform(-0.05, 0.05, 3), 0, 1)
        c.changeVisualShape(self.table, -1, rgbaColor=[*table.tolist(), 1.0])
        for body in self.bodies.values():
            c.resetBasePositionAndOrientation(body, [0.0, 0.0, -5.0], [0, 0, 0, 1])
        shape = colour = -1
        xy = np.zeros(2, np.float32)
        if not empty:
            shape, colour, k = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(len(_SIZES)))
            xy = rng.uniform(AREA_LOW, AREA_HIGH).astype(np.float32)
            body = self.bodies[shape, k]
            yaw = rng.uniform(-np.pi, np.pi)
            c.resetBasePositionAndOrientation(body, [float(xy[0]), float(xy[1]), _SIZES[k] / 2],
                                              c.getQuaternionFromEuler([0.0, 0.0, yaw]))
            rgb = np.clip(np.array(_BASE_RGB[COLOURS[colour]]) + rng.uniform(-0.08, 0.08, 3), 0, 1)
            c.changeVisualShape(body, -1, rgbaColor=[*rgb.tolist(), 1.0])
        light = {"lightDirection": [float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)), float(rng.uniform(0.8, 2.0))],
                 "lightColor": np.clip(1.0 - rng.uniform(0, 0.25, 3), 0, 1).tolist(),
                 "lightAmbientCoeff": float(rng.uniform(0.4, 0.8)), "lightDiffuseCoeff": float(rng.uniform(0.3, 0.7)),
                 "lightSpecularCoeff": 0.05}
        _, _, rgba, _, _ = c.getCameraImage(self.size, self.size, self.view, self.proj, renderer=pb.ER_TINY_RENDERER,
                                            flags=pb.ER_NO_SEGMENTATION_MASK, shadow=0, **light)
        img = np.asarray(rgba, dtype=np.uint8).reshape(self.size, self.size, 4)[:, :, :3].copy()
        return img, shape, colour, xy

    def close(self) -> None:
        self.world.close()


def frames(cfg: DataConfig, split: str, count: int, start: int = 0,
           renderer: SceneRenderer | None = None) -> Iterator[tuple[np.ndarray, int, int, np.ndarray]]:
    """Frames ``start .. start+count-1`` of ``split`` (deterministic in ``cfg.seed``, split and index)."""
    if split not in SPLITS:
        raise SplitError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    own = renderer is None
    r = renderer or SceneRenderer(cfg.size)
    try:
        for i in range(start, start + count):
            rng = np.random.default_rng([cfg.seed, SPLITS.index(split), i])
            empty = bool(rng.random() < cfg.empty_fraction)
            yield r.render(rng, empty)
    finally:
        if own:
            r.close()


def generate(cfg: DataConfig, split: str, progress: bool = True) -> Split:
    """Render a whole split (``n_train``/``n_val``/``n_test`` frames) with a progress bar."""
    from tqdm import tqdm

    n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[split]
    images = np.empty((n, cfg.size, cfg.size, 3), np.uint8)
    shape = np.empty(n, np.int64)
    colour = np.empty(n, np.int64)
    pos = np.empty((n, 2), np.float32)
    it = frames(cfg, split, n)
    for i, (img, s, c, xy) in enumerate(tqdm(it, total=n, desc=f"render {split}", unit="frame", disable=not progress)):
        images[i], shape[i], colour[i], pos[i] = img, s, c, xy
    return Split(images, shape >= 0, shape, colour, pos)


def write(cfg: DataConfig, out: str | Path, progress: bool = True) -> Path:
    """Render all three splits into ``out`` (npz per split and dataset.json); returns ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        s = generate(cfg, split, progress)
        np.savez_compressed(d / f"{split}.npz", images=s.images, present=s.present, shape=s.shape,
                            colour=s.colour, position=s.position)
    (d / "dataset.json").write_text(json.dumps({"data": cfg.model_dump(mode="json"), "shapes": SHAPES,
                                                "colours": COLOURS, "camera": CAMERA,
                                                "area": [AREA_LOW.tolist(), AREA_HIGH.tolist()]}, indent=2))
    return d


def read(directory: str | Path, split: str) -> Split:
    """Load one split written by :func:`write` (no pickle); SplitError if missing or malformed."""
    p = Path(directory) / f"{split}.npz"
    if not p.is_file():
        raise SplitError(f"{p}: no such file (make the dataset with `ark split data --out {directory}`)")
    try:
        with np.load(p, allow_pickle=False) as z:
            s = Split(z["images"], z["present"].astype(bool), z["shape"], z["colour"], z["position"])
    except (KeyError, ValueError, OSError) as exc:
        raise SplitError(f"{p}: not a split dataset file ({exc})") from None
    if s.images.ndim != 4 or s.images.shape[-1] != 3 or s.images.dtype != np.uint8:
        raise SplitError(f"{p}: images must be (N, S, S, 3) uint8, got {s.images.shape} {s.images.dtype}")
    return s


def data_config(directory: str | Path) -> DataConfig:
    """The data config a dataset folder was written with."""
    p = Path(directory) / "dataset.json"
    try:
        return DataConfig.model_validate(json.loads(p.read_text())["data"])
    except FileNotFoundError:
        raise SplitError(f"{p}: no such file (make the dataset with `ark split data --out {directory}`)") from None
    except (KeyError, ValueError) as exc:
        raise SplitError(f"{p}: not a split dataset description ({exc})") from None


def normalise_position(xy: np.ndarray) -> np.ndarray:
    """World x, y (m) to [-1, 1] over the task area."""
    return (2.0 * (xy - AREA_LOW) / (AREA_HIGH - AREA_LOW) - 1.0).astype(np.float32)


def denormalise_position(p: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise_position`."""
    return ((np.asarray(p, np.float32) + 1.0) / 2.0 * (AREA_HIGH - AREA_LOW) + AREA_LOW).astype(np.float32)
