//! The runnable examples run against the local emulators as a newcomer runs them (the demo is
//! the README's first command): each must end successfully, so they cannot rot unnoticed.

use std::process::Command;

use integration_tests::Endpoints;

/// Runs an example binary; its stdout, or the test fails with its output.
fn run(binary: &str) -> String {
    // Never against whatever AWS account the environment names.
    if let Err(e) = Endpoints::from_vars(|name| std::env::var(name).ok()) {
        panic!("{e}");
    }
    let out = Command::new(binary).output().expect("the example starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{binary}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_demo_produces_and_consumes_every_record() {
    let out = run(env!("CARGO_BIN_EXE_demo"));
    assert!(
        out.contains("consumed 10000 of 10000 user records"),
        "{out}"
    );
}

#[test]
fn the_multi_stream_example_processes_every_record_of_both_streams() {
    let out = run(env!("CARGO_BIN_EXE_multi_stream"));
    assert!(
        out.contains("processed 800 distinct records of 800"),
        "{out}"
    );
}
