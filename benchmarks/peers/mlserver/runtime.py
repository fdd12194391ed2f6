"""The custom MLServer runtime of the MLServer peer: an ``MLModel`` over one onnxruntime session, written as
MLServer's documentation writes a custom runtime (``load`` opens the model, ``predict`` decodes the v2
request's tensors with ``NumpyCodec`` and encodes the outputs with it)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        uri = self.settings.parameters.uri if self.settings.parameters else None
        self.session = ort.InferenceSession(uri, sess_options=options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i).astype(np.float64, copy=False) for i in payload.inputs}
        results = self.session.run(self.output_names, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self.output_names, results, strict=True)],
        )
