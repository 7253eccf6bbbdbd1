"""A table's preprocessing as an ONNX graph, merged in front of the converted Keras core.

Why a graph of our own and `onnx.compose`: tf2onnx cannot convert Keras's StringLookup
(`LookupTableFindV2` has no ONNX op), so the string handling cannot live in the Keras
model. The Keras core takes the encoded float features; this module builds the graph that
encodes raw columns exactly as zoo.stages.tabular.Preprocessing.encode does, and
`onnx.compose.merge_models` joins the two at the core's `input`, refusing any name clash,
so the core stays the graph tf2onnx made and the preprocessing is readable on its own.

Per column, input [batch, 1]:
- numeric (float32, NaN = missing): Where(IsNaN(x), 0, (x - mean) / std);
- categorical (string): ai.onnx.ml LabelEncoder maps each training category to its index,
  "" and "NA" to the missing slot k, anything else to k + 1; Equal against [0..k] and
  Cast give the one-hot row, so an unknown category is all zeros. (ONNX OneHot is not used:
  it counts a negative index from the end, which would make an unknown the last category.)
Then Concat(axis=1) gives the core's [batch, width] input.
"""

from __future__ import annotations

from zoo.core.contract import BATCH_DIM, INPUT_NAME, STRING
from zoo.core.errors import ExportError
from zoo.stages.tabular import MISSING, Preprocessing

PREFIX = "zoo_prep/"  # every name inside the preprocessing graph but its inputs
FEATURES = PREFIX + "features"
ML_DOMAIN = "ai.onnx.ml"


def _column_nodes(c, helper, TensorProto):
    """(nodes, initializers, output name) encoding one column."""
    p = f"{PREFIX}{c.input}/"
    if c.kind == "numeric":
        inits = [helper.make_tensor(p + "mean", TensorProto.FLOAT, [], [c.mean]),
                 helper.make_tensor(p + "std", TensorProto.FLOAT, [], [c.std]),
                 helper.make_tensor(p + "zero", TensorProto.FLOAT, [], [0.0])]
        nodes = [helper.make_node("Sub", [c.input, p + "mean"], [p + "centred"]),
                 helper.make_node("Div", [p + "centred", p + "std"], [p + "z"]),
                 helper.make_node("IsNaN", [c.input], [p + "isnan"]),
                 helper.make_node("Where", [p + "isnan", p + "zero", p + "z"], [p + "out"])]
        return nodes, inits, p + "out"
    k = len(c.categories)
    keys = list(c.categories) + list(MISSING)
    values = list(range(k)) + [k] * len(MISSING)
    inits = [helper.make_tensor(p + "slots", TensorProto.INT64, [1, k + 1], list(range(k + 1)))]
    nodes = [helper.make_node("LabelEncoder", [c.input], [p + "index"], domain=ML_DOMAIN,
                              keys_strings=keys, values_int64s=values, default_int64=k + 1),
             helper.make_node("Equal", [p + "index", p + "slots"], [p + "hot"]),  # [batch, 1] vs [1, k+1]
             helper.make_node("Cast", [p + "hot"], [p + "out"], to=TensorProto.FLOAT)]
    return nodes, inits, p + "out"


def preprocessing_graph(prep: Preprocessing, core):
    """The preprocessing as a ModelProto with the core's IR version and opsets."""
    from onnx import TensorProto, helper

    nodes, inits, outs, inputs = [], [], [], []
    for c in prep.columns:
        n, i, out = _column_nodes(c, helper, TensorProto)
        nodes += n
        inits += i
        outs.append(out)
        dtype = TensorProto.STRING if c.kind != "numeric" else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info(c.input, dtype, [BATCH_DIM, 1]))
    nodes.append(helper.make_node("Concat", outs, [FEATURES], axis=1))
    graph = helper.make_graph(nodes, "zoo_preprocessing", inputs,
                              [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [BATCH_DIM, prep.width])],
                              initializer=inits)
    opsets = {o.domain: o.version for o in core.opset_import}
    opsets.setdefault(ML_DOMAIN, 2)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = core.ir_version
    return model


def attach(core, prep: Preprocessing):
    """The converted core with the preprocessing graph in front: one input per column."""
    from onnx import compose, helper

    if ML_DOMAIN not in {o.domain for o in core.opset_import}:
        core.opset_import.append(helper.make_opsetid(ML_DOMAIN, 2))
    pre = preprocessing_graph(prep, core)
    try:
        return compose.merge_models(pre, core, io_map=[(FEATURES, INPUT_NAME)], producer_name="zoo")
    except Exception as e:  # a name clash, mismatched opsets
        raise ExportError(f"could not join the table's preprocessing to the converted model: {str(e)[:200]}") from None


def columns_metadata(prep: Preprocessing) -> list[dict]:
    """zoo.columns: one entry per graph input, in the graph's order (the page's form reads it)."""
    return [{"name": c.name, "input": c.input, "kind": c.kind, "dtype": STRING if c.kind != "numeric" else "float32",
             **({"categories": list(c.categories)} if c.kind != "numeric" else {"mean": c.mean, "std": c.std})}
            for c in prep.columns]

