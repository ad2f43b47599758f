"""Shipping the model the sparsity buys:

- `archive`: the `model.l1z` format (encode, decode, read back into a module);
- `codebook`: the weight sharing it stores (k-means codebooks, quantize, their fine-tuning);
- `measure`: accuracy, sizes, and what a trial's archive costs and scores (its row's figures);
- `files`: what an export is made from; its files and directory, never half-written;
- `onnx_files`: the ONNX files (fp32, int8, compact), their opset and IR version;
- `artifacts`: the files an export writes (.l1z, ONNX, compact), each read back and measured;
- `latency`: timing models in alternation.
"""
