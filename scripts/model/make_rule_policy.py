"""Writes the seed's trading rule as an ONNX policy: a reference model for AuroraQ's ONNX policy slot.

The graph maps the agent's observation vector (float32 [batch, 8], layout in
pipeline/agents/src/policy.rs) to three logits [hold, buy, sell]:

    hold = 0
    buy  = min(score - buy_above, confidence - min_confidence)
    sell = min(sell_below - score, confidence - min_confidence)

so the highest logit is buy exactly when score > buy_above and confidence > min_confidence (sell
likewise), and hold otherwise (ties go to hold). It proves the ONNX policy path against the rule
policy; a trained policy (e.g. PPO exported with torch.onnx.export) takes the same input and
output names and drops in the same way.

    python scripts/model/make_rule_policy.py [--out models/policy-seed-rule/policy.onnx]
"""
import argparse

import onnx
from onnx import TensorProto, helper


def build(buy_above: float, sell_below: float, min_conf: float) -> onnx.ModelProto:
    f = TensorProto.FLOAT
    const = lambda name, v: helper.make_tensor(name, f, [1], [v])
    nodes = [
        helper.make_node("Slice", ["obs", "s0", "s1", "ax"], ["score"]),
        helper.make_node("Slice", ["obs", "s1", "s2", "ax"], ["conf"]),
        helper.make_node("Sub", ["score", "buy_above"], ["b1"]),
        helper.make_node("Sub", ["conf", "min_conf"], ["c1"]),
        helper.make_node("Min", ["b1", "c1"], ["buy"]),
        helper.make_node("Sub", ["sell_below", "score"], ["s_1"]),
        helper.make_node("Min", ["s_1", "c1"], ["sell"]),
        helper.make_node("Mul", ["score", "zero"], ["hold"]),
        helper.make_node("Concat", ["hold", "buy", "sell"], ["logits"], axis=1),
    ]
    inits = [
        helper.make_tensor("s0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("s1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("s2", TensorProto.INT64, [1], [2]),
        helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
        const("buy_above", buy_above),
        const("sell_below", sell_below),
        const("min_conf", min_conf),
        const("zero", 0.0),
    ]
    graph = helper.make_graph(
        nodes,
        "seed_rule_policy",
        [helper.make_tensor_value_info("obs", f, ["batch", 8])],
        [helper.make_tensor_value_info("logits", f, ["batch", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="auroraq")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="models/policy-seed-rule/policy.onnx")
    p.add_argument("--buy-above", type=float, default=0.7)
    p.add_argument("--sell-below", type=float, default=0.3)
    p.add_argument("--min-confidence", type=float, default=0.8)
    a = p.parse_args()
    onnx.save(build(a.buy_above, a.sell_below, a.min_confidence), a.out)
    print(a.out)


if __name__ == "__main__":
    main()
