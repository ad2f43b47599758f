"""What makes weights zero and counts them: `regularizers` (L1, L2, elastic net, group lasso,
as a penalty or a proximal step), `pruning` (magnitude and neuron/input masks), `measures`
(exact and thresholded sparsity, per layer) and `features` (which inputs a model still reads)."""
