"""Running a trained model: the inference graph, backends (torch, ONNX), export, evaluation, timing,
unknown-input detection and predicting image files. Never imports training, so serving stays light."""
