//! Config: raw serde types -> validation with FILE:LINE:COL -> compiled snapshot.

pub mod duration;
pub mod raw;
