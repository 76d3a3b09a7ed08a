"""pybullet backends of Ark's environments: one physics client per backend (``world.py``), the
Panda scene (``panda.py``) and the Husky scene (``husky.py``)."""
