"""Federated learning for Ark: strategies, compression, hierarchical aggregation, simulation, networked nodes.

Modules (each imports only what it needs; nothing heavy happens on ``import edge.fl``):

- ``strategy``: FedAvg, FedProx, FedAvg-M (client and server momentum), SCAFFOLD, SCAFFOLD-M, FedAU
- ``asynchronous``: FedCompass, FedAsync, FedBuff and timed synchronous FedAvg
- ``client``: local SGD with each strategy's corrections (vectorised over clients)
- ``validation`` / ``robust``: refusing bad updates; coordinate median and trimmed mean
- ``compression``: top-z sparsification, k-means / uniform quantisation, zstd coding, error feedback
- ``hierarchy``: edge aggregators with running sums; co-located aggregators over shared memory
- ``simulation`` / ``ray_runner``: many clients in one process, or on Ray
- ``server`` / ``nodes``: the FL server core and Ark nodes for a networked fleet
- ``policy``: federated training of Ark policies (BC) on robots' own demonstrations
"""
