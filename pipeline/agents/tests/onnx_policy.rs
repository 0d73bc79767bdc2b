//! The ONNX policy slot, with the seed's rule written as an ONNX model: it must decide exactly as
//! the rule does, on the same observations.
#![cfg(feature = "onnx")]

use std::path::PathBuf;

use auroraq_agents::onnx::OnnxPolicy;
use auroraq_agents::{Observation, Policy, RulePolicy};
use proptest::prelude::*;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/policy-seed-rule/policy.onnx")
}

fn ort() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.auroraq/onnxruntime/libonnxruntime.so");
    p.exists().then_some(p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn onnx_rule_decides_as_the_rule(score in 0.0f32..1.0, conf in 0.0f32..1.0, pos in -1i32..=1, ret in -0.1f32..0.1) {
        let mut onnx = OnnxPolicy::load(&model(), ort().as_deref()).expect("policy loads");
        let mut rule = RulePolicy::default();
        let obs = Observation([score, conf, 0.0, 3.0, ret, pos as f32, 0.0, 1.0]);
        // Away from the thresholds by more than float32 rounding, both must agree exactly.
        prop_assume!((score - 0.7).abs() > 1e-4 && (score - 0.3).abs() > 1e-4 && (conf - 0.8).abs() > 1e-4);
        prop_assert_eq!(onnx.decide(&obs).unwrap().0, rule.decide(&obs).unwrap().0);
    }
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let err = match OnnxPolicy::load(&PathBuf::from("/nonexistent/policy.onnx"), ort().as_deref()) {
        Ok(_) => panic!("loaded a missing file"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("/nonexistent/policy.onnx"), "{err}");
}
