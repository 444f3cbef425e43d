//! Process-lifetime state shared with filters; survives config reloads.

/// Handed to every factory through [`crate::FactoryContext`].
#[derive(Debug, Default)]
pub struct Services {}
