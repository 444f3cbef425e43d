//! Process-lifetime state shared by filters (and the Thrift proxy) that must survive
//! config reloads: the proxy creates one [`Services`] at start-up and hands the same
//! instance to every factory through [`crate::FactoryContext::services`].

use crate::sli;

/// State that outlives any one config snapshot.
#[derive(Debug, Default)]
pub struct Services {
    /// The SLI board behind the admin endpoint `GET /sli`.
    pub sli: sli::Board,
}
