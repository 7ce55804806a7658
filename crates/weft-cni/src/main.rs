//! `weft-cni`: the CNI plugin binary. Reads the `CNI_*` environment and the network
//! config on stdin, runs [`weft_cni::plugin::run`], prints the result or error object on
//! stdout and exits 0 or 1. See the library docs for the data flow.

use std::io::Read;
use std::process::ExitCode;

use weft_cni::spec::{CniError, LATEST_VERSION, codes};

/// Largest network config accepted on stdin.
const MAX_STDIN_BYTES: u64 = 16 << 20;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // VERSION needs no config; do not block on a terminal when run by hand.
    if std::env::var("CNI_COMMAND").as_deref() != Ok("VERSION")
        && let Err(e) = std::io::stdin().take(MAX_STDIN_BYTES).read_to_end(&mut stdin)
    {
        let err = CniError::new(codes::IO_FAILURE, "cannot read the network config from stdin")
            .with_details(e.to_string());
        println!("{}", err.to_json(LATEST_VERSION));
        return ExitCode::from(1);
    }
    let outcome = weft_cni::plugin::run(|k| std::env::var(k).ok(), &stdin);
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    ExitCode::from(outcome.exit_code)
}
