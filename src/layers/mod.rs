//! Tower layers, one concern each, composed in [`crate::stack`].

pub mod admission;
pub mod auth;
pub mod catch_panic;
pub mod deadline;
pub mod drain;
pub mod interrupt;
pub mod request_log;
