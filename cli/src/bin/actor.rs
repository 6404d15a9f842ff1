//! `actor`: steps environments with the learner's newest policy and streams rollouts to it (see `actor --help`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    proxima_cli::process::init();
    proxima_cli::process::report(proxima_cli::actor_cli::run(clap::Parser::parse()))
}
