"""Identifying the Panda's dynamics in simulation: parameter errors, held-out torques, trajectory re-run.

    python benchmarks/sysid.py              # 3 perturbed arms x 2 noise levels (about 1 minute, 2 cores)
    python benchmarks/sysid.py --quick      # 1 arm, 1 noise level
    python benchmarks/sysid.py --json out.json

Setup (:mod:`ark.sysid.sim`): a torque-controlled Panda in pybullet whose masses and inertias are
scaled by factors drawn from 1 ± 0.3 per link and whose viscous friction, Coulomb friction and
joint damping are scaled by 1 ± 0.5 per joint (seeded) — the "real robot" whose parameters the
nominal URDF model does not know. Excitation: a 20 s, 5-harmonic Fourier trajectory (joint speed
up to 1.2 rad/s) tracked by computed torque with the nominal model plus stiff PD; logged motor
torque with Gaussian sensor noise of ``--noise`` N m. Identification: weighted linear least
squares on the base-parameter regressor (43 rigid-body combinations) plus 7 viscous and 7
Coulomb coefficients (:func:`ark.sysid.identify`).

Reported, against the simulator's ground truth (read back from pybullet): relative error of the
base-parameter vector (‖β̂ − β‖ / ‖β‖) for the identified and for the nominal model (the
baseline); mean absolute error of the viscous coefficient (damping + viscous friction: one
regressor column, not separable) and of the Coulomb coefficient; RMSE of predicted motor torques
on a held-out 8 s trajectory (another seed) for identified, nominal and true models; and the
re-run: that trajectory tracked in the perturbed sim with each model's feedforward torque and a
soft PD (gains 10x lower), mean joint tracking RMSE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

from ark.sysid import BaseParameters, FourierTrajectory, identify  # noqa: E402
from ark.sysid.sim import PandaTorqueSim  # noqa: E402

SOFT_KP = np.array([40.0, 40, 30, 30, 10, 6, 3])
SOFT_KD = SOFT_KP / 10.0


def feedforward(model, p):
    def ff(q, qd, qdd):
        return model.inverse_dynamics(q, qd, qdd, p["inertial"]) + (p["viscous"] + p["damping"]) * qd \
            + p["coulomb"] * np.sign(qd)
    return ff


def run(seed: int, noise: float, base: BaseParameters, nominal: dict) -> dict:
    sim = PandaTorqueSim()
    try:
        model = sim.model
        sim.perturb(seed=seed, mass_scale=0.3, friction_scale=0.5)
        truth = sim.true_parameters()
        ff_nom, ff_true = feedforward(model, nominal), feedforward(model, truth)
        exc = FourierTrajectory.random(sim.lower, sim.upper, seed=seed, period=10.0, max_velocity=1.2)
        data = sim.run(exc, 20.0, ff_nom, torque_noise=noise, seed=seed)
        t0 = time.process_time()
        fit = identify(model, base, data["q"], data["qd"], data["qdd"], data["tau"])
        ident_s = time.process_time() - t0
        beta = base.project(truth["inertial"])
        test = FourierTrajectory.random(sim.lower, sim.upper, seed=100 + seed, period=8.0, max_velocity=1.0)
        held = sim.run(test, 8.0, ff_nom)
        pred = {name: float(np.sqrt(np.mean((f(held["q"], held["qd"], held["qdd"]) - held["tau"]) ** 2)))
                for name, f in (("identified", fit.predict), ("nominal", ff_nom), ("true", ff_true))}
        track = {name: float(sim.run(test, 8.0, f, kp=SOFT_KP, kd=SOFT_KD)["tracking_rmse"].mean())
                 for name, f in (("identified", fit.predict), ("nominal", ff_nom), ("true", ff_true))}
        return {
            "seed": seed, "noise": noise, "samples": len(data["q"]), "condition": fit.condition, "identify_cpu_s": ident_s,
            "beta_err_identified": float(np.linalg.norm(fit.beta - beta) / np.linalg.norm(beta)),
            "beta_err_nominal": float(np.linalg.norm(base.project(nominal["inertial"]) - beta) / np.linalg.norm(beta)),
            "viscous_mae": float(np.mean(np.abs(fit.viscous - truth["viscous"] - truth["damping"]))),
            "viscous_mae_nominal": float(np.mean(np.abs(nominal["viscous"] + nominal["damping"]
                                                        - truth["viscous"] - truth["damping"]))),
            "coulomb_mae": float(np.mean(np.abs(fit.coulomb - truth["coulomb"]))),
            "coulomb_mae_nominal": float(np.mean(np.abs(nominal["coulomb"] - truth["coulomb"]))),
            "torque_rmse": pred, "tracking_rmse": track,
        }
    finally:
        sim.close()


def markdown(rows: list[dict]) -> str:
    out = ["| arm (seed) | torque noise N m | β rel. error: identified / nominal | viscous MAE N m s: id / nom | "
           "Coulomb MAE N m: id / nom | held-out torque RMSE N m: id / nom / true | re-run tracking RMSE mrad: id / nom / true |",
           "|---|---:|---|---|---|---|---|"]
    for r in rows:
        tq, tr = r["torque_rmse"], r["tracking_rmse"]
        out.append(f"| {r['seed']} | {r['noise']:.1f} | {r['beta_err_identified']:.4f} / {r['beta_err_nominal']:.3f} | "
                   f"{r['viscous_mae']:.4f} / {r['viscous_mae_nominal']:.3f} | {r['coulomb_mae']:.4f} / "
                   f"{r['coulomb_mae_nominal']:.3f} | {tq['identified']:.3f} / {tq['nominal']:.3f} / {tq['true']:.3f} | "
                   f"{1000 * tr['identified']:.2f} / {1000 * tr['nominal']:.1f} / {1000 * tr['true']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    ref = PandaTorqueSim()
    nominal = ref.true_parameters()
    base = BaseParameters.of(ref.model)
    ref.close()
    print(f"base parameters: {base.rank} of {base.n_params} standard ones", flush=True)
    rows = []
    for seed in ([1] if args.quick else [1, 2, 3]):
        for noise in ([0.2] if args.quick else [0.0, 0.5]):
            rows.append(run(seed, noise, base, nominal))
            r = rows[-1]
            print(f"  seed {seed} noise {noise}: beta error {r['beta_err_identified']:.4f} (nominal "
                  f"{r['beta_err_nominal']:.3f}), tracking {1000 * r['tracking_rmse']['identified']:.2f} mrad "
                  f"(nominal {1000 * r['tracking_rmse']['nominal']:.1f})", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}\n")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
