"""From branches to a served graph: the merged model, ONNX export, fusion, quantization,
publishing a store, the shipped default model.
"""
