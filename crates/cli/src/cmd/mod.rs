//! One module per subcommand.

pub mod logs;
pub mod ls;
pub mod service;
pub mod tail;
pub mod token;
