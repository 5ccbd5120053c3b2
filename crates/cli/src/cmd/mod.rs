//! One module per subcommand.

pub mod logs;
pub mod ls;
pub mod tail;
