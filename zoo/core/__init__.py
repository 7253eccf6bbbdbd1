"""The bottom layer: errors, signals, files, run folders, provenance, the artefact's contract,
onnxruntime sessions and the Keras backend. Nothing here imports a higher layer."""
