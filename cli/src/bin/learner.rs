//! `learner`: train locally, serve actors, evaluate and render policies (see `learner --help`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    proxima_cli::process::init();
    proxima_cli::process::report(proxima_cli::learner_cli::run(clap::Parser::parse()))
}
