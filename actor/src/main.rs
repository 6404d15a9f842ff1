//! `actor`: steps environments and streams rollouts to a learner (the network transport lands with the
//! distributed mode; local training runs actors inside `learner train`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    eprintln!("the networked actor is not available yet; use `learner train` for local training");
    std::process::exit(2);
}
