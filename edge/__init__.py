"""Edge computing: split DNNs, on-device LLMs, federated learning, deployment."""
