//! A policy that is an ONNX model: observation vector in, action out.
//!
//! The model takes one float32 input of shape `[batch, 8]` (the [`Observation`] layout) and gives
//! either three float logits `[hold, buy, sell]` per row (the highest wins) or one int64 action
//! index per row. `models/policy-seed-rule/policy.onnx` is the seed's rule written as such a model
//! (`scripts/model/make_rule_policy.py`); a trained policy, e.g. PPO exported with
//! `torch.onnx.export`, drops in the same way.

use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use crate::policy::{Action, Observation, Policy, PolicyError, OBSERVATION_LEN};

pub struct OnnxPolicy {
    session: Mutex<Session>,
    input: String,
    name: String,
}

impl OnnxPolicy {
    /// Loads `model` with ONNX Runtime (found as the sentiment workers find it; `ort_dylib`
    /// overrides), one intra-op thread: a policy is small and called once per signal.
    pub fn load(model: &Path, ort_dylib: Option<&Path>) -> Result<OnnxPolicy, PolicyError> {
        let err = |e: String| PolicyError::Model(format!("{}: {e}", model.display()));
        auroraq_sentiment::runtime::init(ort_dylib).map_err(|e| err(e.to_string()))?;
        let env = auroraq_sentiment::runtime::environment().map_err(|e| err(e.to_string()))?;
        if !model.is_file() {
            return Err(err("no such file".into()));
        }
        let session = Session::builder(env)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| err(e.to_string()))?
            .commit_from_file(model)
            .map_err(|e| err(e.to_string()))?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .ok_or_else(|| err("the model has no input".into()))?;
        let name = format!(
            "onnx:{}",
            model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Ok(OnnxPolicy {
            session: Mutex::new(session),
            input,
            name,
        })
    }
}

impl Policy for OnnxPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn decide(&mut self, obs: &Observation) -> Result<(Action, String), PolicyError> {
        let m = |e: ort::Error| PolicyError::Model(e.to_string());
        let x = Tensor::from_array(([1usize, OBSERVATION_LEN], obs.0.to_vec())).map_err(m)?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let out = session.run(ort::inputs![self.input.as_str() => x]).map_err(m)?;
        let first = &out[0];
        if let Ok((_, logits)) = first.try_extract_tensor::<f32>() {
            let action = Action::argmax(logits).ok_or_else(|| PolicyError::BadOutput(logits.to_vec()))?;
            let why = format!("{}: logits {:?}", self.name, logits);
            return Ok((action, why));
        }
        let (_, idx) = first.try_extract_tensor::<i64>().map_err(m)?;
        let action = idx
            .first()
            .and_then(|&i| Action::from_index(i))
            .ok_or_else(|| PolicyError::BadOutput(idx.iter().map(|&i| i as f32).collect()))?;
        Ok((action, format!("{}: action {}", self.name, action as i64)))
    }
}
