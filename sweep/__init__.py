"""l1sweep: how much L1 regularization a PyTorch model can take, and what it costs."""
