//! Finding and loading ONNX Runtime (`libonnxruntime.so`) at run time.
//!
//! Order: the `ORT_DYLIB_PATH` environment variable; the configured path; the project-local copy
//! that `scripts/setup.sh` installs (`.auroraq/onnxruntime/libonnxruntime.so`), looked for in the
//! working folder and above the running executable (so `target/release/auroraq` finds the
//! checkout's copy). The library loads once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::SentimentError;

/// Where `scripts/setup.sh` puts the library, relative to the checkout.
pub const LOCAL_LIBRARY: &str = ".auroraq/onnxruntime/libonnxruntime.so";

/// Candidate library paths, best first.
pub fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    if let Some(p) = configured {
        out.push(p.to_owned());
    }
    out.push(PathBuf::from(LOCAL_LIBRARY));
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(5) {
            out.push(dir.join(LOCAL_LIBRARY));
        }
    }
    out
}

/// The library that will be loaded: the first candidate that exists.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, SentimentError> {
    let c = candidates(configured);
    c.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        SentimentError::Runtime(format!(
            "libonnxruntime.so not found (looked at {}); run scripts/setup.sh or set ORT_DYLIB_PATH",
            c.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

static ENV: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> = OnceLock::new();

/// The loaded environment, once [`init`] succeeded.
pub fn environment() -> Result<&'static ort::environment::Environment, SentimentError> {
    match ENV.get() {
        Some(Ok((_, env))) => Ok(env),
        Some(Err(e)) => Err(SentimentError::Runtime(e.clone())),
        None => Err(SentimentError::Runtime("ONNX Runtime is not loaded yet".into())),
    }
}

/// Loads ONNX Runtime once; later calls return the first outcome.
pub fn init(configured: Option<&Path>) -> Result<PathBuf, SentimentError> {
    let r = ENV.get_or_init(|| {
        let lib = find_library(configured).map_err(|e| e.to_string())?;
        let env = ort::init_from(&lib)
            .map_err(|e| format!("cannot load {}: {e}", lib.display()))?
            .with_name("auroraq")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))?;
        tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
        Ok((lib, env))
    });
    match r {
        Ok((lib, _)) => Ok(lib.clone()),
        Err(e) => Err(SentimentError::Runtime(e.clone())),
    }
}
