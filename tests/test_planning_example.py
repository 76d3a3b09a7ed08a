"""The pick-and-place example: IK + planning over a wall + OSC, end to end in simulation."""

from __future__ import annotations

from ark.examples import pick_place


def test_pick_place_example_moves_the_cube_over_the_wall_without_touching_it(capsys):
    assert pick_place.main(["--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "straight joint move above the cube -> above the goal collision-free: False" in out  # planning was needed
    assert "success: cube 0.0 cm from the goal, 0 steps touching the wall" in out
