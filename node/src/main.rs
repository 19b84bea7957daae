//! `raftgated`, the raftgate gateway daemon.

fn main() {
    eprintln!("raftgated: the proxy engine is not built yet (issue #3)");
    std::process::exit(2);
}
