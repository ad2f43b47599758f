"""The training loop (`train.fit`, `train.measure`), the learning-rate `schedules`, and the
hand-written fast steps (`fastmlp`, `fastsgd`) that give autograd's and torch.optim's bits."""
