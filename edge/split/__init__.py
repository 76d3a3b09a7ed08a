"""Split-DNN encoders: a slimmable bottleneck head on the device, its tail on the edge server.

    ark split data --out runs/split/data                           render labelled frames
    ark split train --data runs/split/data --out runs/split/model  teacher, distillation, fine-tuning
    ark split export --model runs/split/model                      head.onnx + filter.onnx, parity
    ark split run --model runs/split/model --data runs/split/data --link 1 --budget-ms 7
    ark split bench                                                benchmarks/split.py

Modules: :mod:`~edge.split.config` (the recipe), :mod:`~edge.split.dataset` (pybullet frames),
:mod:`~edge.split.models` (teacher, slimmable head, tail, frame filter),
:mod:`~edge.split.train` (distillation, sandwich-rule fine-tuning), :mod:`~edge.split.checkpoint`,
:mod:`~edge.split.codec` (quantisation, packing, zstd, packet header),
:mod:`~edge.split.controller` (width from bandwidth and a latency budget), :mod:`~edge.split.link`
(link emulator node), :mod:`~edge.split.nodes` (SplitHeadNode, SplitTailNode),
:mod:`~edge.split.onnx_export`.
"""
