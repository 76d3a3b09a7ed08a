"""Graph-based 2-D lidar SLAM: scan-matching front end, pose graph with loop closures, log-odds map.

    from ark.slam import LidarSlam, SlamConfig

    slam = LidarSlam(SlamConfig(resolution=0.05), initial_pose=(0.0, 0.0, 0.0))
    for scan, odom in stream:                  # ark.LaserScan, odometry pose (x, y, yaw) or None
        pose = slam.update(scan, odom)          # map-frame pose of the base after this scan
    slam.trajectory()                           # (N, 3): every update's pose, after loop closures
    slam.grid.probabilities()                   # occupancy map (row = y, col = x)

**Front end.** Each scan is predicted with the odometry increment since the previous scan,
then aligned by point-to-line ICP to a local submap (the points of the last few keyframes).
A match that is poor or jumps far from the prediction is ignored and the prediction kept.
**Keyframes** are taken every ``keyframe_distance`` metres or ``keyframe_angle`` radians;
consecutive keyframes are linked by the scan-matched relative pose (which already fused the
odometry prediction), or by the odometry increment when the match failed. **Loop closures**:
a new keyframe near (in the current estimate) an older one at least ``loop_min_separation``
keyframes back is matched against that keyframe's neighbourhood by correlative search on a
likelihood field and refined by ICP; an accepted
match becomes a robust edge, the graph is optimised (``scipy.optimize.least_squares``) and
the map rebuilt from the keyframe scans at their corrected poses.

Frames: the map frame is the frame of ``initial_pose`` (give the robot's known start pose to
map in world coordinates); the lidar is assumed at the base origin, beams counter-clockwise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ark.errors import ConfigError
from ark.messages import LaserScan
from ark.slam.errors import OdometryError, ScanError
from ark.slam.geometry import between, compose, scan_points, transform_points
from ark.slam.occupancy import LogOddsGrid
from ark.slam.pose_graph import PoseGraph
from ark.slam.scan_matching import LikelihoodField, Reference, correlative_match, icp


class SlamConfig(BaseModel):
    """Tuning of :class:`LidarSlam` (metres, radians). Every field has a working default."""

    model_config = ConfigDict(extra="forbid")

    resolution: float = Field(0.05, gt=0, le=1.0, description="map cell size")
    map_size: tuple[float, float] = Field((20.0, 20.0), description="map width, height")
    map_origin: tuple[float, float] | None = Field(None, description="map-frame corner (x, y) of the map's first "
                                                                      "cell (default: the map is centred on the start)")
    max_range: float | None = Field(None, gt=0, description="ignore returns beyond this (default: the scan's range_max)")
    range_margin: float = Field(0.05, ge=0, description="readings within this of range_max count as no return")
    keyframe_distance: float = Field(0.3, gt=0)
    keyframe_angle: float = Field(0.3, gt=0)
    submap_keyframes: int = Field(8, ge=1, description="keyframes in the local map the front end matches against")
    match_points: int = Field(180, ge=10, description="scan points the front end matches (evenly thinned)")
    match_min_inliers: float = Field(0.5, ge=0, le=1)
    match_max_rmse: float = Field(0.08, gt=0)
    match_max_jump: float = Field(0.5, gt=0, description="largest correction of the odometry prediction accepted")
    sigma_match: tuple[float, float] = Field((0.01, 0.005), description="std of a scan-matched keyframe step (xy, yaw)")
    sigma_odometry: tuple[float, float] = Field((0.1, 0.05), description="odometry std per metre travelled (xy, yaw)")
    loop_closure: bool = True
    loop_radius: float = Field(2.0, gt=0)
    loop_min_separation: int = Field(15, ge=2, description="keyframes between a keyframe and its loop candidates")
    loop_window: tuple[float, float] = Field((0.8, 0.35), description="correlative search half-window (xy, yaw)")
    loop_min_score: float = Field(0.55, ge=0, le=1)
    loop_min_inliers: float = Field(0.6, ge=0, le=1)
    loop_max_rmse: float = Field(0.05, gt=0)
    sigma_loop: tuple[float, float] = Field((0.05, 0.02), description="std of a loop-closure edge (xy, yaw)")
    loop_cooldown: int = Field(5, ge=0, description="keyframes without loop search after a closure")

    @classmethod
    def load(cls, source: str | Path | dict | None) -> "SlamConfig":
        """From a YAML file, a mapping or None (defaults); a bad value raises ConfigError naming file and key."""
        where = "SlamConfig"
        data: Any = source or {}
        if isinstance(source, (str, Path)):
            where = str(source)
            try:
                data = yaml.safe_load(Path(source).read_text()) or {}
            except FileNotFoundError:
                raise ConfigError(f"{where}: no such file") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of SLAM settings, got {type(data).__name__}")
        try:
            return cls(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{where}: key {key!r}: {err['msg']} (got {err.get('input')!r})") from None


def scan_angles(scan: LaserScan) -> np.ndarray:
    """Beam angles (rad) of a validated scan."""
    return scan.angle_min + np.arange(len(scan.ranges)) * scan.angle_increment


def check_scan(scan: LaserScan) -> None:
    """Raise :class:`ScanError` with one line if ``scan`` cannot be used (see :mod:`ark.slam`)."""
    r = np.asarray(scan.ranges)
    if r.ndim != 1 or len(r) < 3:
        raise ScanError(f"scan needs at least 3 ranges in a 1-D array, got shape {tuple(r.shape)}")
    inc = float(scan.angle_increment)
    if not (math.isfinite(inc) and inc != 0.0 and math.isfinite(scan.angle_min) and math.isfinite(scan.angle_max)):
        raise ScanError(f"scan angles must be finite with angle_increment != 0, got angle_min={scan.angle_min}, "
                        f"angle_max={scan.angle_max}, angle_increment={inc}")
    beams = int(round((scan.angle_max - scan.angle_min) / inc)) + 1
    if beams != len(r):
        raise ScanError(f"scan has {len(r)} ranges but angle_min/angle_max/angle_increment describe {beams} beams")
    if not (math.isfinite(scan.range_max) and scan.range_max > scan.range_min >= 0.0):
        raise ScanError(f"scan range limits must satisfy 0 <= range_min < range_max (finite), got "
                        f"range_min={scan.range_min}, range_max={scan.range_max}")
    nan = int(np.isnan(r).sum())
    if nan:
        raise ScanError(f"scan has {nan} NaN range(s) of {len(r)} (report no return as +inf or range_max)")
    if np.any(r < 0):
        raise ScanError(f"scan has {int((r < 0).sum())} negative range(s)")


def check_odometry(odom) -> np.ndarray:
    """An odometry pose as (x, y, yaw); raises :class:`OdometryError` with one line."""
    o = np.asarray(odom, dtype=np.float64).reshape(-1)
    if o.shape != (3,) or not np.all(np.isfinite(o)):
        raise OdometryError(f"odometry must be 3 finite numbers (x, y, yaw), got {np.asarray(odom).tolist()}")
    return o


class LidarSlam:
    """2-D lidar SLAM; see the module docstring."""

    def __init__(self, config: SlamConfig | dict | None = None, initial_pose=(0.0, 0.0, 0.0)) -> None:
        self.config = config if isinstance(config, SlamConfig) else SlamConfig.load(config)
        c = self.config
        self.initial_pose = check_odometry(initial_pose)
        w, h = (int(math.ceil(s / c.resolution)) for s in c.map_size)
        origin = c.map_origin or (self.initial_pose[0] - w * c.resolution / 2.0,
                                  self.initial_pose[1] - h * c.resolution / 2.0)
        self._grid = LogOddsGrid(w, h, c.resolution, origin)
        self._stale = False  # keyframes moved (loop closure) since the map was last built
        self._cooldown = 0
        self.graph = PoseGraph()
        self.pose = self.initial_pose.copy()
        self.updates = 0
        self.match_failures = 0
        self.loop_attempts = 0
        self.loops_rejected = 0
        self._kf_scans: list[tuple[np.ndarray, np.ndarray, float, float]] = []  # ranges, angles, rmin, rmax
        self._kf_points: list[np.ndarray] = []  # sensor-frame hit points per keyframe
        self._kf_odom: list[np.ndarray | None] = []
        self._track: list[tuple[int, np.ndarray]] = []  # per update: (keyframe, pose relative to it)
        self._prev_odom: np.ndarray | None = None
        self._submap: Reference | None = None

    # -- public API ---------------------------------------------------------------------
    @property
    def keyframes(self) -> int:
        return len(self.graph.nodes)

    @property
    def loop_closures(self) -> int:
        return self.graph.loop_closures

    def keyframe_poses(self) -> np.ndarray:
        return self.graph.poses()

    def trajectory(self) -> np.ndarray:
        """(N, 3) map-frame pose after every update, re-expressed through the optimised keyframes."""
        nodes = self.graph.nodes
        return np.array([compose(nodes[k], rel) for k, rel in self._track]).reshape(-1, 3)

    def update(self, scan: LaserScan, odom=None) -> np.ndarray:
        """Process one scan (and the odometry pose at its time, any fixed frame); returns the map-frame pose.

        Raises :class:`ScanError` / :class:`OdometryError` on malformed input, leaving the state unchanged.
        """
        check_scan(scan)
        odom_pose = None if odom is None else check_odometry(odom)
        c = self.config
        ranges = np.asarray(scan.ranges, dtype=np.float64)
        angles = scan_angles(scan)
        rmax = min(float(scan.range_max), c.max_range) if c.max_range else float(scan.range_max)
        rmax = max(rmax - c.range_margin, float(scan.range_min) + 1e-3)
        rmin = float(scan.range_min)
        # Readings near the limit are "no return" even when sensor noise pulled them below it:
        # kept as hits they would form a ring of phantom points that moves with the robot.
        ranges = np.where(ranges >= rmax, np.inf, ranges)
        points = scan_points(ranges, angles, rmin, rmax)
        self.updates += 1

        if not self.graph.nodes:
            self._prev_odom = odom_pose
            self._add_keyframe(self.pose, ranges, angles, rmin, rmax, points, odom_pose, None, True)
            return self.pose.copy()

        predicted = self.pose
        if odom_pose is not None and self._prev_odom is not None:
            predicted = compose(self.pose, between(self._prev_odom, odom_pose))
        self._prev_odom = odom_pose if odom_pose is not None else self._prev_odom
        matched = False
        pose = predicted
        if self._submap is not None and len(points) >= 10:
            sub = points[:: max(1, len(points) // c.match_points)]  # evenly thinned: speed, same fit
            res = icp(sub, self._submap, predicted)
            jump = between(predicted, res.pose)
            if (res.good(c.match_min_inliers, c.match_max_rmse) and math.hypot(jump[0], jump[1]) <= c.match_max_jump
                    and abs(jump[2]) <= c.match_max_jump):
                pose, matched = res.pose, True
        if not matched:
            self.match_failures += 1
        self.pose = pose

        last = len(self.graph.nodes) - 1
        step = between(self.graph.nodes[last], pose)
        if math.hypot(step[0], step[1]) >= c.keyframe_distance or abs(step[2]) >= c.keyframe_angle:
            self._add_keyframe(pose, ranges, angles, rmin, rmax, points, odom_pose, last, matched)
        else:
            self._track.append((last, step))
        return self.pose.copy()

    @property
    def grid(self) -> LogOddsGrid:
        """The log-odds map, rebuilt first if a loop closure moved the keyframes since the last build."""
        if self._stale:
            self.rebuild_map()
        return self._grid

    def occupancy(self) -> np.ndarray:
        """Occupancy probabilities (row = y, col = x); 0.5 where never observed."""
        return self.grid.probabilities()

    def rebuild_map(self) -> None:
        """Recompute the map from every keyframe scan at its current (optimised) pose."""
        self._grid.clear()
        for pose, (ranges, angles, rmin, rmax) in zip(self.graph.nodes, self._kf_scans):
            self._grid.insert_scan(pose, ranges, angles, rmin, rmax)
        self._stale = False

    # -- internals ----------------------------------------------------------------------
    def _add_keyframe(self, pose, ranges, angles, rmin, rmax, points, odom_pose, prev: int | None, matched: bool) -> None:
        c = self.config
        k = self.graph.add_node(pose)
        self._kf_scans.append((ranges, angles, rmin, rmax))
        self._kf_points.append(points)
        self._kf_odom.append(odom_pose)
        self._track.append((k, np.zeros(3)))
        if prev is not None:
            z = between(self.graph.nodes[prev], pose)
            o_prev = self._kf_odom[prev]
            if matched:
                # The front end already fused the odometry prediction; its match is the better measurement.
                self.graph.add_edge(prev, k, z, [c.sigma_match[0], c.sigma_match[0], c.sigma_match[1]])
            elif odom_pose is not None and o_prev is not None:
                zo = between(o_prev, odom_pose)
                travelled = math.hypot(zo[0], zo[1]) + 0.3 * abs(zo[2])
                sxy = c.sigma_odometry[0] * travelled + 0.01
                syaw = c.sigma_odometry[1] * travelled + 0.01
                self.graph.add_edge(prev, k, zo, [sxy, sxy, syaw])
            else:  # no odometry and no match: keep the graph connected, weakly
                self.graph.add_edge(prev, k, z, [0.5, 0.5, 0.5])
        if not self._stale:  # a stale map is rebuilt from all keyframes when next read
            self._grid.insert_scan(pose, ranges, angles, rmin, rmax)
        self._cooldown -= 1
        if c.loop_closure and self._cooldown <= 0 and self._close_loops(k):
            self._stale = True
            self._cooldown = c.loop_cooldown
        self.pose = self.graph.nodes[k].copy()
        first = max(0, k - c.submap_keyframes + 1)
        pts = [transform_points(self.graph.nodes[i], self._kf_points[i]) for i in range(first, k + 1)]
        self._submap = Reference(np.concatenate(pts)) if sum(len(p) for p in pts) >= 10 else None

    def _close_loops(self, k: int) -> bool:
        c = self.config
        nodes = self.graph.poses()
        if k < c.loop_min_separation or len(self._kf_points[k]) < 20:
            return False
        old = nodes[: k - c.loop_min_separation + 1]
        d = np.hypot(old[:, 0] - nodes[k, 0], old[:, 1] - nodes[k, 1])
        candidates = [int(j) for j in np.argsort(d)[:1] if d[j] <= c.loop_radius]
        added = False
        for j in candidates:
            self.loop_attempts += 1
            lo, hi = max(0, j - 2), min(k - c.loop_min_separation, j + 2)
            ref_pts = np.concatenate([transform_points(nodes[i], self._kf_points[i]) for i in range(lo, hi + 1)])
            if len(ref_pts) < 20:
                continue
            field = LikelihoodField(ref_pts, resolution=c.resolution)
            guess, score = correlative_match(self._kf_points[k], field, nodes[k], window_xy=c.loop_window[0],
                                             window_yaw=c.loop_window[1], step_xy=c.resolution,
                                             step_yaw=c.resolution / 2.0)
            if score < c.loop_min_score:
                self.loops_rejected += 1
                continue
            res = icp(self._kf_points[k], Reference(ref_pts), guess, gate=0.3, final_gate=0.1)
            if not res.good(c.loop_min_inliers, c.loop_max_rmse):
                self.loops_rejected += 1
                continue
            self.graph.add_edge(j, k, between(nodes[j], res.pose), [c.sigma_loop[0], c.sigma_loop[0], c.sigma_loop[1]],
                                loop=True)
            added = True
        if added:
            self.graph.optimize()
            if self.graph.prune(threshold=5.0):
                self.graph.optimize()
        return added
