//! `testbed` will run raftgate clusters across simulated regions (network namespaces, a
//! userspace WAN emulator) so that scaling, failures and rollouts can be measured. It must
//! never send traffic anywhere but loopback and the namespaces it creates itself.
//!
//! Not built yet (issue #7): the binary says so and exits with status 2, so no script
//! mistakes it for a working testbed.

fn main() {
    eprintln!("testbed: not implemented yet; the multi-region testbed is tracked in issue #7");
    std::process::exit(2);
}
