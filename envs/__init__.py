"""Gymnasium environments on pybullet, scripted experts and robot drivers."""
