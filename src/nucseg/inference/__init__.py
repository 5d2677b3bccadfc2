"""Segmenting one image: the Model interface, tiled inference, backends, automatic sizing, the classical baseline."""

#: Backend names of :meth:`nucseg.inference.model.NetworkModel.segment`: PyTorch, ONNX Runtime on the float graph,
#: ONNX Runtime on the int8 graph (``network.int8.onnx``, :mod:`nucseg.models.quantize`). A light constant, so that
#: the command line lists them without importing the inference code.
BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
