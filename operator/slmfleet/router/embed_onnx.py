"""all-MiniLM-L6-v2 as an onnxruntime graph, built in memory from the loaded weights.

Used by ``embed.MiniLMEncoder`` when onnxruntime is installed. One short request is a
dozen tokens, so what a forward pass costs is as much the *number of nodes* onnxruntime
dispatches as the arithmetic: a graph of plain ONNX ops (per linear layer a dozen
quantise/matmul/rescale nodes, attention as a dozen reshapes and products, GELU and each
residual LayerNorm in several nodes) is ~450 nodes and ~0.9 ms of fixed cost per call.
This graph uses onnxruntime's fused CPU kernels instead (``com.microsoft`` domain):

* ``DynamicQuantizeMatMul`` per linear layer (``int8``): weights int8, symmetric, one
  scale per output column; activations quantised to uint8 per call (one scale for the
  whole input, so :meth:`MiniLMEncoder.encode` runs texts one at a time to keep a
  text's vector independent of its batch). One request's ~12 tokens make these products
  cheap enough that the 4x smaller weights (10 MB) pay; embeddings keep cosine ~0.99
  to float32. Without ``int8``: ``MatMul`` + ``Add``.
* ``MultiHeadAttention`` (with the padding mask), ``SkipLayerNormalization`` (residual +
  LayerNorm) and ``Gelu`` (the exact, erf form BERT uses).

~80 nodes: ~0.25 ms of fixed cost, ~0.1 ms per token on one core (was ~0.9 ms + 0.13).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MS = "com.microsoft"


def onnx_session(enc: Any, threads: int, int8: bool) -> Any:
    """Open a CPU session on :func:`bert_graph`, ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    model = bert_graph(enc, int8).SerializeToString()
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def bert_graph(enc: Any, int8: bool) -> Any:
    """The BERT graph (an onnx ModelProto) from the loaded weights of ``enc``.

    Inputs: ``input_ids`` (B, T) int64, ``positions`` (T,) int64, ``mask`` (B, T) int32
    (1 for a real token). Output: ``embeddings`` (B, dim), mean-pooled over real tokens
    and L2-normalised.
    """
    from onnx import TensorProto, helper, numpy_helper

    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(kind: str, ins: list[str], out: str, domain: str | None = None, **attrs: Any) -> str:
        nodes.append(helper.make_node(kind, ins, [out], domain=domain, **attrs))
        return out

    def linear(x: str, w: np.ndarray, b: np.ndarray, name: str) -> str:
        if int8:
            ws = (np.maximum(np.abs(w).max(axis=0), 1e-8) / np.float32(127.0)).astype(np.float32)
            wq = np.clip(np.rint(w / ws), -127, 127).astype(np.int8)
            ins = [x, const(name + ".wq", wq), const(name + ".ws", ws), "", const(name + ".b", b)]
            return op("DynamicQuantizeMatMul", ins, name, domain=MS)
        y = op("MatMul", [x, const(name + ".w", w)], name + ".mm")
        return op("Add", [y, const(name + ".b", b)], name)

    h, nh = enc.dim, enc.heads
    const("axm1", np.array([-1], dtype=np.int64))
    const("ax1", np.array([1], dtype=np.int64))
    const("tiny", np.array(1e-9, dtype=np.float32))

    e = op("Gather", [const("word", enc._word), "input_ids"], "e.word")
    e = op("Add", [e, op("Gather", [const("pos", enc._pos), "positions"], "e.p")], "e.wp")
    e = op("Add", [e, const("type0", enc._type0)], "e.sum")
    ln = [e, const("e.g", enc._ln_g), const("e.b", enc._ln_b)]
    x = op("LayerNormalization", ln, "e.ln", axis=-1, epsilon=1e-12)
    for li, ly in enumerate(enc._layers):
        p = f"l{li}"
        qkv = linear(x, ly.wqkv, ly.bqkv, p + ".qkv")
        nodes.append(helper.make_node("Split", [qkv], [p + ".q", p + ".k", p + ".v"], axis=-1))
        attn = [p + ".q", p + ".k", p + ".v", "", "mask"]
        ctx = op("MultiHeadAttention", attn, p + ".ctx", domain=MS, num_heads=nh)
        o = linear(ctx, ly.wo, ly.bo, p + ".o")
        ln1 = [o, x, const(p + ".g1", ly.ln1_g), const(p + ".b1", ly.ln1_b)]
        x = op("SkipLayerNormalization", ln1, p + ".ln1", domain=MS, epsilon=1e-12)
        g = op("Gelu", [linear(x, ly.w1, ly.b1, p + ".i")], p + ".gelu", domain=MS)
        f = linear(g, ly.w2, ly.b2, p + ".f")
        ln2 = [f, x, const(p + ".g2", ly.ln2_g), const(p + ".b2", ly.ln2_b)]
        x = op("SkipLayerNormalization", ln2, p + ".ln2", domain=MS, epsilon=1e-12)
    m = op("Unsqueeze", [op("Cast", ["mask"], "p.mf", to=TensorProto.FLOAT), "axm1"], "p.m")
    tot = op("ReduceSum", [op("Mul", [x, m], "p.xm"), "ax1"], "p.sum", keepdims=0)
    cnt = op("Max", [op("ReduceSum", [m, "ax1"], "p.cnt", keepdims=0), "tiny"], "p.cntc")
    op("LpNormalization", [op("Div", [tot, cnt], "p.mean")], "embeddings", axis=-1, p=2)

    graph = helper.make_graph(
        nodes,
        "minilm",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
            helper.make_tensor_value_info("positions", TensorProto.INT64, ["T"]),
            helper.make_tensor_value_info("mask", TensorProto.INT32, ["B", "T"]),
        ],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", h])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model
