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

/// A command's flags parsed alone, as its tests take them (no program name).
#[cfg(test)]
pub(crate) fn parse_flags<T: clap::Args>(flags: &[&str]) -> Result<T, clap::Error> {
    use clap::Parser as _;
    /// A program whose flags are the command's only.
    #[derive(clap::Parser)]
    struct Alone<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    Alone::<T>::try_parse_from(std::iter::once("x").chain(flags.iter().copied())).map(|c| c.args)
}
