"""The navigate-home example: map an unseen room with SLAM, then drive back to the start."""

from __future__ import annotations

import re


def test_navigate_home_maps_the_room_and_gets_back_to_the_start(capsys):
    from ark.examples.navigate_home import main

    assert main(["--seed", "0"]) == 0
    out = capsys.readouterr().out
    ate = float(re.search(r"SLAM ATE RMSE ([0-9.]+) m", out).group(1))
    home = float(re.search(r"true distance to start ([0-9.]+) m", out).group(1))
    assert "back at start: yes" in out and home <= 0.3
    assert ate < 0.05
