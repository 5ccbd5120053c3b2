//! One module per subcommand.

pub mod engine;
pub mod logs;
pub mod ls;
pub mod run;
pub mod serve;
pub mod service;
pub mod stamp;
pub mod tail;
pub mod token;
