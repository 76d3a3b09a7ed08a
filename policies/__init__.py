"""Imitation-learning policies: datasets, BC, ACT, Diffusion Policy, training and evaluation."""
