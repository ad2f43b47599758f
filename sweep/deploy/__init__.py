"""Shipping the model the sparsity buys: the `archive` format (model.l1z, codebooks) and
`latency` (timing models in alternation)."""
