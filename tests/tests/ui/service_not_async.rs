use servicekit::service;

#[service]
fn not_async() {}

fn main() {}
