//! Compile-time diagnostics of `#[service]` and `#[servicekit::main]`: one file per
//! diagnostic under `tests/ui/`, with its expected `.stderr` (regenerate with
//! `TRYBUILD=overwrite cargo test -p servicekit-tests --test ui`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
}
