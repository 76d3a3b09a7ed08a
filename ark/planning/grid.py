"""2-D grid planning for a wheeled base: an occupancy grid and A* over it.

API (stable; ``ark.examples.navigate_home`` and SLAM use it)::

    from ark.planning.grid import OccupancyGrid, AStarPlanner

    grid = OccupancyGrid(occupied, resolution=0.1, origin=(-5.0, -5.0))  # occupied[row=y, col=x], bool
    grid = OccupancyGrid.from_obstacles(rows, bounds=(-5, -5, 5, 5), resolution=0.1)  # HuskyNavigate rows
    grid = OccupancyGrid.from_probabilities(p, resolution, origin, threshold=0.65, unknown_free=True)
    planner = AStarPlanner(grid, robot_radius=0.45)        # inflates obstacles by the robot radius
    path = planner.plan(start_xy, goal_xy)                  # (N, 2) world waypoints, start .. goal

``plan`` raises :class:`~ark.planning.errors.StateInCollision` when the start or goal cell is
occupied after inflation, :class:`~ark.planning.errors.InvalidRequest` when either lies outside
the map or is not two finite numbers, and :class:`~ark.planning.errors.NoPathFound` when no path
exists or ``max_expansions`` is exhausted. Cells are 8-connected; a diagonal move never cuts the
corner of an occupied cell. The returned path is pruned to the corners where it turns
(line-of-sight simplification on the inflated grid), so a pure-pursuit follower can track it.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from ark.planning.errors import InvalidRequest, NoPathFound, StateInCollision

BOX, CYLINDER = 0, 1  # obstacle kinds of ark/HuskyNavigate-v0 scene rows


@dataclass
class OccupancyGrid:
    """A boolean occupancy map: ``occupied[i, j]`` covers x in origin_x + [j, j+1)*res, y in origin_y + [i, i+1)*res."""

    occupied: np.ndarray
    resolution: float
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        occ = np.asarray(self.occupied)
        if occ.ndim != 2 or occ.size == 0:
            raise InvalidRequest(f"occupancy grid must be a non-empty 2-D array, got shape {occ.shape}")
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise InvalidRequest(f"grid resolution must be a positive number of metres, got {self.resolution}")
        self.occupied = occ.astype(bool)
        self.origin = (float(self.origin[0]), float(self.origin[1]))

    @property
    def shape(self) -> tuple[int, int]:
        return self.occupied.shape  # type: ignore[return-value]

    @classmethod
    def from_probabilities(cls, prob: np.ndarray, resolution: float, origin=(0.0, 0.0), threshold: float = 0.65,
                           unknown_free: bool = True, unknown: float = 0.5) -> "OccupancyGrid":
        """From occupancy probabilities in [0, 1] (e.g. a SLAM map); cells equal to ``unknown`` count as free
        when ``unknown_free`` (explore optimistically), else as occupied."""
        p = np.asarray(prob, dtype=np.float64)
        occ = p >= threshold
        if not unknown_free:
            occ |= np.isclose(p, unknown)
        return cls(occ, resolution, origin)

    @classmethod
    def from_obstacles(cls, rows: np.ndarray, bounds=(-5.0, -5.0, 5.0, 5.0), resolution: float = 0.1) -> "OccupancyGrid":
        """Rasterise HuskyNavigate obstacle rows ``[kind, x, y, yaw, sx, sy, h]`` (kind 0 box, 1 cylinder)
        inside ``bounds = (xmin, ymin, xmax, ymax)``; a cell is occupied if its centre is inside a shape."""
        xmin, ymin, xmax, ymax = (float(b) for b in bounds)
        if not (xmax > xmin and ymax > ymin):
            raise InvalidRequest(f"grid bounds must be (xmin, ymin, xmax, ymax) with max > min, got {bounds}")
        nx = int(math.ceil((xmax - xmin) / resolution))
        ny = int(math.ceil((ymax - ymin) / resolution))
        xs = xmin + (np.arange(nx) + 0.5) * resolution
        ys = ymin + (np.arange(ny) + 0.5) * resolution
        gx, gy = np.meshgrid(xs, ys)
        occ = np.zeros((ny, nx), dtype=bool)
        arr = np.asarray(rows, dtype=np.float64)
        if arr.size and (arr.ndim != 2 or arr.shape[1] != 7):
            raise InvalidRequest(f"obstacle rows must have shape (N, 7) [kind, x, y, yaw, sx, sy, h], got {arr.shape}")
        for kind, x, y, yaw, sx, sy, _h in arr.reshape(-1, 7):
            dx, dy = gx - x, gy - y
            if int(kind) == CYLINDER:
                occ |= dx * dx + dy * dy <= (sx / 2.0) ** 2
            else:
                c, s = math.cos(yaw), math.sin(yaw)
                u, v = c * dx + s * dy, -s * dx + c * dy
                occ |= (np.abs(u) <= sx / 2.0) & (np.abs(v) <= sy / 2.0)
        return cls(occ, resolution, (xmin, ymin))

    def world_to_cell(self, xy) -> tuple[int, int]:
        """(row, col) of the cell containing world point ``xy`` (may lie outside the grid)."""
        return (int(math.floor((xy[1] - self.origin[1]) / self.resolution)),
                int(math.floor((xy[0] - self.origin[0]) / self.resolution)))

    def cell_to_world(self, cell) -> np.ndarray:
        """World (x, y) of the centre of cell (row, col)."""
        return np.array([self.origin[0] + (cell[1] + 0.5) * self.resolution,
                         self.origin[1] + (cell[0] + 0.5) * self.resolution])

    def inside(self, cell) -> bool:
        return 0 <= cell[0] < self.shape[0] and 0 <= cell[1] < self.shape[1]

    def inflated(self, radius: float) -> "OccupancyGrid":
        """A copy with every occupied cell grown by a disc of ``radius`` metres (the robot's footprint)."""
        r = int(math.ceil(radius / self.resolution))
        if r <= 0:
            return OccupancyGrid(self.occupied.copy(), self.resolution, self.origin)
        occ = self.occupied
        out = occ.copy()
        h, w = occ.shape
        for di in range(-r, r + 1):
            for dj in range(-r, r + 1):
                if di * di + dj * dj > r * r:
                    continue
                src = occ[max(0, -di):h - max(0, di), max(0, -dj):w - max(0, dj)]
                out[max(0, di):h - max(0, -di), max(0, dj):w - max(0, -dj)] |= src
        return OccupancyGrid(out, self.resolution, self.origin)


_MOVES = [(-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0),
          (-1, -1, math.sqrt(2)), (-1, 1, math.sqrt(2)), (1, -1, math.sqrt(2)), (1, 1, math.sqrt(2))]


class AStarPlanner:
    """A* on an 8-connected occupancy grid for a circular robot of ``robot_radius`` metres.

    ``max_expansions`` bounds the search (the budget); ``simplify`` prunes the cell path to the
    corners where line of sight breaks. See the module docstring for the API and errors.
    """

    def __init__(self, grid: OccupancyGrid, robot_radius: float = 0.0, max_expansions: int = 1_000_000,
                 simplify: bool = True) -> None:
        self.grid = grid
        self.robot_radius = float(robot_radius)
        self.inflated = grid.inflated(robot_radius)
        self.max_expansions = int(max_expansions)
        self.simplify = simplify
        self.expansions = 0

    def _cell(self, xy, what: str) -> tuple[int, int]:
        p = np.asarray(xy, dtype=np.float64).reshape(-1)
        if p.shape != (2,) or not np.all(np.isfinite(p)):
            raise InvalidRequest(f"{what} must be 2 finite numbers (x, y) in metres, got {np.asarray(xy).tolist()}")
        cell = self.grid.world_to_cell(p)
        if not self.grid.inside(cell):
            g = self.grid
            hi = (g.origin[0] + g.shape[1] * g.resolution, g.origin[1] + g.shape[0] * g.resolution)
            raise InvalidRequest(f"{what} ({p[0]:.2f}, {p[1]:.2f}) is outside the map "
                                 f"[{g.origin[0]:.2f}, {hi[0]:.2f}] x [{g.origin[1]:.2f}, {hi[1]:.2f}]")
        if self.inflated.occupied[cell]:
            raise StateInCollision(f"{what} ({p[0]:.2f}, {p[1]:.2f}) is within {self.robot_radius:.2f} m "
                                   f"of an obstacle (occupied after inflation)")
        return cell

    def plan(self, start, goal) -> np.ndarray:
        """World waypoints ``(N, 2)`` from ``start`` to ``goal`` (both exactly included)."""
        s, g = self._cell(start, "start"), self._cell(goal, "goal")
        occ = self.inflated.occupied
        h, w = occ.shape
        gr, gc = g

        def heuristic(r: int, c: int) -> float:  # octile distance: admissible and consistent
            dr, dc = abs(r - gr), abs(c - gc)
            return (dr + dc) + (math.sqrt(2) - 2.0) * min(dr, dc)

        cost = {s: 0.0}
        parent: dict[tuple[int, int], tuple[int, int]] = {}
        heap = [(heuristic(*s), 0.0, s)]
        closed = set()
        self.expansions = 0
        while heap:
            _, gcost, cur = heapq.heappop(heap)
            if cur in closed:
                continue
            if cur == g:
                break
            closed.add(cur)
            self.expansions += 1
            if self.expansions > self.max_expansions:
                raise NoPathFound(f"no path within budget: A* expanded {self.max_expansions} cells without "
                                  f"reaching the goal")
            r, c = cur
            for dr, dc, step in _MOVES:
                nr, nc = r + dr, c + dc
                if not (0 <= nr < h and 0 <= nc < w) or occ[nr, nc]:
                    continue
                if dr and dc and (occ[r + dr, c] or occ[r, c + dc]):
                    continue  # no corner cutting
                ng = gcost + step
                if ng < cost.get((nr, nc), math.inf):
                    cost[(nr, nc)] = ng
                    parent[(nr, nc)] = cur
                    heapq.heappush(heap, (ng + heuristic(nr, nc), ng, (nr, nc)))
        else:
            raise NoPathFound("no path: the goal is not connected to the start in the (inflated) map")
        cells = [g]
        while cells[-1] != s:
            cells.append(parent[cells[-1]])
        cells.reverse()
        if self.simplify:
            cells = self._prune(cells)
        pts = [self.grid.cell_to_world(c) for c in cells]
        pts[0] = np.asarray(start, dtype=np.float64).reshape(2)
        pts[-1] = np.asarray(goal, dtype=np.float64).reshape(2)
        return np.array(pts)

    def line_free(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        """Whether the straight segment between cell centres a and b crosses only free cells (supercover)."""
        occ = self.inflated.occupied
        (r0, c0), (r1, c1) = a, b
        # Samples every quarter cell along the longer axis; every point of the segment is within
        # an eighth of a cell (per axis) of a sample, so checking the cells within that margin of
        # each sample covers every cell the segment touches (conservative, never optimistic).
        n = int(math.ceil(max(abs(r1 - r0), abs(c1 - c0)) * 4)) + 1
        for t in np.linspace(0.0, 1.0, n + 1):
            r, c = r0 + (r1 - r0) * t, c0 + (c1 - c0) * t
            for rr in {int(math.floor(r + 0.5 - 0.13)), int(math.floor(r + 0.5 + 0.13))}:
                for cc in {int(math.floor(c + 0.5 - 0.13)), int(math.floor(c + 0.5 + 0.13))}:
                    if occ[rr, cc]:
                        return False
        return True

    def _prune(self, cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out = [cells[0]]
        i = 0
        while i < len(cells) - 1:
            j = len(cells) - 1
            while j > i + 1 and not self.line_free(cells[i], cells[j]):
                j -= 1
            out.append(cells[j])
            i = j
        return out


def path_length(path: np.ndarray) -> float:
    """Total Euclidean length of a polyline ``(N, D)``."""
    p = np.asarray(path, dtype=np.float64)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0
