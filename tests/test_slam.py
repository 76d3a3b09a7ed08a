"""SLAM: scan matching, log-odds map, pose graph, the full loop on the simulated Husky, and SlamNode over channels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ark import LaserScan, Node, Pose
from ark.errors import ConfigError
from ark.slam import (LidarSlam, LogOddsGrid, OdometryError, PoseGraph, ScanError, SlamConfig, absolute_trajectory_error,
                      check_scan, icp, map_accuracy)
from ark.slam.geometry import between, compose
from ark.slam.scan_matching import LikelihoodField, Reference, correlative_match
from conftest import wait_until

BOX = (-3.0, -2.0, 4.0, 2.5)  # a rectangular room: xmin, ymin, xmax, ymax
PILLAR = (1.0, 0.5, 0.3)  # a round pillar inside: x, y, radius


def raycast(pose, beams: int = 180, rmax: float = 8.0) -> LaserScan:
    """An exact scan of the BOX room with its PILLAR from ``pose`` (x, y, yaw)."""
    x, y, yaw = pose
    a = -math.pi + np.arange(beams) * 2 * math.pi / beams
    dx, dy = np.cos(a + yaw), np.sin(a + yaw)
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(dx > 0, (BOX[2] - x) / dx, (BOX[0] - x) / dx)
        ty = np.where(dy > 0, (BOX[3] - y) / dy, (BOX[1] - y) / dy)
    r = np.minimum(np.abs(tx), np.abs(ty))
    cx, cy, rad = PILLAR
    ox, oy = x - cx, y - cy
    b = ox * dx + oy * dy
    disc = b * b - (ox * ox + oy * oy - rad * rad)
    hit = disc > 0
    t = -b - np.sqrt(np.where(hit, disc, 0.0))
    r = np.where(hit & (t > 0), np.minimum(r, t), r)
    r = np.minimum(r, rmax)
    return LaserScan(ranges=r.astype(np.float32), angle_min=-math.pi, angle_max=-math.pi + (beams - 1) * 2 * math.pi / beams,
                     angle_increment=2 * math.pi / beams, range_min=0.05, range_max=rmax)


def points_of(scan: LaserScan) -> np.ndarray:
    a = scan.angle_min + np.arange(len(scan.ranges)) * scan.angle_increment
    r = scan.ranges.astype(np.float64)
    return np.column_stack([r * np.cos(a), r * np.sin(a)])


def test_icp_recovers_a_known_offset_and_correlative_search_finds_a_far_one():
    truth = np.array([0.3, -0.2, 0.15])
    ref = Reference(points_of(raycast((0.0, 0.0, 0.0))))
    scan = points_of(raycast(truth))
    res = icp(scan, ref, (0.0, 0.0, 0.0))
    assert res.converged and res.inliers > 0.9
    assert np.allclose(res.pose, truth, atol=0.02)
    # 0.7 m and 0.3 rad away is beyond ICP's basin, not beyond the correlative window.
    far = np.array([0.7, 0.5, -0.3])
    field = LikelihoodField(ref.points)
    guess, score = correlative_match(points_of(raycast(far)), field, (0.0, 0.0, 0.0), window_xy=0.9, window_yaw=0.4)
    assert score > 0.8 and np.allclose(guess, far, atol=0.06)
    assert np.allclose(icp(points_of(raycast(far)), ref, guess).pose, far, atol=0.02)


def test_log_odds_map_marks_walls_occupied_free_space_free_and_the_rest_unknown():
    grid = LogOddsGrid(200, 160, 0.05, origin=(-4.0, -3.0))
    scan = raycast((0.0, 0.0, 0.0), beams=360)
    a = scan.angle_min + np.arange(360) * scan.angle_increment
    for _ in range(6):  # six free updates of -0.4 take a cell below p = 0.1
        grid.insert_scan((0.0, 0.0, 0.0), scan.ranges, a, scan.range_min, scan.range_max)
    p = grid.probabilities()

    def at(x, y):
        return p[int((y + 3.0) / 0.05), int((x + 4.0) / 0.05)]

    assert at(4.01, 0.0) > 0.9 and at(0.0, 2.51) > 0.9  # walls (a hit on a cell border lands in the far cell)
    assert at(-1.5, -1.0) < 0.1 and at(2.0, -1.0) < 0.1  # open floor
    assert at(2.5, 1.25) == 0.5  # in the pillar's shadow
    assert at(1.0, 0.5) == 0.5  # inside the pillar: never seen
    assert at(-3.5, 0.0) == 0.5  # behind the wall
    acc = map_accuracy(grid.occupied(), 0.05, (-4.0, -3.0), np.array([[1, *PILLAR[:2], 0.0, 0.6, 0.6, 1.0]]))
    assert acc["occupied_cells"] > 0 and acc["precision"] < 0.2  # the walls are not in that "layout"


def test_pose_graph_loop_closure_removes_accumulated_drift():
    rng = np.random.default_rng(0)
    truth = [np.array([0.0, 0.0, 0.0])]
    for k in range(40):  # a square of side 2.5 m, 0.25 m steps, 90-degree turns at the corners
        step = np.array([0.25, 0.0, math.pi / 2 if k % 10 == 9 else 0.0])
        truth.append(compose(truth[-1], step))
    g = PoseGraph()
    g.add_node(truth[0])
    for k in range(1, len(truth)):
        z = between(truth[k - 1], truth[k]) + rng.normal(0, [0.01, 0.01, 0.02])
        g.add_node(compose(g.nodes[-1], z))
        g.add_edge(k - 1, k, z, [0.01, 0.01, 0.02])
    before = absolute_trajectory_error(g.poses(), np.array(truth), align=False)["ate_max"]
    g.add_edge(0, 40, between(truth[0], truth[40]), [0.01, 0.01, 0.01], loop=True)
    g.add_edge(0, 20, np.array([5.0, 5.0, 1.0]), [0.01, 0.01, 0.01], loop=True)  # a wrong closure
    g.optimize()
    assert g.prune(threshold=5.0) == 1 and g.loop_closures == 1
    g.optimize()
    after = absolute_trajectory_error(g.poses(), np.array(truth), align=False)["ate_max"]
    assert before > 0.2 and after < before / 3


def test_malformed_scans_and_config_give_one_line_errors_and_leave_slam_untouched():
    slam = LidarSlam(SlamConfig(map_size=(10.0, 10.0)))
    good = raycast((0.0, 0.0, 0.0))
    slam.update(good, (0.0, 0.0, 0.0))
    short = raycast((0.0, 0.0, 0.0))
    short.ranges = short.ranges[:-5]
    nan = raycast((0.0, 0.0, 0.0))
    nan.ranges = nan.ranges.copy()
    nan.ranges[3] = np.nan
    limits = raycast((0.0, 0.0, 0.0))
    limits.range_max = 0.0
    cases = [(short, "175 ranges but angle_min/angle_max/angle_increment describe 180 beams"),
             (nan, "1 NaN range"), (limits, "range_min < range_max")]
    for scan, text in cases:
        with pytest.raises(ScanError, match=text) as err:
            slam.update(scan, (0.0, 0.0, 0.0))
        assert "\n" not in str(err.value)
    with pytest.raises(OdometryError, match="3 finite numbers"):
        slam.update(good, (0.0, float("nan"), 0.0))
    assert slam.updates == 1 and slam.keyframes == 1
    inf = raycast((0.0, 0.0, 0.0))
    inf.ranges = np.full(180, np.inf, np.float32)  # no returns at all is valid input
    check_scan(inf)
    with pytest.raises(ConfigError, match="key 'resolution'"):
        SlamConfig.load({"resolution": -1})
    with pytest.raises(ConfigError, match="key 'loop_radius_m'"):
        SlamConfig.load({"loop_radius_m": 2.0})


def test_slam_on_the_simulated_husky_beats_odometry_and_maps_the_room():
    """Two laps of a walled room in ark/HuskyNavigate-v0 with drifting odometry."""
    from ark.slam.husky_sim import ROOM_TOUR, drive, laser_scan, room_env, room_obstacles

    env = room_env(beams=180, noise_std=0.01)
    try:
        tour = ROOM_TOUR[:17]  # one lap and a third: the start area is seen again
        log = drive(env, tour, seed=3, odometry_noise=0.1)
        assert log["reached"] and not log["collisions"].any()
        gt = log["ground_truth"]
        slam = LidarSlam(SlamConfig(), initial_pose=gt[0])
        for ranges, odom in zip(log["lidar"], log["odometry"]):
            slam.update(laser_scan(ranges, env), odom)
    finally:
        env.close()
    odom_world = np.array([compose(gt[0], o) for o in log["odometry"]])
    ate_odom = absolute_trajectory_error(odom_world, gt, align=False)["ate_rmse"]
    ate = absolute_trajectory_error(slam.trajectory(), gt, align=False)["ate_rmse"]
    assert slam.loop_closures >= 1
    assert ate < 0.08 and ate < ate_odom / 3
    g = slam.grid
    acc = map_accuracy(g.occupied(), g.resolution, g.origin, room_obstacles())
    assert acc["precision"] > 0.9 and acc["mean_error"] < 0.05


def _scan_stream(n: int):
    """Poses along a small arc in the BOX room with odometry equal to the truth."""
    for k in range(n):
        pose = np.array([-1.0 + 0.05 * k, -0.5 + 0.02 * k, 0.03 * k])
        yield pose, raycast(pose)


def test_slam_node_publishes_pose_and_map_and_survives_bad_messages(cfg):
    from ark.slam.node import OccupancyGridMsg, SlamNode, pose_message

    node = SlamNode("slam", config=cfg, params={"initial_pose": [-1.0, -0.5, 0.0], "map_hz": 20.0,
                                                 "slam": {"map_size": [10.0, 8.0]}}).start()
    poses, maps = [], []
    src = Node("sensors", config=cfg).start()
    scan_pub = src.publisher("/scan", LaserScan)
    odom_pub = src.publisher("/odom", Pose)
    sink = Node("viewer", config=cfg)
    sink.subscriber("/slam/pose", Pose, poses.append, queue=100)
    sink.subscriber("/slam/map", OccupancyGridMsg, maps.append)
    sink.start()

    def send(pose, scan):
        odom_pub.publish(pose_message(pose, "odom"))
        scan_pub.publish(scan)

    stream = list(_scan_stream(12))
    # The subscription may still be connecting: repeat the first scan until the node has it.
    assert wait_until(lambda: send(*stream[0]) or node.processed >= 1, 5.0, step=0.05)
    bad = raycast((0.0, 0.0, 0.0))
    bad.ranges = bad.ranges[:100]
    scan_pub.publish(bad)
    nan = raycast((0.0, 0.0, 0.0))
    nan.ranges = np.full(180, np.nan, np.float32)
    scan_pub.publish(nan)
    assert wait_until(lambda: node.rejected >= 2, 5.0)
    assert "NaN" in node.last_error
    start = node.processed
    for pose, scan in stream[1:]:
        send(pose, scan)
        wait_until(lambda: node.processed > start, 2.0)
        start = node.processed
    assert wait_until(lambda: node.processed >= len(stream) and len(poses) >= len(stream) - 1, 5.0)
    last = poses[-1]
    assert last.frame_id == "map"
    assert np.allclose(last.position[:2], stream[-1][0][:2], atol=0.05)
    assert wait_until(lambda: len(maps) >= 1, 5.0)
    m = maps[-1]
    assert m.data.dtype == np.int8 and m.data.shape == (160, 200)
    assert (m.data >= 65).sum() > 50 and (m.data == -1).sum() > 0 and (m.data.clip(-1, 35) >= 0).sum() > 50
    with pytest.raises(ConfigError, match="initial_pose"):
        SlamNode("slam2", config=cfg, params={"initial_pose": [0.0, 0.0]})
    with pytest.raises(ConfigError, match="key 'resolution'"):
        SlamNode("slam3", config=cfg, params={"slam": {"resolution": "fine"}})
