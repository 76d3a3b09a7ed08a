"""Visualisation: Ark topics in Foxglove (live tap, MCAP export) and PNG plots for benchmarks.

Modules: :mod:`~ark.viz.foxglove` (``FoxgloveTap``, ``export_mcap``, ``export_mcap_json``;
needs the optional foxglove-sdk except for the JSON export), :mod:`~ark.viz.plots`
(training curves, rate–accuracy, benchmark bars, trajectories over maps; needs matplotlib).
Nothing here is imported eagerly, so ``import ark.viz`` works without either package.
"""
