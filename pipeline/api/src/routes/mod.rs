//! The REST handlers under `/api/v1`, one module per area.

pub mod market;
pub mod orders;
pub mod risk;
pub mod sentiment;
pub mod status;
