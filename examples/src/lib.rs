//! Runnable examples for servicekit: see the `examples/` folder of this crate, and run
//! one with `cargo run -p servicekit-examples --example 01_quickstart`.
