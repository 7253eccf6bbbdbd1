"""zoo: turn a short JSON spec into a trained, exported, verified model.

Stages, one module each: spec (load + validate), data, build (spec -> keras.Model),
train, export (-> ONNX), verify (ONNX vs Keras), predict, cli.
Importing zoo is cheap: Keras and TensorFlow load only in the stages that need them.
"""

__version__ = "0.1.0"
