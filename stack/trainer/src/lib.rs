//! trainer (docs to come)
pub mod comm;
pub mod ring;
